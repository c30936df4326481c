"""The one fairness-metrics package, shaped like fairlearn's MetricFrame.

Layer: below ``envs`` (the hospital simulators use it) and above ``base``; it imports nothing
else of the project. Per-group quantities are plain callables, one disaggregation gives
overall / by_group / difference / ratio, and every disparity is implemented once here.

``fairness.clinical``  the FairGRPO paper's clinical report (arXiv 2510.19893): per-class
                       confusion matrices per group, predictive parity, EOD, sigma/Delta F1,
                       equity-scaled F1, bootstrap CIs.
"""
