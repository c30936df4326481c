"""``ClinicalConfig``: the one typed config of the clinical GRPO pipeline
(``python -m platform.train fairgrpo|grpo|...`` and ``python -m platform.clinical.compare``).

Built by :func:`platform.cli.config_from_args` (defaults < ``--config FILE.yaml`` <
``--set key=value`` < explicit flags < the command's algorithm). Each field is declared once with
:func:`base.config.option`: its doc feeds ``--help`` and the table in docs/clinical-grpo.md,
and its ``track`` decides whether (and as what) it is an MLflow param of the run
(:func:`base.config.tracked_params`; ``estimator`` and ``sampler`` are added as derived
params). Invariants are checked in ``__post_init__`` with errors that name the field.

:data:`ALGORITHMS` is the one table of the clinical algorithms: each is this pipeline with an
advantage estimator (``algorithms.advantages``), a data sampler and a *preset*: values for the
fields left empty (``learner.loss_agg``, ``learner.policy_loss``, ``learner.clip_eps_low/high``,
``rollout.dynamic_sampling``, ``reward.overlong_buffer``), resolved in
``ClinicalConfig.__post_init__`` (anything set explicitly wins; see :data:`PRESET_DEFAULTS`).
``platform.train`` registers its commands from the table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from platform.clinical.backends import spec
from typing import Any, Literal

from algorithms.losses import LOSS_AGG_MODES, POLICY_LOSSES, LossSpec
from base.config import get_path, option
from base.errors import ConfigError, require


@dataclass(frozen=True)
class ClinicalAlgorithm:
    """One ``platform.train`` clinical algorithm: the estimator, sampler and preset it implies."""

    estimator: str
    """An ``algorithms.advantages.ESTIMATORS`` name."""
    help: str
    """One line for ``python -m platform.train --help``."""
    sampler: Literal["shuffle", "balanced"] = "shuffle"
    """Training data order: a permutation per epoch, or ``balanced`` (minority groups
    oversampled per data source, ``algorithms.sampling.balanced_indices``)."""
    preset: dict[str, Any] = field(default_factory=dict)
    """Dotted field -> value (or ``f(cfg)``) for fields of :data:`PRESET_DEFAULTS` left empty."""
    supervised: bool = False
    """True for ``sft``: each step trains on the rows' reference answers (teacher forcing, no
    rollout, reward or advantage; rollout workers only evaluate)."""


def _dapo_overlong(cfg: ClinicalConfig) -> int:
    """DAPO's overlong buffer, L_cache / L_max = 4096 / 20480 of the paper: a fifth of the cap."""
    return max(1, cfg.rollout.max_new_tokens // 5)


#: the largest seed: numpy generators and torch take it, with per-worker offsets, well below 2**32
MAX_SEED = 2**31 - 1

ALGORITHMS: dict[str, ClinicalAlgorithm] = {
    "fairgrpo": ClinicalAlgorithm(
        "fair_grpo", "FairGRPO on a clinical VLM (Ray rollout workers + DeepSpeed learners; "
        "unknown demographics clustered, as the reference)"),
    "fairgrpo-nd": ClinicalAlgorithm(
        "fair_grpo_nd", "FairGRPO without demographic labels: the estimator sees none, every "
        "prompt gets a latent group by k-means per data source (the paper's ND variant)",
        preset={"data.withhold_demographics": True}),
    "grpo": ClinicalAlgorithm("grpo", "GRPO baseline on the clinical pipeline"),
    "dr-grpo": ClinicalAlgorithm(
        "dr_grpo", "Dr. GRPO: estimator dr_grpo (no std), loss seq-mean-token-sum-norm (no length norm)",
        preset={"learner.loss_agg": "seq-mean-token-sum-norm"}),
    "dapo": ClinicalAlgorithm(
        "grpo", "DAPO: grpo + clip-higher 0.2/0.28, token-mean loss, overlong penalty, dynamic sampling",
        preset={"learner.clip_eps_high": 0.28, "learner.loss_agg": "token-mean",
                "rollout.dynamic_sampling": True, "reward.overlong_buffer": _dapo_overlong}),
    "gspo": ClinicalAlgorithm(
        "grpo", "GSPO: grpo + sequence-level ratio and clipping (3e-4/4e-4), seq-mean-token-mean loss",
        preset={"learner.policy_loss": "gspo", "learner.loss_agg": "seq-mean-token-mean",
                "learner.clip_eps_low": 3e-4, "learner.clip_eps_high": 4e-4}),
    "rloo": ClinicalAlgorithm("rloo", "RLOO baseline on the clinical pipeline"),
    "reinforce-pp": ClinicalAlgorithm(
        "reinforce_pp", "REINFORCE++ baseline (estimator reinforce_pp, token whitening)"),
    "grpo-resample": ClinicalAlgorithm(
        "grpo", "GRPO with minority groups oversampled per data source", sampler="balanced"),
    "grpo-dro": ClinicalAlgorithm("group_dro", "GRPO with GroupDRO group weights (Sagawa's q_g / n_g)"),
    "sft": ClinicalAlgorithm(
        "grpo", "supervised warm start: fine-tune the policy on the training split's answers "
        "(same learners, checkpoints, evaluation); the exported model dir is what "
        "`platform.train <rl-algorithm> --model DIR` starts from",
        preset={"learner.policy_loss": "sft"}, supervised=True),
}

PRESET_DEFAULTS: dict[str, Any] = {
    "learner.policy_loss": "ppo",
    "learner.loss_agg": "token-mean",
    "learner.clip_eps_low": lambda cfg: cfg.learner.clip_eps,
    "learner.clip_eps_high": lambda cfg: cfg.learner.clip_eps,
    "rollout.dynamic_sampling": False,
    "reward.overlong_buffer": 0,
    "data.withhold_demographics": False,
}
"""Fields an algorithm may preset: the value when neither the user nor the algorithm sets it."""

EMPTY = ("", None)


def _resolve(cfg: Any, dotted: str, preset: dict[str, Any]) -> None:
    """Fill an empty field from the algorithm's preset, else from PRESET_DEFAULTS."""
    if get_path(cfg, dotted) not in EMPTY:
        return
    value = preset.get(dotted, PRESET_DEFAULTS[dotted])
    section, name = dotted.split(".")
    setattr(getattr(cfg, section), name, value(cfg) if callable(value) else value)


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
    partial_groups: Literal["keep_known", "unknown"] = option(
        "keep_known", "training key of a row with some group attributes missing: keep_known = "
        "the known part, e.g. F|unknown, a group of its own (the FairGRPO reference) | unknown = "
        "wholly unknown; a row missing every attribute is unknown either way (evaluation keys: "
        "always wholly unknown)")
    withhold_demographics: bool | None = option(
        None, "true: the advantage estimator sees no demographics (every training prompt "
        "'unknown', so FairGRPO clusters them all into latent groups); evaluation still reports "
        "per-group metrics from the labels; empty = the algorithm's preset (fairgrpo-nd: true, "
        "others: false)")

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
    dynamic_sampling: bool | None = option(
        None, "DAPO dynamic sampling: drop prompts whose completions all got the same reward, "
        "generate more until data.prompts_per_step are kept (logs filter/by_group/<g>/dropped); "
        "empty = the algorithm's (on for dapo)")
    max_gen_batches: int = option(
        4, "dynamic sampling: most generation rounds per step (verl max_num_gen_batches); when "
        "spent, the step trains on the prompts kept so far (the last round's if none)")

    def __post_init__(self) -> None:
        require(self.max_gen_batches >= 1, "rollout.max_gen_batches", f"{self.max_gen_batches} must be >= 1")
        require(self.num_gpus >= 0, "rollout.num_gpus", f"{self.num_gpus} must be >= 0")
        spec(self.backend).validate(self)  # unknown backend: ConfigError naming rollout.backend
        require(self.num_workers >= 1, "rollout.num_workers", f"{self.num_workers} must be >= 1")
        require(self.group_size >= 2, "rollout.group_size",
                f"{self.group_size} must be >= 2 for group-relative advantages")
        require(self.temperature > 0, "rollout.temperature", f"{self.temperature} must be > 0 for sampling")
        require(0 < self.top_p <= 1, "rollout.top_p", f"{self.top_p} must be in (0, 1]")
        require(self.max_new_tokens >= 1, "rollout.max_new_tokens", f"{self.max_new_tokens} must be >= 1")
        require(self.max_restarts >= 0, "rollout.max_restarts", f"{self.max_restarts} must be >= 0")
        require(self.num_cpus >= 0, "rollout.num_cpus", f"{self.num_cpus} must be >= 0")
        require(self.timeout_s > 0, "rollout.timeout_s", f"{self.timeout_s} must be > 0")
        require(self.eval_temperature >= 0, "rollout.eval_temperature",
                f"{self.eval_temperature} must be >= 0 (0 = greedy)")


@dataclass
class LearnerConfig:
    """DeepSpeed learner actors and the PPO-clip update."""

    num_learners: int = option(2, "DeepSpeed world size (learner actors)")
    zero_stage: Literal[2, 3] = option(2, "DeepSpeed ZeRO stage")
    dist_backend: Literal["auto", "gloo", "nccl"] = option(
        "auto", "torch.distributed backend; auto = nccl on GPU else gloo")
    lr: float = option(1e-3, "AdamW learning rate")
    weight_decay: float = option(0.0, "AdamW weight decay")
    clip_eps: float = option(0.2, "PPO clip range epsilon (both sides unless clip_eps_low/high are set)")
    clip_eps_low: float | None = option(
        None, "ratio clipped below 1 - clip_eps_low; empty = the algorithm's (gspo: 3e-4), else clip_eps")
    clip_eps_high: float | None = option(
        None, "ratio clipped above 1 + clip_eps_high (DAPO clip-higher); empty = the algorithm's "
        "(dapo: 0.28, gspo: 4e-4), else clip_eps")
    dual_clip_c: float = option(0.0, "dual-clip bound c > 1 on the loss of negative advantages "
                                "(verl clip_ratio_c, 3 there); 0 = off")
    policy_loss: str = option(
        "", f"importance ratio: {' | '.join(POLICY_LOSSES)} (ppo = per token, gspo = per sequence); "
        "empty = the algorithm's (gspo for gspo, else ppo)")
    loss_agg: str = option(
        "", f"loss aggregation over the global batch: {' | '.join(LOSS_AGG_MODES)} (verl agg_loss; "
        "sum-norm divides by rollout.max_new_tokens); empty = the algorithm's (dr-grpo: "
        "seq-mean-token-sum-norm, gspo: seq-mean-token-mean, else token-mean)")
    tis_cap: float = option(
        0.0, "truncated importance sampling for the rollout/learner log-prob mismatch: each "
        "token's loss times min(exp(learner - rollout logp), tis_cap) (verl tis_imp_ratio_cap, "
        "TRL vllm_importance_sampling token_truncate); 0 = off, else >= 1 (2 is usual)")
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
        require(0 < self.clip_eps < 1, "learner.clip_eps", f"{self.clip_eps} must be in (0, 1)")
        require(self.clip_eps_low is None or 0 < self.clip_eps_low < 1, "learner.clip_eps_low",
                f"{self.clip_eps_low} must be in (0, 1) (or empty)")
        require(self.clip_eps_high is None or self.clip_eps_high > 0, "learner.clip_eps_high",
                f"{self.clip_eps_high} must be > 0 (or empty)")
        require(self.dual_clip_c == 0 or self.dual_clip_c > 1, "learner.dual_clip_c",
                f"{self.dual_clip_c} must be 0 (off) or > 1")
        require(self.policy_loss in ("", *POLICY_LOSSES), "learner.policy_loss",
                f"{self.policy_loss!r}; allowed: {', '.join(POLICY_LOSSES)} (or empty)")
        require(self.loss_agg in ("", *LOSS_AGG_MODES), "learner.loss_agg",
                f"{self.loss_agg!r}; allowed: {', '.join(LOSS_AGG_MODES)} (or empty)")
        require(self.tis_cap == 0 or self.tis_cap >= 1, "learner.tis_cap",
                f"{self.tis_cap} must be 0 (off) or >= 1")
        require(self.kl_coef >= 0, "learner.kl_coef", f"{self.kl_coef} must be >= 0 (0 disables the reference)")
        require(self.grad_accum >= 1, "learner.grad_accum", f"{self.grad_accum} must be >= 1")
        require(self.max_grad_norm >= 0, "learner.max_grad_norm", f"{self.max_grad_norm} must be >= 0")
        require(self.ppo_epochs >= 1, "learner.ppo_epochs", f"{self.ppo_epochs} must be >= 1")
        require(self.num_cpus >= 0, "learner.num_cpus", f"{self.num_cpus} must be >= 0")
        require(self.timeout_s > 0, "learner.timeout_s", f"{self.timeout_s} must be > 0")
        require(self.weight_decay >= 0, "learner.weight_decay", f"{self.weight_decay} must be >= 0")
        require(not (self.fairgrad and self.zero_stage == 3), "learner.fairgrad",
                "needs learner.zero_stage=2 (per-objective gradients of unpartitioned parameters)")

    def loss_spec(self, norm_len: int) -> LossSpec:
        """The loss this learner config asks for; empty fields take :data:`PRESET_DEFAULTS`
        (a ClinicalConfig has resolved them already). ``norm_len``: the generation cap."""
        return LossSpec(
            policy_loss=self.policy_loss or PRESET_DEFAULTS["learner.policy_loss"],
            agg=self.loss_agg or PRESET_DEFAULTS["learner.loss_agg"],
            clip_low=self.clip_eps if self.clip_eps_low is None else self.clip_eps_low,
            clip_high=self.clip_eps if self.clip_eps_high is None else self.clip_eps_high,
            dual_clip_c=self.dual_clip_c, kl_coef=self.kl_coef, tis_cap=self.tis_cap,
            norm_len=max(1, int(norm_len)))


@dataclass
class AdvantageConfig:
    """The advantage estimator (``algorithms.advantages``)."""

    estimator: str = option("", "algorithms.advantages estimator: grpo, dr_grpo, rloo, reinforce_pp, "
                            "fair_grpo, fair_grpo_nd, group_dro; empty = the one named by the "
                            "algorithm (logged as the derived param estimator)", track=False)
    fairness: str = option("", "fairness weighting on top of the estimator: fairgrpo | fairgrpo_nd | "
                           "group_dro, over grpo, dr_grpo, rloo or reinforce_pp (e.g. dapo + "
                           "fairgrpo); empty = none (the fair_grpo* / group_dro estimators "
                           "already are grpo + one)")
    kwargs: dict[str, Any] = option({}, "keyword arguments for the estimator and the fairness "
                                    "weighting (e.g. negative_rewards, history, elbow, "
                                    "cluster_history; docs/fairgrpo.md)")

    def __post_init__(self) -> None:
        from algorithms.advantages import ESTIMATORS, WEIGHTINGS

        require(self.estimator in ("", *ESTIMATORS.names()), "advantage.estimator",
                f"{self.estimator!r}; allowed: {', '.join(ESTIMATORS.names())} (or empty)")
        require(self.fairness in ("", "none", *WEIGHTINGS.names()), "advantage.fairness",
                f"{self.fairness!r}; allowed: {', '.join(WEIGHTINGS.names())} (or empty)")


@dataclass
class RewardConfig:
    """The reward function (``envs.clinical.rewards``)."""

    name: str = option("accuracy", "envs.clinical.rewards.REWARDS entry (accuracy, format, accuracy+format, ...)")
    kwargs: dict[str, Any] = option({}, "keyword arguments for the reward factory")
    overlong_buffer: int | None = option(
        None, "DAPO overlong penalty: the last overlong_buffer tokens before rollout.max_new_tokens "
        "cost up to overlong_penalty, linearly (verl overlong_buffer.len); 0 = off; empty = the "
        "algorithm's (dapo: max_new_tokens // 5)")
    overlong_penalty: float = option(1.0, "DAPO overlong penalty at the cap (verl overlong_buffer.penalty_factor)")

    def __post_init__(self) -> None:
        require(self.overlong_buffer is None or self.overlong_buffer >= 0, "reward.overlong_buffer",
                f"{self.overlong_buffer} must be >= 0")
        require(self.overlong_penalty >= 0, "reward.overlong_penalty", f"{self.overlong_penalty} must be >= 0")


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
    eval_at_start: bool = option(
        False, "also evaluate before the first step (logged at step 0: the starting policy, "
        "e.g. the sft model an RL run starts from)")
    eval_min_group_size: int = option(
        1, "held-out groups smaller than this are reported as too small and left out of the "
        "gaps (1 = every group counts, the FairGRPO authors' evaluation)")
    report_min_group_size: int = option(
        10, "privacy: the per-group tables, figure and summary (eval/by_group/*.csv, "
        "eval/by_group.png, summary.md) withhold the rates of held-out groups with fewer "
        "patients than this, keeping their size (the logged metrics and gaps use every group)")
    eval_bootstrap: int = option(
        200, "bootstrap resamples of the held-out rows for the CIs of the headline gaps "
        "(fairness/<gap>_ci_low/_high) at each evaluation; 0 = none")
    checkpoint_every: int = option(5, "checkpoint every N steps (and after the last); 0 = only at the end")
    export_dir: str = option(
        "", "where the final policy is written as a Hugging Face model dir (safetensors, "
        "processor, chat template; loads with from_pretrained and vLLM, and as --model of the "
        "next run); empty = <checkpoint root>/model", track=False)
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
        require(0 <= self.seed <= MAX_SEED, "seed", f"got {self.seed}; allowed: 0..{MAX_SEED}")
        require(self.num_cpus >= 0, "num_cpus", f"{self.num_cpus} must be >= 0 (0 = all)")
        require(self.eval_every >= 0, "eval_every", f"{self.eval_every} must be >= 0")
        require(self.checkpoint_every >= 0, "checkpoint_every", f"{self.checkpoint_every} must be >= 0")
        require(self.eval_min_group_size >= 1, "eval_min_group_size",
                f"{self.eval_min_group_size} must be >= 1")
        require(self.report_min_group_size >= 1, "report_min_group_size",
                f"{self.report_min_group_size} must be >= 1")
        require(self.eval_bootstrap == 0 or self.eval_bootstrap >= 10, "eval_bootstrap",
                f"{self.eval_bootstrap} must be 0 (off) or >= 10")
        sup = self.supervised
        n = self.data.prompts_per_step * (1 if sup else self.rollout.group_size)
        require(n >= self.learner.num_learners, "data.prompts_per_step",
                f"{self.data.prompts_per_step}" + ("" if sup else f" x rollout.group_size "
                f"{self.rollout.group_size} = {n} completions") +
                f" must be >= learner.num_learners ({self.learner.num_learners})")
        for dotted in PRESET_DEFAULTS:
            _resolve(self, dotted, ALGORITHMS[self.algorithm].preset)
        require((self.learner.policy_loss == "sft") == sup, "learner.policy_loss",
                f"{self.learner.policy_loss!r} with algorithm {self.algorithm!r}: the sft loss is "
                "the sft command's, and the sft command trains only with it")
        cap = self.rollout.max_new_tokens
        require(self.reward.overlong_buffer <= cap, "reward.overlong_buffer",
                f"{self.reward.overlong_buffer} must be <= rollout.max_new_tokens ({cap})")
        if self.fairness:
            from algorithms.advantages import base_estimators

            bases = base_estimators()
            if self.estimator not in bases:
                raise ConfigError("advantage.fairness", f"{self.fairness!r} over {self.estimator!r}, "
                                  f"which already weights by group; allowed estimators: {', '.join(bases)}")

    @property
    def estimator(self) -> str:
        """The advantage estimator: ``advantage.estimator``, else the algorithm's."""
        return self.advantage.estimator or ALGORITHMS[self.algorithm].estimator

    @property
    def supervised(self) -> bool:
        """True for ``sft`` (teacher-forced answers instead of rollouts)."""
        return ALGORITHMS[self.algorithm].supervised

    @property
    def sampler(self) -> str:
        """The training data order the algorithm implies (``shuffle`` or ``balanced``)."""
        return ALGORITHMS[self.algorithm].sampler

    @property
    def fairness(self) -> str:
        """The fairness weighting over the estimator (``advantage.fairness``; "" = none)."""
        return "" if self.advantage.fairness in EMPTY + ("none",) else self.advantage.fairness

    @property
    def estimator_key(self) -> str:
        """What a checkpoint's estimator state belongs to: ``estimator`` or ``estimator+fairness``."""
        return f"{self.estimator}+{self.fairness}" if self.fairness else self.estimator

    def loss_spec(self) -> LossSpec:
        """The learner's loss (``seq-mean-token-sum-norm`` divides by rollout.max_new_tokens)."""
        return self.learner.loss_spec(self.rollout.max_new_tokens)
