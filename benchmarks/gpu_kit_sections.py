"""The GPU kit's sections: what each one runs and times (without Ray, on the project's plain objects).

A section runs in a process of its own (``python -m benchmarks.gpu_kit --section NAME``, see
:mod:`benchmarks.gpu_kit`) or inline, and records into a :class:`Recorder`, which rewrites the
section's JSON after every step, so a section that is killed at its time limit still leaves what
it measured. Each step is isolated: an exception is recorded (type, message, traceback tail) and
the next step runs; a step whose estimated cost would pass the section's deadline is skipped and
says so.

Sections (``SECTIONS``):

* ``correctness``: the built-in tiny Gemma3 (``platform.clinical.models``) gives the same greedy
  tokens on CPU and on the device (``HFBackend`` on each, float32, TF32 off), and one FairGRPO
  step on the device (the driver's own ``Pipeline`` stages: rollout, reward, FairGRPO advantage,
  ``LearnerImpl`` update, ZeRO-2) moves the weights, which then load into the rollout backend.
* ``rollout``: device-to-device copy bandwidth, then decode tokens/s of ``HFBackend`` on the
  MedGemma-4B-size model per batch, against the HBM-bandwidth bound.
* ``learner-zero2`` / ``learner-zero3``: one ``LearnerImpl.update`` (DeepSpeed, world size 1,
  bf16, ``algorithms.losses.ppo_token_loss``) on the same model: step time and peak memory; then
  the colocated weight sync into an ``HFBackend`` on the same device.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import gpu_kit_model as km

GIB = 1024**3


@dataclass
class Plan:
    """Everything a section needs (the parent writes it as JSON for section processes)."""

    mode: str
    """``gpu`` or ``dry-run``."""
    device: str
    spec: str
    """``medgemma-4b`` or ``tiny`` (:data:`SPECS`)."""
    dtype: str = "bfloat16"
    batches: list[int] = field(default_factory=lambda: [8, 64])
    group: int = 8
    prompt_tokens: int = 256
    new_tokens: int = 256
    repeats: int = 2
    learner_seqs: int = 64
    learner_seq_len: int = 512
    learner_micro: int = 2
    learner_steps: int = 2
    bandwidth_mib: int = 4096
    torch_threads: int | None = None
    seed: int = 0

    @property
    def model_spec(self) -> km.ModelSpec:
        return SPECS[self.spec]

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @staticmethod
    def from_json(text: str) -> Plan:
        return Plan(**json.loads(text))


SPECS = {"medgemma-4b": km.MEDGEMMA_4B, "tiny": km.TINY}


# ------------------------------------------------------------------------------ recording

class Recorder:
    """A section's results, rewritten (atomically) to ``path`` after every change."""

    def __init__(self, name: str, path: str | Path | None, deadline: float):
        self.path = Path(path) if path else None
        self.deadline = deadline
        self.data: dict[str, Any] = {"section": name, "status": "running", "steps": {},
                                     "started": time.time()}
        self.flush()

    def flush(self) -> None:
        if self.path is None:
            return
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, default=_jsonable))
        os.replace(tmp, self.path)

    def left(self) -> float:
        return self.deadline - time.time()

    @contextlib.contextmanager
    def step(self, name: str, estimate_s: float = 0.0) -> Iterator[dict[str, Any] | None]:
        """``with rec.step("x", estimate_s) as out:`` — ``out`` is None when skipped (fill ``out``
        with figures; an exception marks the step failed and is not re-raised)."""
        out: dict[str, Any] = {}
        self.data["steps"][name] = out
        if estimate_s and estimate_s > self.left():
            out.update(status="skipped", reason=f"would overrun: about {estimate_s:.0f} s needed, "
                                                f"{max(self.left(), 0):.0f} s left in this section")
            self.flush()
            print(f"[gpu-kit] {self.data['section']}/{name}: skipped ({out['reason']})", flush=True)
            yield None
            return
        start = time.perf_counter()
        out["status"] = "running"
        self.flush()
        try:
            yield out
            out["status"] = "ok" if out.get("status") == "running" else out["status"]
        except Exception as exc:  # noqa: BLE001 - isolation is the point
            out.update(status="failed", error=f"{type(exc).__name__}: {exc}"[:2000],
                       traceback=traceback.format_exc()[-3000:])
            print(f"[gpu-kit] {self.data['section']}/{name}: FAILED {out['error']}", flush=True)
        finally:
            out["seconds"] = time.perf_counter() - start
            self.flush()
        if out["status"] == "ok":
            print(f"[gpu-kit] {self.data['section']}/{name}: ok ({out['seconds']:.1f} s)", flush=True)

    def finish(self) -> dict[str, Any]:
        statuses = [s.get("status") for s in self.data["steps"].values()]
        self.data["status"] = "failed" if "failed" in statuses else "ok"
        self.data["seconds"] = time.time() - self.data["started"]
        self.flush()
        return self.data


def _jsonable(obj: Any) -> Any:
    try:
        return float(obj)
    except (TypeError, ValueError):
        return str(obj)


# ------------------------------------------------------------------------------ device helpers

def sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def reset_peak(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.reset_peak_memory_stats()


def memory(device: str) -> dict[str, float]:
    """Peak memory since the last :func:`reset_peak`: GPU allocated/reserved on CUDA; on CPU the
    process's peak resident set (not resettable: an upper bound)."""
    if device.startswith("cuda"):
        import torch

        return {"peak_allocated_gib": torch.cuda.max_memory_allocated() / GIB,
                "peak_reserved_gib": torch.cuda.max_memory_reserved() / GIB,
                "allocated_gib": torch.cuda.memory_allocated() / GIB}
    import resource

    return {"peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB}


def device_info(device: str) -> dict[str, Any]:
    import torch
    import transformers

    out: dict[str, Any] = {"torch": torch.__version__, "transformers": transformers.__version__,
                           "device": device}
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(0)
        out.update(gpu=props.name, gpu_memory_gib=props.total_memory / GIB,
                   multiprocessors=props.multi_processor_count, cuda=torch.version.cuda,
                   capability=f"{props.major}.{props.minor}")
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def exact_math(device: str) -> Iterator[None]:
    """TF32 off (matmul and cuDNN) for the CPU-vs-device comparison."""
    import torch

    if not device.startswith("cuda"):
        yield
        return
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def copy_bandwidth(device: str, nbytes: int, iters: int = 20, warmup: int = 3) -> dict[str, float]:
    """Device-to-device copy bandwidth, counting bytes read + written: ``2 x nbytes x iters /
    seconds`` (on CPU: a memcpy through torch, for the dry run)."""
    import torch

    src = torch.ones(nbytes, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    for _ in range(warmup):
        dst.copy_(src)
    sync(device)
    if device.startswith("cuda"):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(iters):
            dst.copy_(src)
        end.record()
        end.synchronize()
        seconds = start.elapsed_time(end) / 1000
    else:
        t = time.perf_counter()
        for _ in range(iters):
            dst.copy_(src)
        seconds = time.perf_counter() - t
    if not torch.equal(dst[:1024], src[:1024]):
        raise RuntimeError("copy bandwidth: destination differs from source")
    del src, dst
    return {"bytes_per_s": 2 * nbytes * iters / seconds, "buffer_bytes": nbytes, "iters": iters,
            "seconds": seconds}


# ------------------------------------------------------------------------------ correctness

def compare_greedy(ref: Any, test: Any) -> dict[str, Any]:
    """Greedy outputs of two backends on one request (``GenerationResult`` each): pass when every
    completion has the same tokens. Reports the first mismatch and the largest |log-prob|
    difference over the positions both share."""
    first = None
    max_lp = 0.0
    compared = 0
    for p, (ra, rb) in enumerate(zip(ref.token_ids, test.token_ids)):
        for g, (a, b) in enumerate(zip(ra, rb)):
            compared += 1
            la, lb = ref.logprobs[p][g], test.logprobs[p][g]
            common = 0
            while common < min(len(a), len(b)) and a[common] == b[common]:
                common += 1
            for t in range(common):
                max_lp = max(max_lp, abs(la[t] - lb[t]))
            if (common < len(a) or common < len(b)) and first is None:
                first = {"prompt": p, "sample": g, "position": common,
                         "ref": a[common] if common < len(a) else None,
                         "test": b[common] if common < len(b) else None}
    same_shape = ([len(r) for r in ref.token_ids] == [len(r) for r in test.token_ids]
                  and len(ref.token_ids) == len(test.token_ids))
    return {"passed": first is None and same_shape and compared > 0, "completions": compared,
            "tokens": sum(len(x) for r in ref.token_ids for x in r), "first_mismatch": first,
            "max_abs_logprob_diff": max_lp}


def greedy_request(n_prompts: int = 4, max_new_tokens: int = 16) -> Any:
    from platform.clinical.generation import GenerationRequest

    msgs = [[{"role": "user", "content": [{"type": "image"},
                                          {"type": "text", "text": f"Case {i}: findings?"}]}]
            for i in range(n_prompts)]
    return GenerationRequest(prompts=msgs, images=[km.image_png(i, 32) for i in range(n_prompts)],
                             n=1, temperature=0.0, max_new_tokens=max_new_tokens, seed=0)


class _LocalPool:
    """The driver's rollout pool, minus Ray: one backend in this process."""

    def __init__(self, backend: Any):
        self.backend, self.restarts = backend, 0

    def generate(self, req: Any) -> Any:
        return self.backend.generate(req)


class _LocalLearners:
    """The driver's learner group, minus Ray: one ``LearnerImpl`` (world size 1)."""

    def __init__(self, impl: Any, grad_accum: int):
        self.impl, self.grad_accum = impl, grad_accum

    def update(self, batch: Any, *spec: Any) -> dict[str, float]:
        """``LearnerGroup.update``'s call, on one rank (``spec``: the loss, when the driver
        passes one)."""
        from platform.clinical.learner import shard_batch

        out = self.impl.update(batch, shard_batch(batch, 1, self.grad_accum)[0], len(batch), *spec)
        return {"learner/loss_sum": out["loss_sum"], "learner/grad_norm": out["grad_norm"],
                "learner/tokens": out["tokens"], "learner/seconds": out["seconds"]}


def learner_cfg(plan: Plan, **over: Any) -> dict[str, Any]:
    """The ``LearnerImpl`` config dict from ``LearnerConfig`` (project defaults + ``over``)."""
    from platform.clinical.config import LearnerConfig

    cfg = LearnerConfig(num_learners=1, num_gpus=1.0 if plan.device.startswith("cuda") else 0.0,
                        **over)
    return {k: getattr(cfg, k) for k in cfg.__dataclass_fields__}


def learner_loss_name() -> str:
    """The token loss ``LearnerImpl.update`` calls (the learner's own default config)."""
    from platform.clinical import learner

    for name in ("ppo_token_loss", "policy_token_loss"):
        if hasattr(learner, name):
            return f"algorithms.losses.{name} (learner defaults: PPO clip)"
    return "the learner's default loss"


def setup_learner(plan: Plan, model_path: str, cfg: dict[str, Any], dtype: str) -> Any:
    from platform.clinical.learner import LearnerImpl, ensure_comm_extension

    if plan.device == "cpu":
        ensure_comm_extension()  # the CPU comm op, built once into the shared cache
    impl = LearnerImpl(0, 1, model_path, cfg, temperature=1.0, seed=plan.seed, dtype=dtype)
    impl.setup("127.0.0.1", free_port())  # (endpoint() would import Ray for the node IP)
    return impl


def weights_equal(backend: Any, impl: Any) -> bool:
    """Every learner parameter equals the rollout backend's parameter of the same name."""
    import torch

    params = dict(backend.model.named_parameters())
    with impl._gathered():
        for name, p in impl.named_weights():
            if not torch.equal(params[name].detach(), p.to(params[name].device, params[name].dtype)):
                return False
    return True


def section_correctness(plan: Plan, rec: Recorder) -> None:
    from platform.clinical import models
    from platform.clinical.hf_backend import HFBackend

    import torch

    with rec.step("greedy_cpu_vs_device", estimate_s=5) as out:
        if out is not None:
            path = str(models.cached_tiny_vlm())
            req = greedy_request()
            ref = HFBackend(path, device="cpu", dtype="float32", torch_threads=plan.torch_threads)
            test = HFBackend(path, device=plan.device, dtype="float32",
                             torch_threads=plan.torch_threads)
            with exact_math(plan.device):
                r_ref, r_test = ref.generate(req), test.generate(req)
            out.update(compare_greedy(r_ref, r_test), reference="cpu", device=plan.device,
                       dtype="float32", model="built-in tiny Gemma3 VLM")
            if not out["passed"]:
                raise AssertionError(f"greedy outputs differ between cpu and {plan.device}: "
                                     f"{out['first_mismatch']}")
            del ref, test

    with rec.step("fairgrpo_step", estimate_s=10) as out:
        if out is not None:
            from platform.clinical.config import ClinicalConfig
            from platform.clinical.driver import Pipeline
            from platform.clinical.hf_backend import SPEC

            from base.config import build

            gpus = 1.0 if plan.device.startswith("cuda") else 0.0
            cfg = build(ClinicalConfig, {
                "algorithm": "fairgrpo", "seed": plan.seed, "data": {"prompts_per_step": 8},
                "rollout": {"group_size": 4, "num_workers": 1, "num_gpus": gpus},
                "learner": {"num_learners": 1, "grad_accum": 2, "zero_stage": 2, "num_gpus": gpus}})
            pipe = Pipeline(cfg)
            n_opts = max(len(o) for o in pipe.train_df["options"])
            kw = SPEC.engine_kwargs(cfg, pipe.model_path, n_opts)
            backend = HFBackend(**kw, torch_threads=plan.torch_threads)
            lc = {k: getattr(cfg.learner, k) for k in cfg.learner.__dataclass_fields__}
            impl = setup_learner(plan, pipe.model_path, lc, cfg.model.dtype)
            pipe.attach(_LocalPool(backend), _LocalLearners(impl, cfg.learner.grad_accum))
            before = impl.full_weights()
            step = pipe.rollout(1)
            step.rewards = pipe.reward(step)
            step.advantages = pipe.advantage(step)
            metrics = pipe.update(step)
            after = impl.full_weights()
            moved = sum(not torch.equal(a, b) for (_, a), (_, b) in zip(before, after))
            finite = all(bool(torch.isfinite(t).all()) for _, t in after)
            backend.load_weights(after)
            out.update(estimator=cfg.estimator, device=plan.device, completions=len(step.rewards),
                       reward_mean=float(step.rewards.mean()),
                       advantage_abs_sum=float(abs(step.advantages.advantages).sum()),
                       loss_sum=metrics["learner/loss_sum"], grad_norm=metrics["learner/grad_norm"],
                       tensors_moved=moved, tensors=len(after), weights_finite=finite,
                       synced_weights_match=weights_equal(backend, impl))
            if not (moved and finite and out["synced_weights_match"]):
                raise AssertionError(f"FairGRPO step on {plan.device}: {moved}/{len(after)} tensors "
                                     f"moved, finite={finite}, sync match={out['synced_weights_match']}")


# ------------------------------------------------------------------------------ rollout

def force_full_length(backend: Any) -> None:
    """Never sample a stop token (so every completion is exactly ``max_new_tokens`` long): the
    backend already suppresses special tokens; its stop tokens join them."""
    backend.suppress_ids = sorted(set(backend.suppress_ids) | set(backend.stop_ids))


def timed_generate(backend: Any, req: Any, device: str) -> tuple[float, Any]:
    sync(device)
    t = time.perf_counter()
    res = backend.generate(req)
    sync(device)
    return time.perf_counter() - t, res


def section_rollout(plan: Plan, rec: Recorder, workdir: Path) -> None:
    """Copy bandwidth, then ``HFBackend`` on the model of ``plan.spec``, one step per batch."""
    from platform.clinical.hf_backend import HFBackend

    spec = plan.model_spec
    rec.data["bound_formula"] = "tokens/s <= batch x bandwidth / bytes read per decode step"
    bw = None
    with rec.step("bandwidth", estimate_s=2) as out:
        if out is not None:
            out.update(copy_bandwidth(plan.device, plan.bandwidth_mib * 2**20))
            bw = out["bytes_per_s"]
    backend = None
    with rec.step("build", estimate_s=5) as out:
        if out is not None:
            path = km.write_model_dir(spec, workdir / "rollout-model")
            with km.random_weights(plan.device, plan.seed):
                backend = HFBackend(str(path), device=plan.device, dtype=plan.dtype,
                                    torch_threads=plan.torch_threads)
            force_full_length(backend)
            n = sum(p.numel() for p in backend.model.parameters())
            out.update(model=spec.name, params=n, dtype=plan.dtype,
                       decode_weight_bytes=km.decode_weight_bytes(backend.model),
                       **{f"after_build_{k}": v for k, v in memory(plan.device).items()})
            rec.data["model"] = {"spec": asdict(spec), "params": n,
                                 "decode_weight_bytes": out["decode_weight_bytes"]}
    if backend is None:
        return
    images = [km.image_png(i, spec.image_size) for i in range(8)]
    estimate = 10.0
    for batch in plan.batches:
        with rec.step(f"batch_{batch}", estimate_s=estimate) as out:
            if out is None:
                continue
            out.update(measure_batch(plan, rec, backend, batch, images, bw))
            # the next (larger) batch, one repeat: assume at most twice this batch's time
            estimate = 2.0 * (out["seconds_full"] + out["seconds_prefill_1_token"]) + 5.0
    del backend


def measure_batch(plan: Plan, rec: Recorder, backend: Any, batch: int, images: list[bytes],
                  bw: float | None) -> dict[str, Any]:
    """Decode figures of one batch: a warm-up call, then ``plan.repeats`` x (1 new token, then
    ``plan.new_tokens``); decode time = the difference of the medians."""
    import statistics
    from platform.clinical.models import tokenizer_of

    spec, tok = plan.model_spec, tokenizer_of(backend.processor)

    def request(new_tokens: int) -> Any:
        return km.chat_request(tok, batch, plan.group, plan.prompt_tokens, new_tokens,
                               spec.image_size, images=images, seed=plan.seed)

    req, short = request(plan.new_tokens), request(1)
    timed_generate(backend, request(2), plan.device)
    reset_peak(plan.device)
    out: dict[str, Any] = {}
    prefill, full, res = [], [], None
    for r in range(plan.repeats):
        if r and rec.left() < 1.5 * (prefill[-1] + full[-1]):
            out["repeats_cut"] = f"{r} of {plan.repeats} repeats (time)"
            break
        prefill.append(timed_generate(backend, short, plan.device)[0])
        seconds, res = timed_generate(backend, req, plan.device)
        full.append(seconds)
    rows = sum(len(g) for g in res.token_ids)
    expected = rows * plan.new_tokens
    if res.num_generated_tokens != expected:
        raise AssertionError(f"generated {res.num_generated_tokens} tokens, expected {rows} x "
                             f"{plan.new_tokens} (forced length failed)")
    prompt_len = max(len(p) for p in res.prompt_token_ids)
    t_full, t_prefill = statistics.median(full), statistics.median(prefill)
    decode_s = t_full - t_prefill
    decode_tps = rows * (plan.new_tokens - 1) / decode_s if decode_s > 0 else float("nan")
    wbytes = km.decode_weight_bytes(backend.model)
    dtype_bytes = 2 if plan.dtype in ("bfloat16", "float16") else 4
    step_bytes = km.mean_decode_bytes(wbytes, spec, rows, prompt_len, plan.new_tokens, dtype_bytes)
    out.update(batch=rows, prompts=len(res.token_ids), group=plan.group, prompt_tokens=prompt_len,
               new_tokens=plan.new_tokens, generated_tokens=res.num_generated_tokens,
               repeats=len(full), seconds_full=t_full, seconds_prefill_1_token=t_prefill,
               seconds_decode=decode_s, end_to_end_tokens_per_s=expected / t_full,
               decode_tokens_per_s=decode_tps, decode_step_ms=1000 * decode_s / (plan.new_tokens - 1),
               bytes_per_decode_step=step_bytes, kv_bytes_per_decode_step=step_bytes - wbytes,
               **memory(plan.device))
    if bw:
        bound = km.bandwidth_bound(rows, bw, step_bytes)
        out.update(bandwidth_bytes_per_s=bw, bound_tokens_per_s=bound, share_of_bound=decode_tps / bound)
    return out


# ------------------------------------------------------------------------------ learner

def section_learner(plan: Plan, rec: Recorder, workdir: Path, stage: int) -> None:
    """``LearnerImpl`` with ZeRO ``stage``: setup, ``plan.learner_steps`` timed updates (the
    first is warm-up), then the colocated weight sync into an ``HFBackend``."""
    path = km.write_model_dir(plan.model_spec, workdir / f"learner-model-z{stage}")
    micro = max(1, min(plan.learner_micro, plan.learner_seqs))
    accum = -(-plan.learner_seqs // micro)
    impl = None
    with rec.step("setup", estimate_s=20) as out:
        if out is not None:
            reset_peak(plan.device)
            cfg = learner_cfg(plan, zero_stage=stage, grad_accum=accum)
            with km.random_weights(plan.device, plan.seed):
                impl = setup_learner(plan, str(path), cfg, plan.dtype)
            out.update(zero_stage=stage, world_size=1, dtype=plan.dtype, grad_accum=accum,
                       micro_batch=micro, lr=cfg["lr"], kl_coef=cfg["kl_coef"],
                       loss=learner_loss_name(), **memory(plan.device))
    if impl is None:
        return
    learner_updates(plan, rec, impl, accum)
    weight_sync(plan, rec, impl, path)


def learner_updates(plan: Plan, rec: Recorder, impl: Any, accum: int) -> None:
    """Timed ``LearnerImpl.update`` calls on one batch of ``plan.learner_seqs`` sequences."""
    from platform.clinical.learner import shard_batch

    import torch

    spec = plan.model_spec
    batch = km.train_batch(impl.processor, plan.learner_seqs, plan.learner_seq_len,
                           spec.image_size, spec.vocab_size, seed=plan.seed)
    shards = shard_batch(batch, 1, accum)[0]
    tokens = sum(len(p) + len(c) for p, c in zip(batch.prompt_ids, batch.completion_ids))
    first = None
    for k in range(plan.learner_steps):
        with rec.step(f"update_{k + 1}", estimate_s=1.3 * first if first else 30.0) as out:
            if out is None:
                break
            reset_peak(plan.device)
            sync(plan.device)
            t = time.perf_counter()
            res = impl.update(batch, shards, len(batch))
            sync(plan.device)
            seconds = time.perf_counter() - t
            first = first or seconds
            out.update(seconds_step=seconds, sequences=len(batch), seq_len=plan.learner_seq_len,
                       prompt_tokens=len(batch.prompt_ids[0]), tokens=tokens,
                       tokens_per_s=tokens / seconds, loss_sum=res["loss_sum"],
                       grad_norm=res["grad_norm"], warm_up=(k == 0), **memory(plan.device))
            if not (torch.isfinite(torch.tensor(out["loss_sum"])) and out["grad_norm"] > 0):
                raise AssertionError(f"update gave loss {out['loss_sum']}, grad norm {out['grad_norm']}")


def weight_sync(plan: Plan, rec: Recorder, impl: Any, path: Path) -> None:
    """Colocated sync into an ``HFBackend`` on the same device, two ways: through host memory
    (``full_weights``, the object-store path minus Ray) and device to device (the learner's own
    tensors inside the ZeRO-3 gather); each must leave the backend equal to the learner."""
    from platform.clinical.hf_backend import HFBackend

    import torch

    with rec.step("weight_sync", estimate_s=20) as out:
        if out is None:
            return
        with km.random_weights(plan.device, plan.seed + 1):
            backend = HFBackend(str(path), device=plan.device, dtype=plan.dtype,
                                torch_threads=plan.torch_threads)
        nbytes = sum(p.numel() * p.element_size() for p in backend.model.parameters())
        sync(plan.device)
        t0 = time.perf_counter()
        named = impl.full_weights()  # gathered on the learner, copied to host memory
        t1 = time.perf_counter()
        backend.load_weights(named)
        sync(plan.device)
        t2 = time.perf_counter()
        del named
        match_host = weights_equal(backend, impl)
        with torch.no_grad():  # scramble, so the second path must copy every tensor
            for p in backend.model.parameters():
                p.zero_()
        sync(plan.device)
        t3 = time.perf_counter()
        with impl._gathered():
            backend.load_weights(impl.named_weights())
        sync(plan.device)
        t4 = time.perf_counter()
        out.update(bytes=nbytes, via_host_seconds=t2 - t0, via_host_gather_seconds=t1 - t0,
                   via_host_load_seconds=t2 - t1, via_host_gb_per_s=nbytes / (t2 - t0) / 1e9,
                   on_device_seconds=t4 - t3, on_device_gb_per_s=nbytes / (t4 - t3) / 1e9,
                   via_host_weights_match=match_host,
                   on_device_weights_match=weights_equal(backend, impl), **memory(plan.device))
        if not (out["via_host_weights_match"] and out["on_device_weights_match"]):
            raise AssertionError("rollout weights differ from the learner's after the sync")


SECTIONS: dict[str, Callable[..., None]] = {
    "correctness": lambda plan, rec, workdir: section_correctness(plan, rec),
    "rollout": section_rollout,
    "learner-zero2": lambda plan, rec, workdir: section_learner(plan, rec, workdir, 2),
    "learner-zero3": lambda plan, rec, workdir: section_learner(plan, rec, workdir, 3),
}


def run_section(name: str, plan: Plan, out_path: str | Path | None, deadline: float) -> dict[str, Any]:
    """Run one section here, recording into ``out_path``; returns the section's record."""
    rec = Recorder(name, out_path, deadline)
    try:
        rec.data["env"] = device_info(plan.device)
        if plan.device.startswith("cuda"):
            import torch

            if not torch.cuda.is_available():
                raise RuntimeError("no CUDA device visible (use --dry-run on a CPU machine)")
        with tempfile.TemporaryDirectory(prefix=f"gpu-kit-{name}-") as tmp:
            SECTIONS[name](plan, rec, Path(tmp))
    except Exception as exc:  # noqa: BLE001
        rec.data["steps"]["section"] = {"status": "failed", "error": f"{type(exc).__name__}: {exc}",
                                        "traceback": traceback.format_exc()[-3000:]}
    finally:
        _release(plan.device)
    return rec.finish()


def _release(device: str) -> None:
    import gc

    gc.collect()
    if device.startswith("cuda"):
        import torch

        with contextlib.suppress(RuntimeError):  # a broken CUDA context: the process ends anyway
            torch.cuda.empty_cache()
