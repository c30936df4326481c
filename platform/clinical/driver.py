"""The clinical GRPO driver: one loop of named, timed stages.

    rollout -> reward -> advantage -> update -> sync -> evaluate (-> checkpoint)

:class:`Pipeline` owns the pieces (data, reward function, advantage estimator + state, rollout
pool, learner group) and has one method per stage; :func:`train` is the loop. The estimator is
chosen by name (``fairgrpo`` -> ``fair_grpo``, ...; ``grpo-resample`` also swaps the data order
for ``algorithms.sampling.balanced_indices``), so every clinical algorithm is this one driver.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from platform.clinical.config import ClinicalConfig
from typing import Any

import numpy as np

from base.errors import UsageError
from base.registry import RegistryError

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
STAGES = ("rollout", "reward", "advantage", "update", "sync", "evaluate", "checkpoint")
INVALID = "(invalid)"  # evaluation label for an unparseable answer


@dataclass
class DataCursor:
    """Position in the training data: epoch + cursor into that epoch's order.

    The order of epoch e is a pure function of ``(seed, e)`` (a permutation, or balanced
    oversampling per data source for ``grpo-resample``), so ``(epoch, cursor)`` restores it.
    """

    n: int
    seed: int
    sampler: str = "shuffle"
    data_source: list[str] = field(default_factory=list)
    group: list[str] = field(default_factory=list)
    epoch: int = 0
    cursor: int = 0
    _cache: tuple[int, np.ndarray] | None = field(default=None, repr=False)

    def order(self, epoch: int) -> np.ndarray:
        if self._cache is None or self._cache[0] != epoch:
            rng = np.random.default_rng([self.seed, epoch, 17])
            if self.sampler == "balanced":
                from algorithms.sampling import balanced_indices

                order = np.asarray(balanced_indices(self.data_source, self.group, rng))
            else:
                order = rng.permutation(self.n)
            self._cache = (epoch, order)
        return self._cache[1]

    def next(self, k: int) -> list[int]:
        """The next ``k`` row indices (crossing into the next epoch when one ends)."""
        out: list[int] = []
        while len(out) < k:
            order = self.order(self.epoch)
            take = order[self.cursor: self.cursor + k - len(out)]
            out.extend(int(i) for i in take)
            self.cursor += len(take)
            if self.cursor >= len(order):
                self.epoch, self.cursor = self.epoch + 1, 0
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "cursor": self.cursor, "seed": self.seed, "sampler": self.sampler}

    def load_state_dict(self, d: dict[str, Any]) -> None:
        if d["seed"] != self.seed or d["sampler"] != self.sampler:
            raise UsageError(f"--resume: checkpoint has seed {d['seed']}/sampler {d['sampler']}, "
                             f"config has {self.seed}/{self.sampler}")
        self.epoch, self.cursor, self._cache = int(d["epoch"]), int(d["cursor"]), None


@contextlib.contextmanager
def timed(times: dict[str, float], stage: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        times[f"time/{stage}"] = times.get(f"time/{stage}", 0.0) + time.perf_counter() - start


def weight_sync_method(cfg: ClinicalConfig) -> str:
    """How weights reach the rollout workers after each update (``rollout.weight_sync``).

    ``object_store`` (HF workers always; vLLM via ``reload_weights``), ``broadcast-nccl``
    (vLLM engines on GPUs, learner rank 0 on another GPU) or ``broadcast-gloo`` (vLLM on CPU,
    the same protocol over gloo). ``auto``: NCCL broadcast when vLLM engines and learners have
    GPUs of their own (``placement: dedicated``), else the object store (colocated: NCCL
    cannot put two ranks on one GPU). Impossible choices raise a ConfigError naming the field.
    """
    from base.errors import require

    r, lc = cfg.rollout, cfg.learner
    mode = r.weight_sync
    colocated = cfg.placement == "colocated"
    if mode == "auto":
        gpu_engines = r.backend == "vllm" and r.num_gpus > 0
        mode = "broadcast" if gpu_engines and lc.num_gpus > 0 and not colocated else "object_store"
    if mode == "object_store":
        return mode
    require(r.backend == "vllm", "rollout.weight_sync",
            f"'broadcast' needs rollout.backend=vllm (got {r.backend!r}); allowed with "
            f"{r.backend}: auto, object_store")
    if r.num_gpus > 0:
        require(lc.num_gpus > 0, "rollout.weight_sync",
                "'broadcast' with GPU engines is an NCCL broadcast from learner rank 0, which "
                "needs learner.num_gpus > 0; or set rollout.weight_sync=object_store")
        require(not colocated, "rollout.weight_sync",
                "'broadcast' with placement=colocated would put two NCCL ranks on one GPU, which "
                "NCCL refuses; use auto or object_store with colocated, or placement=dedicated")
        return "broadcast-nccl"
    return "broadcast-gloo"


def row_image(row: dict) -> bytes | None:
    """Encoded image bytes of a dataset row (file paths are read and re-encoded as PNG)."""
    data = row.get("image")
    if isinstance(data, (bytes, bytearray)) and data:
        return bytes(data)
    if not row.get("image_path"):
        return None
    from platform.clinical.learner import image_bytes

    from envs.clinical.dataset import load_image

    return image_bytes(load_image(row))


def rollout_device(cfg: ClinicalConfig) -> str:
    """Where rollout engines run: "cuda" when each worker asks for GPUs, else "cpu"."""
    return "cuda" if cfg.rollout.num_gpus > 0 else "cpu"


def vllm_kwargs(cfg: ClinicalConfig) -> dict[str, Any]:
    """``VLLMBackend`` keyword arguments from ``rollout.vllm`` (+ seed, device, dtype)."""
    v = cfg.rollout.vllm
    return {"tensor_parallel_size": v.tensor_parallel_size,
            "gpu_memory_utilization": v.gpu_memory_utilization, "max_model_len": v.max_model_len,
            "dtype": v.dtype or cfg.model.dtype, "enforce_eager": v.enforce_eager,
            "max_num_seqs": v.max_num_seqs, "enable_prefix_caching": v.enable_prefix_caching,
            "cpu_kvcache_gb": v.cpu_kvcache_gb, "seed": cfg.seed, "device": rollout_device(cfg)}


def preflight_backend(cfg: ClinicalConfig, model_path: str) -> None:
    """Refuse an unknown backend, or vLLM when it is missing / cannot run the model (no Ray)."""
    from platform.clinical.rollout import ROLLOUT_BACKENDS

    backend = cfg.rollout.backend
    if backend not in ROLLOUT_BACKENDS:
        raise UsageError(f"rollout.backend: {backend!r}; allowed: {', '.join(ROLLOUT_BACKENDS.names())}")
    if backend == "vllm":
        from platform.clinical import vllm_backend

        vllm_backend.preflight(model_path, rollout_device(cfg))


def requested_gpus(cfg: ClinicalConfig) -> tuple[float, float]:
    """GPUs asked for by ``(rollout workers, learners)``; a vLLM engine takes TP x rollout.num_gpus."""
    r, lc = cfg.rollout, cfg.learner
    tp = r.vllm.tensor_parallel_size if r.backend == "vllm" else 1
    return r.num_workers * r.num_gpus * tp, lc.num_learners * lc.num_gpus


def check_gpu_capacity(cfg: ClinicalConfig, cluster: dict[str, float]) -> None:
    """UsageError if the actors would ask for more GPUs than ``cluster`` (``ray.cluster_resources()``).

    Checked before any actor is created, so a too-large request never waits on (or holds) a GPU.
    """
    rollout, learners = requested_gpus(cfg)
    have = float(cluster.get("GPU", 0.0))
    if rollout + learners <= have + 1e-9:
        return
    r, lc = cfg.rollout, cfg.learner
    tp = f" x rollout.vllm.tensor_parallel_size {r.vllm.tensor_parallel_size}" if r.backend == "vllm" else ""
    hint = ("set rollout.num_gpus=0 and learner.num_gpus=0 to run on CPU" if have == 0 else
            "lower those fields or add GPU worker nodes (clusters/gpu.yaml)")
    raise UsageError(
        f"rollout.num_gpus / learner.num_gpus: asked for {rollout + learners:g} GPUs (rollout: "
        f"rollout.num_workers {r.num_workers} x rollout.num_gpus {r.num_gpus:g}{tp} = {rollout:g}; "
        f"learners: learner.num_learners {lc.num_learners} x learner.num_gpus {lc.num_gpus:g} = "
        f"{learners:g}) but the cluster has {have:g}; {hint}")


def placement_config(cfg: ClinicalConfig):
    """The :class:`~platform.clinical.placement.PlacementConfig` for ``cfg``; None on CPU.

    No GPUs asked for (``rollout.num_gpus == learner.num_gpus == 0``) -> None: actors are
    scheduled as before, no placement group. Otherwise one bundle per engine (x tensor-parallel
    size) and one per learner, ``dedicated`` (disjoint GPUs) or ``colocated`` (engine i and
    learner i share GPU i) per ``cfg.placement``. GPU counts a layout cannot give raise a
    ConfigError naming the field (pure; no Ray).
    """
    from platform.clinical.placement import PlacementConfig

    from base.errors import require

    r, lc = cfg.rollout, cfg.learner
    if r.num_gpus == 0 and lc.num_gpus == 0:
        return None
    tp = r.vllm.tensor_parallel_size if r.backend == "vllm" else 1
    if cfg.placement == "colocated":
        for name, value in (("rollout.num_gpus", r.num_gpus), ("learner.num_gpus", lc.num_gpus)):
            require(value == 0.5, name, f"{value:g} with placement=colocated; engine i and learner i "
                    "share one GPU, so set rollout.num_gpus=0.5 and learner.num_gpus=0.5 "
                    "(or placement=dedicated for whole GPUs)")
        require(r.num_workers == lc.num_learners, "rollout.num_workers",
                f"{r.num_workers} with placement=colocated must equal learner.num_learners "
                f"({lc.num_learners}): engines and learners pair up on one GPU each")
        require(tp == 1, "rollout.vllm.tensor_parallel_size",
                f"{tp} with placement=colocated must be 1 (one shared GPU per pair)")
    else:
        require(r.num_gpus in (0, 1), "rollout.num_gpus",
                f"{r.num_gpus:g} with placement=dedicated; each rollout engine gets whole GPUs "
                "(1 per tensor-parallel rank): use 0 or 1, or placement=colocated with 0.5")
        require(float(lc.num_gpus).is_integer(), "learner.num_gpus",
                f"{lc.num_gpus:g} with placement=dedicated; each learner gets whole GPUs: use an "
                "integer, or placement=colocated with 0.5")
    return PlacementConfig(
        num_engines=r.num_workers, tensor_parallel_size=tp, num_learners=lc.num_learners,
        gpus_per_learner=int(lc.num_gpus) if cfg.placement == "dedicated" else 1,
        colocate=cfg.placement == "colocated", use_gpus=True, engine_gpus=r.num_gpus > 0,
        cpus_per_bundle=max(r.num_cpus, lc.num_cpus),
        ready_timeout_s=min(r.timeout_s, lc.timeout_s))


@dataclass
class ActorPlacement:
    """A reserved placement (or None on CPU) and the Ray options of each actor."""

    placement: Any
    rollout_options: list[dict[str, Any]] | None
    learner_options: list[dict[str, Any]] | None

    def remove(self) -> None:
        if self.placement is not None:
            self.placement.remove()
            self.placement = None


def placement_for(cfg: ClinicalConfig, name: str = "equirl-clinical") -> ActorPlacement:
    """Reserve the placement group ``cfg`` asks for (:func:`placement.reserve`: capacity check,
    then a wait bounded by the rollout/learner timeouts) and the options the driver creates
    rollout worker ``i`` / learner rank ``j`` with. On CPU: nothing reserved, options None."""
    from platform.clinical import placement

    pcfg = placement_config(cfg)
    if pcfg is None:
        return ActorPlacement(None, None, None)
    p = placement.reserve(pcfg, name=name)
    return ActorPlacement(p, [p.engine_options(i) for i in range(pcfg.num_engines)],
                          [p.learner_options(j) for j in range(pcfg.num_learners)])


class Pipeline:
    """Everything a step needs; one method per stage (each a thin call into its owner)."""

    def __init__(self, cfg: ClinicalConfig):
        from platform.clinical import models

        from algorithms.advantages import get_estimator
        from envs.clinical import dataset, synth
        from envs.clinical.rewards import REWARDS

        self.cfg = cfg
        self.model_path = str(models.resolve_model_path(cfg.model.path))
        preflight_backend(cfg, self.model_path)  # vllm missing / unsupported head size: before Ray
        self.sync_method = weight_sync_method(cfg)
        data_path = cfg.data.path or str(synth.default_dataset_path())
        self.train_df = dataset.load_dataset(data_path, "train")
        self.eval_df = dataset.load_dataset(data_path, cfg.data.eval_split)
        attrs = cfg.data.group_attributes
        self.train_groups = dataset.group_keys(self.train_df, attrs).tolist()
        self.eval_groups = dataset.group_keys(self.eval_df, attrs).tolist()
        try:
            self.reward_fn = REWARDS.get(cfg.reward.name)(**cfg.reward.kwargs)
            self.estimator = get_estimator(cfg.estimator, **cfg.advantage.kwargs)
        except RegistryError as exc:
            raise UsageError(f"{'reward.name' if 'reward' in str(exc) else 'advantage.estimator'}: {exc}") from None
        except TypeError as exc:
            raise UsageError(f"reward.kwargs: {exc}") from None
        self.est_state = self.estimator.init_state()
        self.cursor = DataCursor(len(self.train_df), cfg.seed, cfg.sampler,
                                 self.train_df["data_source"].astype(str).tolist(), self.train_groups)
        k = cfg.data.eval_prompts or len(self.eval_df)
        rng = np.random.default_rng(12345)  # same held-out prompts for every seed and algorithm
        self.eval_idx = sorted(rng.choice(len(self.eval_df), size=min(k, len(self.eval_df)), replace=False))
        self.pool = self.learners = self.placement = None
        self.weights_version = 0

    # -- Ray actors -------------------------------------------------------------------------
    def start(self) -> None:
        from platform.clinical.learner import LearnerGroup, ensure_comm_extension
        from platform.clinical.rollout import RolloutPool

        import ray

        r, lc = self.cfg.rollout, self.cfg.learner
        check_gpu_capacity(self.cfg, ray.cluster_resources())  # before any actor holds a GPU
        placement_config(self.cfg)  # layout errors (fractional GPUs, ...) before anything is reserved
        ensure_comm_extension()
        backend_kwargs: dict[str, Any] = {"model_path": self.model_path}
        if r.backend == "hf":
            answer_only = (not self.cfg.model.path) if r.answer_only is None else r.answer_only
            n_opts = max(len(o) for o in self.train_df["options"])
            backend_kwargs.update(dtype=self.cfg.model.dtype, device=rollout_device(self.cfg),
                                  answer_letters=LETTERS[:n_opts] if answer_only else "")
        elif r.backend == "vllm":
            backend_kwargs.update(vllm_kwargs(self.cfg))
        self.placement = placement_for(self.cfg)  # None-options on CPU: plain per-actor resources
        self.pool = RolloutPool(r.backend, backend_kwargs, r.num_workers, r.num_cpus, r.num_gpus,
                                r.max_restarts, r.timeout_s,
                                actor_options=self.placement.rollout_options).start(wait=False)
        self.learners = LearnerGroup(self.model_path, lc, r.temperature, self.cfg.seed,
                                     self.cfg.model.dtype,
                                     actor_options=self.placement.learner_options)
        self.pool.wait_ready()
        self.pool.weights_source = self.learners.full_weights  # a restarted engine reloads these

    def attach(self, pool, learners) -> None:
        """Use actors started elsewhere (benchmarks, comparisons); the caller resets their weights."""
        self.pool, self.learners = pool, learners

    def stop(self) -> None:
        for part in (self.pool, self.learners):
            if part is not None:
                part.shutdown()
        if self.placement is not None:
            self.placement.remove()  # after the actors in it are gone

    # -- stages -----------------------------------------------------------------------------
    def request(self, df, idx: list[int], n: int, temperature: float, seed: int):
        from platform.clinical.rollout import GenerationRequest

        from envs.clinical.prompts import build_messages

        rows = [df.iloc[i].to_dict() for i in idx]
        return rows, GenerationRequest(
            prompts=[build_messages(r) for r in rows], images=[row_image(r) for r in rows], n=n,
            temperature=temperature, top_p=self.cfg.rollout.top_p if temperature > 0 else 1.0,
            max_new_tokens=self.cfg.rollout.max_new_tokens, seed=seed)

    def rollout(self, step: int):
        idx = self.cursor.next(self.cfg.data.prompts_per_step)
        rows, req = self.request(self.train_df, idx, self.cfg.rollout.group_size,
                                 self.cfg.rollout.temperature, seed=self.cfg.seed * 100_003 + step)
        return idx, rows, self.pool.generate(req)

    def reward(self, rows: list[dict], result) -> np.ndarray:
        """Rewards ``(P*G,)`` in prompt-major order."""
        completions = [t for texts in result.texts for t in texts]
        samples = [row for row, texts in zip(rows, result.texts) for _ in texts]
        return np.asarray(self.reward_fn(completions, samples), dtype=np.float64)

    def advantage(self, idx: list[int], rows: list[dict], result, rewards: np.ndarray):
        from algorithms.advantages import PromptMeta

        prompt_index = np.repeat(np.arange(len(rows)), [len(t) for t in result.texts])
        meta = PromptMeta(
            data_source=[str(r["data_source"]) for r in rows],
            group=[self.train_groups[i] for i in idx],
            prompt_id=[str(r["id"]) for r in rows],
            true_group=[r.get("true_group") for r in rows] if "true_group" in self.train_df else None)
        return self.estimator(rewards, prompt_index, meta, self.est_state), prompt_index

    def update(self, idx: list[int], rows: list[dict], result, advantages: np.ndarray, prompt_index):
        from platform.clinical.learner import TrainBatch

        names = sorted(set(self.train_groups))
        images = [row_image(r) for r in rows]
        batch = TrainBatch(
            prompt_ids=[result.prompt_token_ids[p] for p in prompt_index],
            completion_ids=[ids for per in result.token_ids for ids in per],
            advantages=[float(a) for a in advantages],
            images=[images[p] for p in prompt_index],
            groups=[names.index(self.train_groups[idx[p]]) for p in prompt_index])
        return self.learners.update(batch)

    def sync(self, step: int) -> dict[str, float]:
        """Learner -> rollout workers (:func:`weight_sync_method`); returns ``weight_sync/*``."""
        if self.sync_method.startswith("broadcast-"):
            result = self.pool.broadcast_weights(self.learners, step,
                                                 self.sync_method.removeprefix("broadcast-"))
        else:
            result = self.pool.load_weights(self.learners.full_weights(), version=step)
        return result.metrics()

    def evaluate(self, step: int) -> dict[str, float]:
        """Greedy answers on the held-out prompts -> per-group clinical fairness metrics."""
        import pandas as pd

        from fairness.clinical import clinical_fairness_report
        from envs.clinical.rewards import parse_choice

        rows, req = self.request(self.eval_df, self.eval_idx, 1, self.cfg.rollout.eval_temperature,
                                 seed=self.cfg.seed * 100_003 + step)
        result = self.pool.generate(req)
        y_true, y_pred = [], []
        for row, texts in zip(rows, result.texts):
            opts = [str(o) for o in row["options"]]
            k = parse_choice(texts[0], opts)
            y_true.append(str(row["answer"]))
            y_pred.append(opts[k] if k is not None else INVALID)
        groups = [self.eval_groups[i] for i in self.eval_idx]
        known = [g != "unknown" for g in groups]
        out = {"eval/accuracy": float(np.mean([t == p for t, p in zip(y_true, y_pred)])),
               "eval/invalid_rate": float(np.mean([p == INVALID for p in y_pred]))}
        if sum(known) >= 2:
            attr = "&".join(self.cfg.data.group_attributes)
            labels = sorted({str(o) for r in rows for o in r["options"]} | {INVALID})
            yt, yp = np.array(y_true)[known], np.array(y_pred)[known]
            sens = pd.DataFrame({attr: np.array(groups, dtype=object)[known]})
            kw = dict(labels=labels, min_group_size=self.cfg.eval_min_group_size, average="macro")
            # the paper's definition: per data source, then averaged over sources
            out.update(clinical_fairness_report(
                yt, yp, sens, dataset=np.array([str(r["data_source"]) for r in rows])[known], **kw).metrics())
            # pooled over sources: defined even when per-source groups are too small
            pooled = clinical_fairness_report(yt, yp, sens, **kw).metrics()
            out.update({f"fairness/pooled/{k.split('/', 1)[1]}": v for k, v in pooled.items()
                        if k.startswith("fairness/") and "/by_group/" not in k and f"/{attr}/" not in k})
        return out

    # -- state ------------------------------------------------------------------------------
    def state_dict(self, step: int, run_id: str) -> dict[str, Any]:
        return {"step": step, "run_id": run_id, "data": self.cursor.state_dict(),
                "estimator": self.est_state.state_dict(), "estimator_name": self.cfg.estimator,
                "algorithm": self.cfg.algorithm}

    def load_state_dict(self, d: dict[str, Any]) -> None:
        if d["estimator_name"] != self.cfg.estimator:
            raise UsageError(f"--resume: checkpoint used estimator {d['estimator_name']!r}, "
                             f"config says {self.cfg.estimator!r}")
        self.cursor.load_state_dict(d["data"])
        self.est_state.load_state_dict(d["estimator"])


DEDUPE_KEY = "time/step"  # logged at every step: the last step MLflow already holds


def train(pipe: Pipeline, start_step: int, run_id: str, ckpt_root: str,
          logged_through: int | None = None) -> dict[str, float]:
    """The loop: ``cfg.iterations`` steps after ``start_step``; returns the last step's metrics.

    Steps ``<= logged_through`` (a resume that replays steps logged after the last checkpoint;
    the replay is bit-exact) run but are not logged again, so MLflow has one row per step.
    """
    from platform import tracking
    from platform.clinical import checkpoint

    cfg, metrics = pipe.cfg, {}
    for step in range(start_step + 1, cfg.iterations + 1):
        times: dict[str, float] = {}
        t0 = time.perf_counter()
        with timed(times, "rollout"):
            idx, rows, result = pipe.rollout(step)
        with timed(times, "reward"):
            rewards = pipe.reward(rows, result)
        with timed(times, "advantage"):
            adv, prompt_index = pipe.advantage(idx, rows, result, rewards)
        with timed(times, "update"):
            learner_metrics = pipe.update(idx, rows, result, adv.advantages, prompt_index)
        with timed(times, "sync"):
            sync_metrics = pipe.sync(step)
        eval_metrics: dict[str, float] = {}
        if step == cfg.iterations or (cfg.eval_every and step % cfg.eval_every == 0):
            with timed(times, "evaluate"):
                eval_metrics = pipe.evaluate(step)
        if step == cfg.iterations or (cfg.checkpoint_every and step % cfg.checkpoint_every == 0):
            with timed(times, "checkpoint"):
                checkpoint.save(ckpt_root, step, pipe.learners, pipe.state_dict(step, run_id))
        times["time/step"] = time.perf_counter() - t0
        metrics = {
            "reward/mean": float(rewards.mean()), "reward/std": float(rewards.std()),
            **group_rewards(rewards, [pipe.train_groups[idx[p]] for p in prompt_index]),
            **times, "throughput/tokens_per_s": result.num_generated_tokens / max(times["time/rollout"], 1e-9),
            "throughput/steps_per_s": 1.0 / times["time/step"],
            "rollout/restarts": float(pipe.pool.restarts), "data/epoch": float(pipe.cursor.epoch),
            **{f"advantage/{k}": v for k, v in adv.diagnostics.items()}, **learner_metrics, **eval_metrics,
            **(sync_metrics or {}),
        }
        if logged_through is None or step > logged_through:
            tracking.log_metrics(metrics, step=step)
    return metrics


def group_rewards(rewards: np.ndarray, groups: list[str]) -> dict[str, float]:
    """Mean training reward per group: ``reward/by_group/<group>``."""
    keys = np.asarray(groups, dtype=object)
    return {f"reward/by_group/{g}": float(rewards[keys == g].mean()) for g in sorted(set(groups))}
