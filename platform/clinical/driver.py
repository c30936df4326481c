"""The clinical GRPO driver: one loop of named, timed stages.

    rollout -> reward -> (filter) -> advantage -> update -> sync -> evaluate (-> checkpoint)

:class:`Pipeline` owns the pieces (data, reward function, advantage estimator + state, rollout
pool, learner group) and has one method per stage; :func:`train` is the loop. One :class:`Step`
carries a training step's data from stage to stage. The estimator (with an optional fairness
weighting, ``advantage.fairness``), sampler and preset come from the algorithm
(``config.ALGORITHMS``: ``fairgrpo`` -> ``fair_grpo``, ``grpo-resample`` -> ``grpo`` with
``algorithms.sampling.balanced_indices``, ``dapo`` -> ``grpo`` + dynamic sampling + overlong
penalty + clip-higher), so every clinical algorithm is this one driver. ``filter`` runs with
``rollout.dynamic_sampling`` (DAPO): prompts whose completions all scored the same are dropped
and more are generated (``algorithms.sampling.dynamic_filter``; ``filter/*`` metrics).

Where actors run (:mod:`.placement`), which rollout backend (:mod:`.backends`) and how weights
travel (:func:`.weight_sync.sync_method`) are decided elsewhere; this module only asks.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from platform.clinical.config import ClinicalConfig
from platform.clinical.generation import GenerationResult
from typing import Any

import numpy as np

from algorithms.advantages import AdvantageResult
from base.errors import ConfigError, UsageError
from base.registry import RegistryError

STAGES = ("rollout", "reward", "filter", "advantage", "update", "sync", "evaluate", "checkpoint")
SFT_STAGES = ("data", "update", "sync", "evaluate", "checkpoint")  # sft: teacher-forced answers
ROUND_SEED = 1_000_003  # seed offset of each extra dynamic-sampling round


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
    from platform import faults

    faults.check(f"clinical.{stage}")  # crash tests (EQUIRL_FAULT); a no-op otherwise
    start = time.perf_counter()
    try:
        yield
    finally:
        times[f"time/{stage}"] = times.get(f"time/{stage}", 0.0) + time.perf_counter() - start


def row_image(row: dict) -> bytes | None:
    """Encoded image bytes of a dataset row (file paths are read and re-encoded as PNG)."""
    data = row.get("image")
    if isinstance(data, (bytes, bytearray)) and data:
        return bytes(data)
    if not row.get("image_path"):
        return None
    from platform.clinical.generation import image_bytes

    from envs.clinical.dataset import load_image

    return image_bytes(load_image(row))


def training_groups(df, attributes: list[str], partial: str = "keep_known") -> list[str]:
    """Training group key per row. ``partial="keep_known"`` (the FairGRPO reference, whose key
    is "M,UNK" when the age is missing): the known attributes stay, the missing ones read
    "unknown" ("F|unknown", a group of its own); a row missing every attribute is "unknown".
    ``"unknown"``: any missing attribute makes the whole key unknown (``group_keys``)."""
    from envs.clinical.dataset import UNKNOWN, group_keys

    if partial == "unknown":
        return group_keys(df, attributes).tolist()
    parts = [group_keys(df, [a]).tolist() for a in attributes]
    return [UNKNOWN if all(v == UNKNOWN for v in vals) else "|".join(vals) for vals in zip(*parts)]


@dataclass
class Step:
    """One training step, filled in stage by stage (the one container passed between stages).

    Shapes: P prompts (``indices``, ``rows``, ``groups``), N = P x G completions in
    prompt-major order (``rewards``, ``advantages.advantages``, :attr:`prompt_index`).
    """

    number: int
    indices: list[int]
    """Rows of the training split."""
    rows: list[dict]
    """Those rows as dicts (prompt, options, answer, data_source, demographics)."""
    groups: list[str]
    """Intersectional group key per prompt (``data.group_attributes``)."""
    result: GenerationResult
    """The rollout: G completions per prompt, their tokens and sampling log-probs."""
    rewards: np.ndarray | None = None
    """(N,) float64 rewards (after any shaping, e.g. DAPO's overlong penalty)."""
    scores: np.ndarray | None = None
    """(N,) the reward function's values before shaping (what dynamic sampling filters on)."""
    correct: np.ndarray | None = None
    """(N,) bool: the parsed answer is right (dynamic sampling's all-correct / all-wrong)."""
    advantages: AdvantageResult | None = None
    """(N,) advantages + the estimator's diagnostics."""
    metrics: dict[str, float] = field(default_factory=dict)
    """Metrics the update / sync / evaluate stages report (``learner/*``, ``weight_sync/*``, ...)."""

    @property
    def prompt_index(self) -> np.ndarray:
        """(N,) the prompt of each completion."""
        return np.repeat(np.arange(len(self.rows)), [len(t) for t in self.result.texts])

    @property
    def completion_groups(self) -> list[str]:
        """(N,) the group of each completion."""
        return [self.groups[p] for p in self.prompt_index]

    @property
    def lengths(self) -> np.ndarray:
        """(N,) completion lengths in tokens."""
        return np.array([len(t) for per in self.result.token_ids for t in per], dtype=np.float64)

    def take(self, prompts: list[int]) -> Step:
        """The step restricted to ``prompts`` (indices into ``rows``), rewards included."""
        r = self.result
        tokens = sum(len(t) for p in prompts for t in r.token_ids[p])
        result = GenerationResult([r.texts[p] for p in prompts], [r.token_ids[p] for p in prompts],
                                  [r.logprobs[p] for p in prompts],
                                  [r.prompt_token_ids[p] for p in prompts], tokens, r.seconds)
        ends = np.cumsum([len(t) for t in r.texts])
        comp = np.concatenate([np.arange(ends[p] - len(r.texts[p]), ends[p]) for p in prompts]
                              or [np.zeros(0, dtype=np.int64)]).astype(np.int64)

        def pick(a):
            return None if a is None else a[comp]

        return Step(self.number, [self.indices[p] for p in prompts], [self.rows[p] for p in prompts],
                    [self.groups[p] for p in prompts], result, pick(self.rewards), pick(self.scores),
                    pick(self.correct), metrics=dict(self.metrics))

    @staticmethod
    def concat(a: Step, b: Step) -> Step:
        """Prompts of ``a`` then ``b`` (same step number); ``a``'s metrics."""
        def cat(x, y):
            return None if x is None or y is None else np.concatenate([x, y])

        return Step(a.number, a.indices + b.indices, a.rows + b.rows, a.groups + b.groups,
                    GenerationResult.concat([a.result, b.result]), cat(a.rewards, b.rewards),
                    cat(a.scores, b.scores), cat(a.correct, b.correct), metrics=dict(a.metrics))


class Pipeline:
    """Everything a step needs; one method per stage (each a thin call into its owner)."""

    def __init__(self, cfg: ClinicalConfig):
        from platform.clinical import backends, models
        from platform.clinical.weight_sync import sync_method

        from algorithms.advantages import make_estimator
        from envs.clinical import dataset, synth
        from envs.clinical.rewards import REWARDS, make_accuracy

        self.cfg = cfg
        self.model_path = str(models.resolve_model_path(cfg.model.path))
        backends.preflight(cfg, self.model_path)  # e.g. vllm missing / unsupported head size: before Ray
        self.sync_method = sync_method(cfg)
        data_path = cfg.data.path or str(synth.default_dataset_path())
        self.train_df = dataset.load_dataset(data_path, "train")
        self.eval_df = dataset.load_dataset(data_path, cfg.data.eval_split)
        attrs = cfg.data.group_attributes
        self.train_groups = training_groups(self.train_df, attrs, cfg.data.partial_groups)
        self.eval_groups = dataset.group_keys(self.eval_df, attrs).tolist()
        try:
            self.reward_fn = REWARDS.get(cfg.reward.name)(**cfg.reward.kwargs)
        except RegistryError as exc:
            raise UsageError(f"reward.name: {exc}") from None
        except TypeError as exc:
            raise UsageError(f"reward.kwargs: {exc}") from None
        self.accuracy_fn = make_accuracy()  # dynamic sampling's all-correct / all-wrong
        try:
            self.estimator = make_estimator(cfg.estimator, cfg.fairness or None, **cfg.advantage.kwargs)
        except RegistryError as exc:
            raise UsageError(f"advantage.estimator: {exc}") from None
        except ConfigError as exc:
            name = "advantage.estimator" if exc.field == "estimator" else f"advantage.kwargs.{exc.field}"
            raise ConfigError(name, str(exc).split(": ", 1)[-1]) from None
        self.est_state = self.estimator.init_state()
        self.cursor = DataCursor(len(self.train_df), cfg.seed, cfg.sampler,
                                 self.train_df["data_source"].astype(str).tolist(), self.train_groups)
        k = cfg.data.eval_prompts or len(self.eval_df)
        rng = np.random.default_rng(12345)  # same held-out prompts for every seed and algorithm
        self.eval_idx = sorted(rng.choice(len(self.eval_df), size=min(k, len(self.eval_df)), replace=False))
        self.pool = self.learners = self.placement = None
        self._processor = self._stop = None  # sft: the driver tokenises the reference answers
        self.answer_letters = ""  # the rollout backend's letter-only decoding (set in start())

    # -- Ray actors -------------------------------------------------------------------------
    def start(self) -> None:
        """Check GPUs and layout, reserve the placement, start rollout workers and learners."""
        from platform.clinical import placement
        from platform.clinical.backends import spec
        from platform.clinical.learner import LearnerGroup, ensure_comm_extension
        from platform.clinical.rollout import RolloutPool

        import ray

        r, lc = self.cfg.rollout, self.cfg.learner
        placement.check_gpu_capacity(self.cfg, ray.cluster_resources())  # before any actor holds a GPU
        placement.placement_config(self.cfg)  # layout errors (fractional GPUs, ...) before reserving
        ensure_comm_extension()
        backend = spec(r.backend)
        n_options = max(len(o) for o in self.train_df["options"])
        engine_kwargs = backend.engine_kwargs(self.cfg, self.model_path, n_options)
        self.answer_letters = engine_kwargs.get("answer_letters", "")
        self.placement = placement.placement_for(self.cfg)  # None-options on CPU: plain resources
        self.pool = RolloutPool(r.backend, engine_kwargs,
                                r.num_workers, r.num_cpus, r.num_gpus, r.max_restarts, r.timeout_s,
                                tensor_parallel_size=backend.tensor_parallel(r),
                                actor_options=self.placement.rollout_options).start(wait=False)
        # sft scores its targets at temperature 1 (plain cross-entropy)
        temperature = 1.0 if self.cfg.supervised else r.temperature
        self.learners = LearnerGroup(self.model_path, lc, temperature, self.cfg.seed,
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
        """``(rows, GenerationRequest)`` for rows ``idx`` of ``df``, ``n`` completions each."""
        from platform.clinical.generation import GenerationRequest

        from envs.clinical.prompts import build_messages

        rows = [df.iloc[i].to_dict() for i in idx]
        return rows, GenerationRequest(
            prompts=[build_messages(r) for r in rows], images=[row_image(r) for r in rows], n=n,
            temperature=temperature, top_p=self.cfg.rollout.top_p if temperature > 0 else 1.0,
            max_new_tokens=self.cfg.rollout.max_new_tokens, seed=seed)

    def rollout(self, number: int, round_: int = 0) -> Step:
        """The next ``data.prompts_per_step`` prompts, G sampled completions each (``round_`` > 0:
        an extra dynamic-sampling round of the same step, with its own seed)."""
        idx = self.cursor.next(self.cfg.data.prompts_per_step)
        seed = self.cfg.seed * 100_003 + number + round_ * ROUND_SEED
        rows, req = self.request(self.train_df, idx, self.cfg.rollout.group_size,
                                 self.cfg.rollout.temperature, seed=seed)
        return Step(number, idx, rows, [self.train_groups[i] for i in idx], self.pool.generate(req))

    def teacher(self, number: int) -> Step:
        """``sft``: the next ``data.prompts_per_step`` rows with their reference answers as the
        completions (teacher forcing): the answer exactly as the rollout backend would emit it
        (the option letter when it decodes letters only, else ``<answer>X</answer>``), then the
        stop token."""
        from platform.clinical.generation import GenerationResult, prompt_token_ids

        from envs.clinical.prompts import answer_letter

        if self._processor is None:
            from platform.clinical import models

            self._processor = models.load_processor(self.model_path)
            self._stop = models.stop_token_ids(models.tokenizer_of(self._processor))[-1]
        tok = getattr(self._processor, "tokenizer", self._processor)
        idx = self.cursor.next(self.cfg.data.prompts_per_step)
        rows, req = self.request(self.train_df, idx, 1, 0.0, seed=0)
        texts, ids, prompts = [], [], []
        for row, messages, image in zip(rows, req.prompts, req.images):
            letter = answer_letter(row)
            text = letter if self.answer_letters else f"<answer>{letter}</answer>"
            texts.append([text])
            ids.append([tok.encode(text, add_special_tokens=False) + [self._stop]])
            prompts.append(prompt_token_ids(self._processor, messages, image))
        n_tokens = sum(len(c[0]) for c in ids)
        result = GenerationResult(texts, ids, [[[]] for _ in ids], prompts, n_tokens, 0.0)
        return Step(number, idx, rows, [self.train_groups[i] for i in idx], result)

    def reward(self, step: Step) -> np.ndarray:
        """Rewards ``(N,)`` in prompt-major order; also sets ``step.scores`` (before shaping)
        and ``step.correct``. ``reward.overlong_buffer`` > 0 adds DAPO's overlong penalty
        (``reward/overlong_penalty`` mean, ``reward/overlong_fraction``)."""
        from algorithms.advantages import overlong_penalty

        completions = [t for texts in step.result.texts for t in texts]
        samples = [row for row, texts in zip(step.rows, step.result.texts) for _ in texts]
        step.scores = np.asarray(self.reward_fn(completions, samples), dtype=np.float64)
        step.correct = self.accuracy_fn(completions, samples) > 0
        rewards = step.scores
        buffer = self.cfg.reward.overlong_buffer
        if buffer:
            pen = overlong_penalty(step.lengths, self.cfg.rollout.max_new_tokens, buffer,
                                   self.cfg.reward.overlong_penalty)
            step.metrics.update({"reward/overlong_penalty": float(pen.mean()) if pen.size else 0.0,
                                 "reward/overlong_fraction": float((pen < 0).mean()) if pen.size else 0.0})
            rewards = rewards + pen
        return rewards

    def dynamic_sampling(self, step: Step) -> Step:
        """DAPO dynamic sampling: keep prompts whose scores differ, generate more rounds
        (``rollout.max_gen_batches`` in all) until ``data.prompts_per_step`` are kept, train on
        the first that many (or on all kept when the rounds run out; on the last round when
        none was kept). Metrics: ``filter/*`` (:meth:`FilterResult.metrics`), ``filter/rounds``."""
        from algorithms.sampling import dynamic_filter

        want = self.cfg.data.prompts_per_step
        report, kept, last, rounds = None, None, step, 0
        while rounds < self.cfg.rollout.max_gen_batches and (kept is None or len(kept.rows) < want):
            if rounds:
                last = self.rollout(step.number, rounds)
                last.rewards = self.reward(last)
            res = dynamic_filter(last.scores, last.prompt_index, last.groups, last.correct)
            report = res if report is None else report.merge(res)
            part = last.take([int(p) for p in np.flatnonzero(res.keep)])
            kept = part if kept is None else Step.concat(kept, part)
            rounds += 1
        out = kept if kept.rows else last
        if len(out.rows) > want:
            out = out.take(list(range(want)))
        out.metrics = {**step.metrics, **last.metrics, **report.metrics(),
                       "filter/rounds": float(rounds), "filter/kept": float(len(kept.rows)),
                       "filter/trained_prompts": float(len(out.rows))}
        return out

    def advantage(self, step: Step) -> AdvantageResult:
        """The estimator on ``step.rewards`` (its running state, e.g. FairGRPO's history, moves on)."""
        from algorithms.advantages import UNKNOWN, PromptMeta

        rows = step.rows
        groups = ([UNKNOWN] * len(rows) if self.cfg.data.withhold_demographics
                  else step.groups)  # the ND variant: labels never reach the estimator
        meta = PromptMeta(
            data_source=[str(r["data_source"]) for r in rows], group=groups,
            prompt_id=[str(r["id"]) for r in rows],
            true_group=[r.get("true_group") for r in rows] if "true_group" in self.train_df else None)
        from algorithms.advantages import AdvantageInputError

        try:
            return self.estimator(step.rewards, step.prompt_index, meta, self.est_state,
                                  lengths=step.lengths)
        except AdvantageInputError as exc:
            raise UsageError(f"{exc} (reward.name={self.cfg.reward.name!r}, advantage.estimator="
                             f"{self.cfg.estimator_key!r})") from None

    def update(self, step: Step) -> dict[str, float]:
        """One learner update on the step's completions; returns ``learner/*`` metrics."""
        from platform.clinical.learner import TrainBatch

        names = sorted(set(self.train_groups))
        images = [row_image(r) for r in step.rows]
        prompt_index = step.prompt_index
        batch = TrainBatch(
            prompt_ids=[step.result.prompt_token_ids[p] for p in prompt_index],
            completion_ids=[ids for per in step.result.token_ids for ids in per],
            advantages=([1.0] * len(prompt_index) if self.cfg.supervised else
                        [float(a) for a in step.advantages.advantages]),
            images=[images[p] for p in prompt_index],
            groups=[names.index(g) for g in step.completion_groups],
            rollout_logprobs=[] if self.cfg.supervised else
            [lp for per in step.result.logprobs for lp in per])
        return self.learners.update(batch, self.cfg.loss_spec())

    def sync(self, number: int) -> dict[str, float]:
        """Learner -> rollout workers (``self.sync_method``); returns ``weight_sync/*``."""
        if self.sync_method.startswith("broadcast-"):
            result = self.pool.broadcast_weights(self.learners, number,
                                                 self.sync_method.removeprefix("broadcast-"))
        else:
            result = self.pool.load_weights(self.learners.full_weights(), version=number)
        return result.metrics()

    def evaluate(self, number: int) -> dict[str, float]:
        """Greedy answers on the held-out prompts, scored by
        :func:`platform.clinical.evaluation.score_answers` (the FairGRPO authors' metric
        definitions per attribute of ``data.group_attributes``, the intersectional view and,
        with ``eval_bootstrap``, CIs of the headline keys)."""
        from platform.clinical.evaluation import score_answers

        rows, req = self.request(self.eval_df, self.eval_idx, 1, self.cfg.rollout.eval_temperature,
                                 seed=self.cfg.seed * 100_003 + number)
        result = self.pool.generate(req)
        return score_answers(rows, [t[0] for t in result.texts], self.cfg.data.group_attributes,
                             self.cfg.eval_min_group_size, self.cfg.eval_bootstrap,
                             seed=self.cfg.seed + number)

    def step_metrics(self, step: Step, times: dict[str, float]) -> dict[str, float]:
        """What one step logs: rewards (overall, per group), stage times, throughput, advantage
        diagnostics and the stages' own metrics."""
        common = {**times, "throughput/steps_per_s": 1.0 / times["time/step"],
                  "rollout/restarts": float(self.pool.restarts), "data/epoch": float(self.cursor.epoch),
                  **step.metrics}
        if self.cfg.supervised:  # tokens trained on per second of update
            return {**common, "throughput/tokens_per_s": step.result.num_generated_tokens
                    / max(times.get("time/update", 0.0), 1e-9)}
        rewards = step.rewards
        return {
            "reward/mean": float(rewards.mean()), "reward/std": float(rewards.std()),
            **group_rewards(rewards, step.completion_groups), **common,
            "throughput/tokens_per_s": step.result.num_generated_tokens / max(times["time/rollout"], 1e-9),
            **{f"advantage/{k}": v for k, v in step.advantages.diagnostics.items()},
        }

    # -- state ------------------------------------------------------------------------------
    def state_dict(self, number: int, run_id: str) -> dict[str, Any]:
        return {"step": number, "run_id": run_id, "data": self.cursor.state_dict(),
                "estimator": self.est_state.state_dict(), "estimator_name": self.cfg.estimator_key,
                "algorithm": self.cfg.algorithm}

    def load_state_dict(self, d: dict[str, Any]) -> None:
        if d["estimator_name"] != self.cfg.estimator_key:
            raise UsageError(f"--resume: checkpoint used estimator {d['estimator_name']!r}, "
                             f"config says {self.cfg.estimator_key!r}")
        self.cursor.load_state_dict(d["data"])
        self.est_state.load_state_dict(d["estimator"])


DEDUPE_KEY = "time/step"  # logged at every step: the last step MLflow already holds


def _due(number: int, every: int, last: int) -> bool:
    """Every ``every`` steps (0: never) and at the last step."""
    return number == last or bool(every and number % every == 0)


def train(pipe: Pipeline, start_step: int, run_id: str, ckpt_root: str,
          logged_through: int | None = None) -> dict[str, float]:
    """The loop: ``cfg.iterations`` steps after ``start_step``; returns the last step's metrics.

    Steps ``<= logged_through`` (a resume that replays steps logged after the last checkpoint;
    the replay is bit-exact) run but are not logged again, so MLflow has one row per step.
    """
    from platform import tracking
    from platform.clinical import artifacts, checkpoint

    cfg, metrics = pipe.cfg, {}
    t_start = time.perf_counter()
    tables, last_eval = [], {}  # per-group tables of this process's evaluations (artifacts)
    if start_step == 0 and cfg.eval_at_start and logged_through is None:
        t0 = time.perf_counter()
        pipe.sync(0)  # the workers hold the start weights already; this makes it certain
        first = last_eval = {**pipe.evaluate(0), "time/evaluate": time.perf_counter() - t0}
        tracking.log_metrics(first, step=0)
        tables.append(artifacts.log_evaluation(first, 0, cfg.report_min_group_size))
        print(progress_line(0, cfg.iterations, first, 0.0, 1), flush=True)
    for number in range(start_step + 1, cfg.iterations + 1):
        times: dict[str, float] = {}
        t0 = time.perf_counter()
        evaluate = _due(number, cfg.eval_every, cfg.iterations)
        if cfg.supervised:
            with timed(times, "data"):
                step = pipe.teacher(number)
        else:
            with timed(times, "rollout"):
                step = pipe.rollout(number)
            with timed(times, "reward"):
                step.rewards = pipe.reward(step)
            if cfg.rollout.dynamic_sampling:
                with timed(times, "filter"):  # (includes any extra rollout + reward rounds)
                    step = pipe.dynamic_sampling(step)
            with timed(times, "advantage"):
                step.advantages = pipe.advantage(step)
        with timed(times, "update"):
            step.metrics.update(pipe.update(step))
        if evaluate or not cfg.supervised:  # sft's rollout workers only evaluate
            with timed(times, "sync"):
                step.metrics.update(pipe.sync(number))
        if evaluate:
            with timed(times, "evaluate"):
                step.metrics.update(pipe.evaluate(number))
        times["time/step"] = time.perf_counter() - t0  # the step's work, its checkpoint aside
        metrics = pipe.step_metrics(step, times)
        new = logged_through is None or number > logged_through
        if new:  # log, then checkpoint: a driver killed in between replays this step from the
            # previous checkpoint on --resume, and the replay is not logged again
            tracking.log_metrics(metrics, step=number)
            if "eval/accuracy" in metrics:
                tables.append(artifacts.log_evaluation(metrics, number, cfg.report_min_group_size))
                last_eval = metrics
        if _due(number, cfg.checkpoint_every, cfg.iterations):
            with timed(times, "checkpoint"):
                checkpoint.save(ckpt_root, number, pipe.learners, pipe.state_dict(number, run_id))
            if new:
                tracking.log_metrics({"time/checkpoint": times["time/checkpoint"]}, step=number)
        print(progress_line(number, cfg.iterations, metrics, time.perf_counter() - t_start,
                            number - start_step), flush=True)
    if tables:
        artifacts.log_summary(f"{cfg.algorithm}, seed {cfg.seed}: step {cfg.iterations}",
                              tables, last_eval, cfg.report_min_group_size)
    return metrics


def _clock(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}"


def progress_line(number: int, total: int, metrics: dict[str, float], elapsed: float,
                  done: int) -> str:
    """One line per step: ``step i/N``, the training signal (reward, or the sft loss),
    held-out accuracy and ΔF1 when this step evaluated, tokens/s, elapsed and remaining time
    (remaining = this process's mean step time x steps left)."""
    parts = [f"step {number}/{total}"]
    if "reward/mean" in metrics:
        parts.append(f"reward {metrics['reward/mean']:.3f}")
    elif "learner/loss" in metrics:
        parts.append(f"loss {metrics['learner/loss']:.4f}")
    if "eval/accuracy" in metrics:
        parts.append(f"eval acc {metrics['eval/accuracy']:.3f}")
        gap = metrics.get("fairness/f1_gap", float("nan"))
        parts.append(f"ΔF1 {gap:.3f}" if np.isfinite(gap) else "ΔF1 n/a")
    parts.append(f"{metrics.get('throughput/tokens_per_s', 0.0):.0f} tok/s")
    left = elapsed / max(done, 1) * (total - number)
    parts.append(f"elapsed {_clock(elapsed)} left {_clock(left)}")
    return " | ".join(parts)


def group_rewards(rewards: np.ndarray, groups: list[str]) -> dict[str, float]:
    """Mean training reward per group: ``reward/by_group/<group>``."""
    keys = np.asarray(groups, dtype=object)
    return {f"reward/by_group/{g}": float(rewards[keys == g].mean()) for g in sorted(set(groups))}
