"""The one fairness-metrics package, shaped like fairlearn's MetricFrame.

Layer: below ``envs`` (the hospital simulators use it) and above ``base``; it imports nothing
else of the project. Every disparity formula is implemented once here; the clinical report,
``platform.fairness``, ``platform.tabular``, ``platform.stats`` and the hospital metrics use it.

``fairness.metrics``    ``METRICS``: the registry of per-group metrics (plain callables:
                        selection_rate, accuracy, f1, tpr, fpr, fdr, auroc, treatment_rate,
                        success_rate, mean_wait). Adding a metric is one entry there.
``fairness.frame``      ``MetricFrame``: overall / by_group and the aggregates of each metric;
                        intersectional groups are multi-column keys (``white&male``).
``fairness.aggregate``  difference (max - min), ratio (min / max), std, group_min/max,
                        max_deviation (from overall), coefficient_of_variation,
                        equity_scaled (overall / (1 + std)), as_score (1 - x).
``fairness.bootstrap``  the one percentile bootstrap (seeded; paired rows or independent
                        samples; vectorised or per resample).
``fairness.scores``     scalar metrics: fairlearn's demographic_parity_difference,
                        equalized_odds_difference, equal_opportunity_difference;
                        predictive_parity_difference; the hospital's dp/eo/wte scores.
``fairness.confusion``  one-vs-rest confusion counts per group (one ``np.bincount``): the
                        vectorised path every classification rate takes.
``fairness.groups``     ``Groups`` (codes + names), label encoding, binary/macro averaging.
``fairness.clinical``   the FairGRPO paper's clinical report (arXiv 2510.19893).

Naming rule: ``*_score`` -- higher is fairer (1 = equal); ``*_difference`` / ``*_gap`` --
lower is fairer (0 = equal).
"""

from fairness.aggregate import (
    as_score,
    coefficient_of_variation,
    difference,
    equity_scaled,
    group_max,
    group_min,
    max_deviation,
    ratio,
    std,
)
from fairness.bootstrap import bootstrap_ci, bootstrap_draws, percentile_interval
from fairness.frame import MetricFrame
from fairness.groups import Groups, group_codes
from fairness.metrics import METRICS
from fairness.scores import (
    demographic_parity_difference,
    dp_score,
    eo_score,
    equal_opportunity_difference,
    equalized_odds_difference,
    fairlearn_differences,
    predictive_parity_difference,
    wte_score,
)

__all__ = [
    "METRICS", "Groups", "MetricFrame", "as_score", "bootstrap_ci", "bootstrap_draws",
    "coefficient_of_variation", "demographic_parity_difference", "difference", "dp_score",
    "eo_score", "equal_opportunity_difference", "equalized_odds_difference", "equity_scaled",
    "fairlearn_differences", "group_codes", "group_max", "group_min", "max_deviation",
    "percentile_interval", "predictive_parity_difference", "ratio", "std", "wte_score",
]
