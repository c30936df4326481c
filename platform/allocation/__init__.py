"""Hospital resource allocation with group-robust PPO and RLlib PPO.

``python -m platform.train group-robust-ppo|ppo`` trains a policy on one of the hospital
simulators in :mod:`envs.hospital` (the presets of its scenario table), logs per-iteration
group and fairness metrics to MLflow, checkpoints, resumes and evaluates on held-out
seeds; ``python -m platform.sweep group-robust-ppo`` runs the same loop in Tune trials.

Modules:
  * :mod:`.config`    -- ``AllocationConfig``, the one typed config (validated on construction);
  * :mod:`.scenarios` -- registry of scenario name -> env creator, enumerated from the
    envs.hospital scenario table (also registered with Tune);
  * :mod:`.loop`      -- the one training loop (train -> metrics -> recover -> evaluate -> emit)
    and ``build_algo_config``, ``build_algo``, ``iteration_metrics``;
  * :mod:`.train`     -- the ``platform.train`` CLI: config, MLflow sink, resume, ``main``;
  * :mod:`.evaluate`  -- greedy evaluation on held-out seeds -> one DataFrame row per episode;
  * :mod:`.rllib`     -- every RLlib-version-sensitive call (ray 2.60): the group-robust PPO
    learner, its connector and config, and the adapter the loop uses.

Algorithm: group-robust PPO, L = (1-λ)·L_PPO + λ·L_robust (EquiRL hospital-allocation
report; worst-group mode after GroupDRO, Sagawa et al. 2020); the math is
:mod:`algorithms.group_robust`, the RLlib learner :mod:`.rllib`. Background and commands:
docs/allocation.md.
"""
