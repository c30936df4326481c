"""The clinical GRPO pipeline on Ray: a (tiny) Gemma3 VLM policy, rollout workers, DeepSpeed learners.

Data flows one way, as timed stages of :mod:`platform.clinical.driver`:
dataset (``envs.clinical``) -> rollout (:mod:`.rollout`, Ray actors over one backend chosen in
:mod:`.backends`: HF ``generate`` in :mod:`.hf_backend`, vLLM in :mod:`.vllm_backend`; shared
types in :mod:`.generation`) -> reward (``envs.clinical.rewards``) -> advantage
(``algorithms.advantages``: FairGRPO, arXiv 2510.19893, and the GRPO / RLOO / REINFORCE++ /
resampling / GroupDRO baselines) -> update (:mod:`.learner`, DeepSpeed ZeRO-2/3 actors,
``algorithms.losses.ppo_token_loss``) -> weight sync (:mod:`.weight_sync`) -> held-out
evaluation (per-group clinical metrics, ``fairness.clinical``) -> MLflow (``platform.tracking``).
Where actors run: :mod:`.placement`. The config and the algorithm table: :mod:`.config`.

Entry point: ``python -m platform.train fairgrpo`` (see :mod:`.train`). Nothing here imports
torch, Ray or DeepSpeed at package import time.
"""
