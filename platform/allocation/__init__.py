"""Hospital resource allocation with group-robust PPO and RLlib PPO.

``python -m platform.train group-robust-ppo|ppo`` trains a policy on one of the hospital
simulators in :mod:`envs.hospital` (urban, rural, pediatric, surge), logs per-iteration
group and fairness metrics to MLflow, checkpoints, resumes and evaluates on held-out
seeds.

Modules:
  * :mod:`.config`    -- ``AllocationConfig``, the one typed config (validated on construction);
  * :mod:`.scenarios` -- registry of scenario name -> env creator (also registered with Tune);
  * :mod:`.train`     -- ``build_algo_config``, ``iteration_metrics``, ``mlflow_params``, ``main``;
  * :mod:`.evaluate`  -- greedy evaluation on held-out seeds -> one DataFrame row per episode.

Algorithm: group-robust PPO, L = (1-λ)·L_PPO + λ·L_robust (EquiRL hospital-allocation
report; worst-group mode after GroupDRO, Sagawa et al. 2020), implemented as an RLlib
learner in :mod:`algorithms.group_robust_ppo`. Background and commands: docs/allocation.md.
"""
