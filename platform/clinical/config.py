"""``ClinicalConfig``: the one typed config of the clinical GRPO pipeline
(``python -m platform.train fairgrpo|grpo|...`` and ``python -m platform.clinical.compare``).

Built by :func:`platform.cli.config_from_args` (defaults < ``--config FILE.yaml`` <
``--set key=value`` < explicit flags). Each field is declared once with
:func:`base.config.option`: its doc feeds ``--help`` and the table in docs/clinical-grpo.md,
and its ``track`` decides whether (and as what) it is an MLflow param of the run
(:func:`base.config.tracked_params`; ``estimator`` and ``sampler`` are added as derived
params). Invariants are checked in ``__post_init__`` with errors that name the field.

:data:`ALGORITHMS` is the one table of the clinical algorithms: each is this pipeline with an
advantage estimator (``algorithms.advantages``) and a data sampler; ``platform.train``
registers its commands from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from platform.clinical.backends import spec
from typing import Any, Literal

from base.config import option
from base.errors import require


@dataclass(frozen=True)
class ClinicalAlgorithm:
    """One ``platform.train`` clinical algorithm: the estimator and sampler it implies."""

    estimator: str
    """An ``algorithms.advantages.ESTIMATORS`` name."""
    help: str
    """One line for ``python -m platform.train --help``."""
    sampler: Literal["shuffle", "balanced"] = "shuffle"
    """Training data order: a permutation per epoch, or ``balanced`` (minority groups
    oversampled per data source, ``algorithms.sampling.balanced_indices``)."""


ALGORITHMS: dict[str, ClinicalAlgorithm] = {
    "fairgrpo": ClinicalAlgorithm(
        "fair_grpo", "FairGRPO on a clinical VLM (Ray rollout workers + DeepSpeed learners)"),
    "fairgrpo-nd": ClinicalAlgorithm(
        "fair_grpo_nd", "FairGRPO with latent groups discovered by k-means (no demographics)"),
    "grpo": ClinicalAlgorithm("grpo", "GRPO baseline on the clinical pipeline"),
    "rloo": ClinicalAlgorithm("rloo", "RLOO baseline on the clinical pipeline"),
    "reinforce-pp": ClinicalAlgorithm("reinforce_pp", "REINFORCE++ baseline on the clinical pipeline"),
    "grpo-resample": ClinicalAlgorithm(
        "grpo", "GRPO with minority groups oversampled per data source", sampler="balanced"),
    "grpo-dro": ClinicalAlgorithm("group_dro", "GRPO with GroupDRO group weights"),
}


def _section_param(section: str, name: str):
    """track: ``rollout.<section>.<name>`` is logged only when the chosen backend reads that
    section (its spec's ``config_section``), e.g. ``rollout.vllm.*`` only for vLLM runs."""
    def track(cfg: ClinicalConfig) -> Any:
        if spec(cfg.rollout.backend).config_section != section:
            return None
        return getattr(getattr(cfg.rollout, section), name)
    return track


@dataclass
class ModelConfig:
    """The policy model."""

    path: str = option("", "local Hugging Face model dir (--model); empty = built-in tiny Gemma3 VLM",
                       track=lambda cfg: cfg.model.path or "tiny-gemma3")
    dtype: Literal["float32", "bfloat16"] = option("float32", "parameter dtype for rollout and learner")


@dataclass
class DataConfig:
    """The dataset (``envs.clinical`` schema) and what a step / an evaluation reads of it."""

    path: str = option("", "Parquet file/folder in the envs.clinical schema (--data); empty = "
                       "built-in synthetic", track=lambda cfg: cfg.data.path or "synthetic")
    group_attributes: list[str] = option(["sex", "age_band"],
                                         "columns forming the intersectional group key")
    prompts_per_step: int = option(
        8, "prompts sampled per training step (each gets rollout.group_size completions)")
    eval_split: Literal["val", "test"] = option("val", "held-out split for periodic evaluation")
    eval_prompts: int = option(0, "held-out prompts per evaluation (0 = the whole split)")

    def __post_init__(self) -> None:
        require(self.prompts_per_step >= 1, "data.prompts_per_step", f"{self.prompts_per_step} must be >= 1")
        require(self.eval_prompts >= 0, "data.eval_prompts", f"{self.eval_prompts} must be >= 0")
        require(len(self.group_attributes) >= 1, "data.group_attributes", "need at least one, e.g. [sex, age_band]")


@dataclass
class VLLMConfig:
    """Engine settings of the vLLM backend (``platform.clinical.vllm_backend.engine_kwargs``)."""

    tensor_parallel_size: int = option(1, "GPUs per vLLM engine (tensor parallelism); 1 on CPU",
                                       track=_section_param("vllm", "tensor_parallel_size"))
    gpu_memory_utilization: float = option(0.85, "share of each engine GPU's memory vLLM may take",
                                           track=_section_param("vllm", "gpu_memory_utilization"))
    max_model_len: int = option(2048, "prompt + completion token cap of the engine",
                                track=_section_param("vllm", "max_model_len"))
    dtype: Literal["", "auto", "float32", "bfloat16", "float16"] = option(
        "", "engine dtype; empty = model.dtype", track=_section_param("vllm", "dtype"))
    enforce_eager: bool = option(True, "no CUDA graphs (faster start, slower decode)",
                                 track=_section_param("vllm", "enforce_eager"))
    max_num_seqs: int = option(256, "sequences batched per engine step",
                               track=_section_param("vllm", "max_num_seqs"))
    enable_prefix_caching: bool = option(
        True, "reuse the KV cache of shared prompt prefixes (G samples)",
        track=_section_param("vllm", "enable_prefix_caching"))
    cpu_kvcache_gb: int = option(1, "KV cache GiB on CPU engines (VLLM_CPU_KVCACHE_SPACE, a whole number)",
                                 track=_section_param("vllm", "cpu_kvcache_gb"))

    def __post_init__(self) -> None:
        require(self.tensor_parallel_size >= 1, "rollout.vllm.tensor_parallel_size",
                f"{self.tensor_parallel_size} must be >= 1")
        require(0 < self.gpu_memory_utilization <= 1, "rollout.vllm.gpu_memory_utilization",
                f"{self.gpu_memory_utilization} must be in (0, 1]")
        require(self.max_model_len >= 16, "rollout.vllm.max_model_len", f"{self.max_model_len} must be >= 16")
        require(self.max_num_seqs >= 1, "rollout.vllm.max_num_seqs", f"{self.max_num_seqs} must be >= 1")
        require(self.cpu_kvcache_gb >= 1, "rollout.vllm.cpu_kvcache_gb",
                f"{self.cpu_kvcache_gb} must be >= 1 (whole GiB: vLLM reads an int)")


@dataclass
class RolloutConfig:
    """Rollout workers (Ray actors over one backend) and sampling."""

    backend: str = option("hf", "rollout backend (platform.clinical.backends.BACKENDS: hf, vllm)")
    num_workers: int = option(2, "rollout worker actors")
    group_size: int = option(4, "G: completions sampled per prompt")
    temperature: float = option(1.0, "sampling temperature (also used for the learner's log-probs)")
    top_p: float = option(1.0, "nucleus sampling mass")
    max_new_tokens: int = option(16, "completion length cap")
    eval_temperature: float = option(0.0, "temperature for held-out evaluation (0 = greedy)")
    answer_only: bool | None = option(None, "hf backend: first token an option letter, then stop; "
                                      "empty = on for the built-in tiny model, off with model.path")
    max_restarts: int = option(2, "Ray restarts of a dead rollout worker before the step fails",
                               track=False)
    num_cpus: float = option(0.25, "CPUs reserved per rollout worker actor", track=False)
    num_gpus: float = option(0.0, "GPUs per rollout worker actor (x tensor-parallel size for vllm)")
    timeout_s: float = option(600.0, "seconds to wait for one generate call", track=False)
    weight_sync: Literal["auto", "object_store", "broadcast"] = option(
        "auto", "learner -> rollout weights after each update: object_store (ray.put, workers "
        "reload), broadcast (backends that support it, i.e. vllm: learner rank 0 broadcasts into "
        "the engines, NCCL on GPUs, gloo on CPU); auto = broadcast when the backend supports it "
        "and engines and learners have GPUs of their own (placement: dedicated), else object_store")
    vllm: VLLMConfig = option(VLLMConfig, "vLLM engine settings (used when backend is vllm)")

    def __post_init__(self) -> None:
        require(self.num_gpus >= 0, "rollout.num_gpus", f"{self.num_gpus} must be >= 0")
        spec(self.backend).validate(self)  # unknown backend: ConfigError naming rollout.backend
        require(self.num_workers >= 1, "rollout.num_workers", f"{self.num_workers} must be >= 1")
        require(self.group_size >= 2, "rollout.group_size",
                f"{self.group_size} must be >= 2 for group-relative advantages")
        require(self.temperature > 0, "rollout.temperature", f"{self.temperature} must be > 0 for sampling")
        require(0 < self.top_p <= 1, "rollout.top_p", f"{self.top_p} must be in (0, 1]")
        require(self.max_new_tokens >= 1, "rollout.max_new_tokens", f"{self.max_new_tokens} must be >= 1")
        require(self.max_restarts >= 0, "rollout.max_restarts", f"{self.max_restarts} must be >= 0")


@dataclass
class LearnerConfig:
    """DeepSpeed learner actors and the PPO-clip update."""

    num_learners: int = option(2, "DeepSpeed world size (learner actors)")
    zero_stage: Literal[2, 3] = option(2, "DeepSpeed ZeRO stage")
    dist_backend: Literal["auto", "gloo", "nccl"] = option(
        "auto", "torch.distributed backend; auto = nccl on GPU else gloo")
    lr: float = option(1e-3, "AdamW learning rate")
    weight_decay: float = option(0.0, "AdamW weight decay")
    clip_eps: float = option(0.2, "PPO clip range epsilon")
    kl_coef: float = option(0.0, "coefficient of the k3 KL to the frozen reference model (0 = no reference)")
    grad_accum: int = option(2, "micro-batches per optimizer step on each learner")
    max_grad_norm: float = option(1.0, "gradient clipping norm (0 = off)")
    ppo_epochs: int = option(1, "passes over each rollout batch (optimizer steps per training step)")
    fairgrad: bool = option(
        False, "FairGrad: project per-group policy-loss gradients (algorithms.fairgrad; ZeRO-2)")
    num_cpus: float = option(0.25, "CPUs reserved per learner actor", track=False)
    num_gpus: float = option(0.0, "GPUs per learner actor")
    timeout_s: float = option(600.0, "seconds to wait for any collective call on the learners",
                              track=False)

    def __post_init__(self) -> None:
        require(self.num_learners >= 1, "learner.num_learners", f"{self.num_learners} must be >= 1")
        require(self.num_gpus >= 0, "learner.num_gpus", f"{self.num_gpus} must be >= 0")
        require(self.lr > 0, "learner.lr", f"{self.lr} must be > 0")
        require(self.clip_eps > 0, "learner.clip_eps", f"{self.clip_eps} must be > 0")
        require(self.kl_coef >= 0, "learner.kl_coef", f"{self.kl_coef} must be >= 0 (0 disables the reference)")
        require(self.grad_accum >= 1, "learner.grad_accum", f"{self.grad_accum} must be >= 1")
        require(self.max_grad_norm >= 0, "learner.max_grad_norm", f"{self.max_grad_norm} must be >= 0")
        require(self.ppo_epochs >= 1, "learner.ppo_epochs", f"{self.ppo_epochs} must be >= 1")
        require(not (self.fairgrad and self.zero_stage == 3), "learner.fairgrad",
                "needs learner.zero_stage=2 (per-objective gradients of unpartitioned parameters)")


@dataclass
class AdvantageConfig:
    """The advantage estimator (``algorithms.advantages``)."""

    estimator: str = option("", "algorithms.advantages estimator; empty = the one named by the "
                            "algorithm (logged as the derived param estimator)", track=False)
    kwargs: dict[str, Any] = option({}, "keyword arguments for the estimator")


@dataclass
class RewardConfig:
    """The reward function (``envs.clinical.rewards``)."""

    name: str = option("accuracy", "envs.clinical.rewards.REWARDS entry (accuracy, format, accuracy+format, ...)")
    kwargs: dict[str, Any] = option({}, "keyword arguments for the reward factory")


def _uses_gpus(cfg: ClinicalConfig) -> bool:
    return bool(cfg.rollout.num_gpus or cfg.learner.num_gpus)


@dataclass
class ClinicalConfig:
    """One clinical GRPO-family training run (one MLflow run)."""

    DERIVED_PARAMS = ("estimator", "sampler")

    algorithm: str = option("fairgrpo", f"algorithm, set by the command: {', '.join(ALGORITHMS)}")
    seed: int = option(0, "seed for data order, sampling and model build")
    iterations: int = option(20, "training steps")
    eval_every: int = option(5, "held-out evaluation every N steps (and after the last); 0 = only at the end")
    eval_min_group_size: int = option(5, "groups with fewer held-out samples are reported as too small")
    checkpoint_every: int = option(5, "checkpoint every N steps (and after the last); 0 = only at the end")
    checkpoint_dir: str = option(
        "", "checkpoint root; empty = <storage root>/checkpoints/clinical/<experiment>/<run_name> "
        "(storage root: EQUIRL_STORAGE or <repo>/ray_results)", track=False)
    run_name: str = option("", "MLflow run name (--run-name); empty = <algorithm>-seed<seed>",
                           track=False)
    num_cpus: int = option(0, "CPUs for a local Ray instance (0 = all)", track=False)
    placement: Literal["dedicated", "colocated"] = option(
        "dedicated", "GPU layout when rollout.num_gpus or learner.num_gpus > 0: dedicated = rollout "
        "engines and learners on disjoint GPUs (whole GPUs: num_gpus 0 or 1 / integer); colocated = "
        "engine i and learner i share one GPU (num_gpus 0.5 each, rollout.num_workers == "
        "learner.num_learners); ignored on CPU (no placement group; not logged)",
        track=lambda cfg: cfg.placement if _uses_gpus(cfg) else None)
    model: ModelConfig = option(ModelConfig, "policy model")
    data: DataConfig = option(DataConfig, "dataset")
    rollout: RolloutConfig = option(RolloutConfig, "rollout workers")
    learner: LearnerConfig = option(LearnerConfig, "DeepSpeed learners")
    advantage: AdvantageConfig = option(AdvantageConfig, "advantage estimator")
    reward: RewardConfig = option(RewardConfig, "reward function")

    def __post_init__(self) -> None:
        require(self.algorithm in ALGORITHMS, "algorithm",
                f"{self.algorithm!r}; allowed: {', '.join(ALGORITHMS)}")
        require(self.iterations >= 1, "iterations", f"{self.iterations} must be >= 1")
        require(self.eval_every >= 0, "eval_every", f"{self.eval_every} must be >= 0")
        require(self.checkpoint_every >= 0, "checkpoint_every", f"{self.checkpoint_every} must be >= 0")
        n = self.data.prompts_per_step * self.rollout.group_size
        require(n >= self.learner.num_learners, "data.prompts_per_step",
                f"{self.data.prompts_per_step} x rollout.group_size {self.rollout.group_size} = {n} "
                f"completions must be >= learner.num_learners ({self.learner.num_learners})")

    @property
    def estimator(self) -> str:
        """The advantage estimator: ``advantage.estimator``, else the algorithm's."""
        return self.advantage.estimator or ALGORITHMS[self.algorithm].estimator

    @property
    def sampler(self) -> str:
        """The training data order the algorithm implies (``shuffle`` or ``balanced``)."""
        return ALGORITHMS[self.algorithm].sampler
