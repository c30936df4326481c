"""The clinical GRPO pipeline on Ray: a (tiny) Gemma3 VLM policy, rollout workers, DeepSpeed learners.

Data flows one way, as timed stages of :mod:`platform.clinical.driver`:
dataset (``envs.clinical``) -> rollout (:mod:`.rollout`, Ray actors over a backend: HF
``generate`` here, vLLM in :mod:`.vllm_backend`) -> reward (``envs.clinical.rewards``) ->
advantage (``algorithms.advantages``: FairGRPO, arXiv 2510.19893, and the GRPO / RLOO /
REINFORCE++ / resampling / GroupDRO baselines) -> update (:mod:`.learner`, DeepSpeed ZeRO-2/3
actors, PPO-clip token loss) -> weight sync -> held-out evaluation (per-group clinical
metrics, ``fairness.clinical``) -> MLflow (``platform.tracking``).

Entry point: ``python -m platform.train fairgrpo`` (see :mod:`.train`). Nothing here imports
torch, Ray or DeepSpeed at package import time.
"""
