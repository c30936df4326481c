"""The math of EquiRL: pure functions and small stateful objects, no Ray, no I/O.

Modules (import them directly; this package imports nothing heavy — no torch, no sklearn):

``algorithms.advantages``      advantage estimators behind one registry (``ESTIMATORS``):
                               ``grpo`` (DeepSeekMath, arXiv 2402.03300), ``rloo`` (Ahmadian et
                               al., arXiv 2402.14740), ``reinforce_pp`` (REINFORCE++, arXiv
                               2501.03262), ``fair_grpo`` / ``fair_grpo_nd`` (FairGRPO, arXiv
                               2510.19893), ``group_dro`` (GroupDRO, Sagawa et al., arXiv 1911.08731).
``algorithms.sampling``        GRPO+resampling baseline: oversample minority groups per data source.
``algorithms.group_robust``    group-robust (vector-reward) PPO: per-group GAE, per-capita group
                               objectives, robust objectives (GroupDRO, generalized Gini, gap)
                               as weights over per-group advantages; its RLlib learner is
                               platform.allocation.rllib.
``algorithms.losses``          PPO-clip token loss with the k3 KL (the clinical learners).
``algorithms.fairgrad``        FairGrad gradient projection (arXiv 2504.14388).
``algorithms.faro``            Faro fair reward models (arXiv 2602.07799).
"""
