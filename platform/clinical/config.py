"""The one typed config of the clinical GRPO pipeline (``python -m platform.train fairgrpo``).

Built with :func:`base.config.build` from ``--config FILE.yaml`` + ``--set key=value``;
each field is documented once, right under it (``metadata["help"]``), and invariants are checked
on construction with messages that say what to change.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from base.errors import require

# algorithm name (platform.train) -> advantage estimator name (algorithms.advantages) + sampler
ALGORITHM_ESTIMATORS: dict[str, str] = {
    "fairgrpo": "fair_grpo",
    "fairgrpo-nd": "fair_grpo_nd",
    "grpo": "grpo",
    "rloo": "rloo",
    "reinforce-pp": "reinforce_pp",
    "grpo-resample": "grpo",
    "grpo-dro": "group_dro",
}
ALGORITHM_SAMPLERS: dict[str, str] = {"grpo-resample": "balanced"}


def _f(default: Any, help: str, **kw: Any) -> Any:
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help}, **kw)
    return field(default=default, metadata={"help": help}, **kw)


@dataclass
class ModelConfig:
    path: str = _f("", "local Hugging Face model dir (--model); empty = built-in tiny Gemma3 VLM")
    dtype: Literal["float32", "bfloat16"] = _f("float32", "parameter dtype for rollout and learner")


@dataclass
class DataConfig:
    path: str = _f("", "Parquet file/folder in the envs.clinical schema (--data); empty = built-in synthetic")
    group_attributes: list[str] = _f(["sex", "age_band"], "columns forming the intersectional group key")
    prompts_per_step: int = _f(8, "prompts sampled per training step (each gets rollout.group_size completions)")
    eval_split: Literal["val", "test"] = _f("val", "held-out split for periodic evaluation")
    eval_prompts: int = _f(0, "held-out prompts per evaluation (0 = the whole split)")

    def __post_init__(self) -> None:
        require(self.prompts_per_step >= 1, "data.prompts_per_step", f"{self.prompts_per_step} must be >= 1")
        require(self.eval_prompts >= 0, "data.eval_prompts", f"{self.eval_prompts} must be >= 0")
        require(len(self.group_attributes) >= 1, "data.group_attributes", "need at least one, e.g. [sex, age_band]")


@dataclass
class VLLMConfig:
    """Engine settings for ``rollout.backend: vllm`` (passed to ``vllm_backend.VLLMBackend``)."""

    tensor_parallel_size: int = _f(1, "GPUs per vLLM engine (tensor parallelism); 1 on CPU")
    gpu_memory_utilization: float = _f(0.85, "share of each engine GPU's memory vLLM may take")
    max_model_len: int = _f(2048, "prompt + completion token cap of the engine")
    dtype: Literal["", "auto", "float32", "bfloat16", "float16"] = _f(
        "", "engine dtype; empty = model.dtype")
    enforce_eager: bool = _f(True, "no CUDA graphs (faster start, slower decode)")
    max_num_seqs: int = _f(256, "sequences batched per engine step")
    enable_prefix_caching: bool = _f(True, "reuse the KV cache of shared prompt prefixes (G samples)")
    cpu_kvcache_gb: int = _f(1, "KV cache GiB on CPU engines (VLLM_CPU_KVCACHE_SPACE, a whole number)")

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
    backend: str = _f("hf", "rollout backend name (platform.clinical.rollout.ROLLOUT_BACKENDS: hf, vllm)")
    num_workers: int = _f(2, "rollout worker actors")
    group_size: int = _f(4, "G: completions sampled per prompt")
    temperature: float = _f(1.0, "sampling temperature (also used for the learner's log-probs)")
    top_p: float = _f(1.0, "nucleus sampling mass")
    max_new_tokens: int = _f(16, "completion length cap")
    eval_temperature: float = _f(0.0, "temperature for held-out evaluation (0 = greedy)")
    answer_only: bool | None = _f(None, "hf backend: first token an option letter, then stop; "
                                  "empty = on for the built-in tiny model, off with model.path")
    max_restarts: int = _f(2, "Ray restarts of a dead rollout worker before the step fails")
    num_cpus: float = _f(0.25, "CPUs reserved per rollout worker actor")
    num_gpus: float = _f(0.0, "GPUs per rollout worker actor")
    timeout_s: float = _f(600.0, "seconds to wait for one generate call")
    weight_sync: Literal["auto", "object_store", "broadcast"] = _f(
        "auto", "learner -> rollout weights after each update: object_store (ray.put, workers "
        "reload), broadcast (vllm only: learner rank 0 broadcasts into the engines, NCCL on GPUs, "
        "gloo on CPU); auto = broadcast for vLLM engines and learners on GPUs of their own "
        "(placement: dedicated), else object_store")
    vllm: VLLMConfig = _f(None, "vLLM engine settings (used when backend is vllm)")

    def __post_init__(self) -> None:
        if self.vllm is None:
            self.vllm = VLLMConfig()
        require(self.num_gpus >= 0, "rollout.num_gpus", f"{self.num_gpus} must be >= 0")
        require(self.backend != "vllm" or self.num_gpus > 0 or self.vllm.tensor_parallel_size == 1,
                "rollout.vllm.tensor_parallel_size",
                f"{self.vllm.tensor_parallel_size} needs GPUs (rollout.num_gpus > 0); use 1 on CPU")
        require(self.num_workers >= 1, "rollout.num_workers", f"{self.num_workers} must be >= 1")
        require(self.group_size >= 2, "rollout.group_size",
                f"{self.group_size} must be >= 2 for group-relative advantages")
        require(self.temperature > 0, "rollout.temperature", f"{self.temperature} must be > 0 for sampling")
        require(0 < self.top_p <= 1, "rollout.top_p", f"{self.top_p} must be in (0, 1]")
        require(self.max_new_tokens >= 1, "rollout.max_new_tokens", f"{self.max_new_tokens} must be >= 1")
        require(self.max_restarts >= 0, "rollout.max_restarts", f"{self.max_restarts} must be >= 0")


@dataclass
class LearnerConfig:
    num_learners: int = _f(2, "DeepSpeed world size (learner actors)")
    zero_stage: Literal[2, 3] = _f(2, "DeepSpeed ZeRO stage")
    dist_backend: Literal["auto", "gloo", "nccl"] = _f("auto", "torch.distributed backend; auto = nccl on GPU else gloo")
    lr: float = _f(1e-3, "AdamW learning rate")
    weight_decay: float = _f(0.0, "AdamW weight decay")
    clip_eps: float = _f(0.2, "PPO clip range epsilon")
    kl_coef: float = _f(0.0, "coefficient of the k3 KL to the frozen reference model (0 = no reference)")
    grad_accum: int = _f(2, "micro-batches per optimizer step on each learner")
    max_grad_norm: float = _f(1.0, "gradient clipping norm (0 = off)")
    ppo_epochs: int = _f(1, "passes over each rollout batch (optimizer steps per training step)")
    fairgrad: bool = _f(False, "FairGrad: project per-group policy-loss gradients (algorithms.fairgrad; ZeRO-2)")
    num_cpus: float = _f(0.25, "CPUs reserved per learner actor")
    num_gpus: float = _f(0.0, "GPUs per learner actor")
    timeout_s: float = _f(600.0, "seconds to wait for any collective call on the learners")

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
    estimator: str = _f("", "algorithms.advantages estimator; empty = the one named by the algorithm")
    kwargs: dict[str, Any] = _f({}, "keyword arguments for the estimator")


@dataclass
class RewardConfig:
    name: str = _f("accuracy", "envs.clinical.rewards.REWARDS entry (accuracy, format, accuracy+format, ...)")
    kwargs: dict[str, Any] = _f({}, "keyword arguments for the reward factory")


@dataclass
class ClinicalConfig:
    algorithm: str = _f("fairgrpo", "algorithm (set from the command line)")
    seed: int = _f(0, "seed for data order, sampling and model build")
    iterations: int = _f(20, "training steps")
    eval_every: int = _f(5, "held-out evaluation every N steps (and after the last); 0 = only at the end")
    eval_min_group_size: int = _f(5, "groups with fewer held-out samples are reported as too small")
    checkpoint_every: int = _f(5, "checkpoint every N steps (and after the last); 0 = only at the end")
    checkpoint_dir: str = _f("", "checkpoint root; empty = <repo>/checkpoints/clinical/<experiment>/<run_name>")
    run_name: str = _f("", "MLflow run name; empty = <algorithm>-seed<seed>")
    num_cpus: int = _f(0, "CPUs for a local Ray instance (0 = all)")
    placement: Literal["dedicated", "colocated"] = _f(
        "dedicated", "GPU layout when rollout.num_gpus or learner.num_gpus > 0: dedicated = rollout "
        "engines and learners on disjoint GPUs (whole GPUs: num_gpus 0 or 1 / integer); colocated = "
        "engine i and learner i share one GPU (num_gpus 0.5 each, rollout.num_workers == "
        "learner.num_learners); ignored on CPU (no placement group)")
    model: ModelConfig = _f(None, "policy model", )
    data: DataConfig = _f(None, "dataset")
    rollout: RolloutConfig = _f(None, "rollout workers")
    learner: LearnerConfig = _f(None, "DeepSpeed learners")
    advantage: AdvantageConfig = _f(None, "advantage estimator")
    reward: RewardConfig = _f(None, "reward function")

    def __post_init__(self) -> None:
        for name, cls in (("model", ModelConfig), ("data", DataConfig), ("rollout", RolloutConfig),
                          ("learner", LearnerConfig), ("advantage", AdvantageConfig),
                          ("reward", RewardConfig)):
            if getattr(self, name) is None:
                setattr(self, name, cls())
        require(self.algorithm in ALGORITHM_ESTIMATORS, "algorithm",
                f"{self.algorithm!r}; allowed: {', '.join(ALGORITHM_ESTIMATORS)}")
        require(self.iterations >= 1, "iterations", f"{self.iterations} must be >= 1")
        require(self.eval_every >= 0, "eval_every", f"{self.eval_every} must be >= 0")
        require(self.checkpoint_every >= 0, "checkpoint_every", f"{self.checkpoint_every} must be >= 0")
        n = self.data.prompts_per_step * self.rollout.group_size
        require(n >= self.learner.num_learners, "data.prompts_per_step",
                f"{self.data.prompts_per_step} x rollout.group_size {self.rollout.group_size} = {n} "
                f"completions must be >= learner.num_learners ({self.learner.num_learners})")

    @property
    def estimator(self) -> str:
        return self.advantage.estimator or ALGORITHM_ESTIMATORS[self.algorithm]

    @property
    def sampler(self) -> str:
        return ALGORITHM_SAMPLERS.get(self.algorithm, "shuffle")

    def tracked_params(self) -> dict[str, Any]:
        """The parameters a person compares across runs (logged to MLflow)."""
        return {
            "algorithm": self.algorithm, "estimator": self.estimator, "sampler": self.sampler,
            "seed": self.seed, "iterations": self.iterations, "model": self.model.path or "tiny-gemma3",
            "data": self.data.path or "synthetic", "prompts_per_step": self.data.prompts_per_step,
            "group_size": self.rollout.group_size, "temperature": self.rollout.temperature,
            "max_new_tokens": self.rollout.max_new_tokens, "rollout_backend": self.rollout.backend,
            "rollout_workers": self.rollout.num_workers, "weight_sync": self.rollout.weight_sync,
            **({"placement": self.placement} if self.rollout.num_gpus or self.learner.num_gpus else {}),
            **({f"vllm.{k}": v for k, v in vars(self.rollout.vllm).items()}
               if self.rollout.backend == "vllm" else {}), "zero_stage": self.learner.zero_stage,
            "num_learners": self.learner.num_learners, "lr": self.learner.lr,
            "clip_eps": self.learner.clip_eps, "kl_coef": self.learner.kl_coef,
            "grad_accum": self.learner.grad_accum, "max_grad_norm": self.learner.max_grad_norm,
            "fairgrad": self.learner.fairgrad, "reward": self.reward.name,
            "group_attributes": ",".join(self.data.group_attributes),
            **{f"advantage.{k}": v for k, v in self.advantage.kwargs.items()},
        }
