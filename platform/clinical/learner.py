"""DeepSpeed ZeRO-2/3 learner actors: PPO-clip / GSPO on token log-probs, optional KL to a
reference, loss aggregation over the global batch, truncated importance sampling.

Each learner is a Ray actor (:class:`LearnerGroup` starts ``num_learners`` of them) that sets
MASTER_ADDR/MASTER_PORT/RANK/WORLD_SIZE/LOCAL_RANK, calls
``deepspeed.init_distributed(dist_backend="gloo")`` (NCCL on GPUs) and wraps the policy with
``deepspeed.initialize``. Every collective (update steps, ZeRO-3 gathers, checkpoints) is sent
to all ranks together and awaited with a timeout (a call on one rank alone would hang).

Loss: ``algorithms.losses.policy_token_loss`` per token (PPO-clip or GSPO, clip-higher,
optional dual clip, TIS, k3 KL to the frozen reference), aggregated over the whole global batch
by ``algorithms.losses.sample_losses`` with the batch's global sequence and token counts
(``learner.loss_agg``; verl ``agg_loss``): each micro-batch contributes its samples' shares, so
the ranks' micro-batches sum to the full-batch loss whatever the sharding. The loss travels
with each update call as an ``algorithms.losses.LossSpec`` (the driver's
``ClinicalConfig.loss_spec()``), so learners started once can serve several algorithms.
With rollout log-probs in the batch, each rank also measures |learner - rollout| log-prob per
token (``rollout/logprob_diff/mean|max``).

log-probs are of ``logits / temperature`` (the sampling distribution). With ``ppo_epochs=1``
the single optimizer step sees the pre-update policy, so ``old_logp = logp.detach()``; with
more epochs old log-probs are computed once, before the first step. Gradient accumulation over
``grad_accum`` micro-batches per rank and clipping to ``max_grad_norm`` are DeepSpeed's.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from platform.clinical.weight_sync import BroadcastLearnerMixin
from platform.cluster import REPO_ROOT
from typing import Any

from algorithms.losses import LossSpec, policy_token_loss, sample_losses

TORCH_EXTENSIONS_DIR = REPO_ROOT / ".cache" / "torch_extensions"


@dataclass
class TrainBatch:
    """One sample per completion (keys named once; the driver builds it, learners shard it)."""

    prompt_ids: list[list[int]]
    completion_ids: list[list[int]]
    advantages: list[float]
    images: list[bytes | None]
    groups: list[int] = field(default_factory=list)
    """Integer group id per completion (FairGrad objectives); empty if unused."""
    rollout_logprobs: list[list[float]] = field(default_factory=list)
    """The rollout engine's sampling log-prob of each completion token (same shape as
    ``completion_ids``); empty if unknown (no mismatch metric, no TIS)."""

    def __len__(self) -> int:
        return len(self.completion_ids)

    def take(self, idx: list[int]) -> TrainBatch:
        return TrainBatch(
            prompt_ids=[self.prompt_ids[i] for i in idx],
            completion_ids=[self.completion_ids[i] for i in idx],
            advantages=[self.advantages[i] for i in idx],
            images=[self.images[i] for i in idx],
            groups=[self.groups[i] for i in idx] if self.groups else [],
            rollout_logprobs=[self.rollout_logprobs[i] for i in idx] if self.rollout_logprobs else [],
        )

    def counts(self) -> tuple[float, float]:
        """(sequences with at least one token, tokens) of the whole batch (aggregation)."""
        lens = [len(c) for c in self.completion_ids]
        return float(sum(n > 0 for n in lens)), float(sum(lens))


def shard_batch(batch: TrainBatch, world: int, accum: int) -> list[list[list[int] | None]]:
    """Indices per rank per micro-batch: ``[rank][micro] -> list[int]`` (round robin).

    Every rank gets exactly ``accum`` micro-batches (collectives need the same call count);
    a micro-batch without samples is ``[]`` (the learner runs it with zero weight).
    """
    out: list[list[list[int]]] = [[[] for _ in range(accum)] for _ in range(world)]
    for i in range(len(batch)):
        out[i % world][(i // world) % accum].append(i)
    return out


class LearnerImpl(BroadcastLearnerMixin):
    """One rank of the DeepSpeed learner group (plain object; the Ray actor wraps it).

    Two phases, so that ranks on several nodes meet at rank 0's address: the constructor
    only records its arguments; :meth:`endpoint` (rank 0) names this node's IP and a free
    port; :meth:`setup` (every rank, concurrently) joins the group and builds the engine.
    """

    def __init__(self, rank: int, world_size: int, model_path: str, cfg: dict[str, Any],
                 temperature: float, seed: int, dtype: str = "float32"):
        self._args = (rank, world_size, model_path, cfg, temperature, seed, dtype)

    def endpoint(self) -> tuple[str, int]:
        """This node's IP and a free port on it (rank 0: the rendezvous of the group)."""
        return self.sync_endpoint()

    def setup(self, master_addr: str, master_port: int) -> int:
        self._setup(master_addr, master_port, *self._args)
        return self.rank

    def _setup(self, master_addr: str, master_port: int, rank: int, world_size: int,
               model_path: str, cfg: dict[str, Any], temperature: float, seed: int,
               dtype: str = "float32") -> None:
        os.environ.update(MASTER_ADDR=master_addr, MASTER_PORT=str(master_port), RANK=str(rank),
                          WORLD_SIZE=str(world_size), LOCAL_RANK="0")
        os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(TORCH_EXTENSIONS_DIR))
        from platform.clinical import models

        import deepspeed
        import torch

        self.rank, self.world, self.cfg, self.temperature = rank, world_size, cfg, temperature
        on_gpu = torch.cuda.is_available() and cfg.get("num_gpus", 0) > 0
        backend = cfg.get("dist_backend", "auto")
        backend = ("nccl" if on_gpu else "gloo") if backend == "auto" else backend
        torch.set_num_threads(1)
        torch.manual_seed(seed)
        deepspeed.init_distributed(dist_backend=backend)
        self.device = torch.device("cuda", 0) if on_gpu else torch.device("cpu")
        ds_config = {
            "train_micro_batch_size_per_gpu": 1,
            "gradient_accumulation_steps": cfg["grad_accum"],
            "gradient_clipping": cfg["max_grad_norm"],
            "zero_optimization": {"stage": cfg["zero_stage"]},
            "zero_allow_untested_optimizer": True,
            "bf16": {"enabled": dtype == "bfloat16"},
            "steps_per_print": 10**9,
            "wall_clock_breakdown": False,
        }
        # ZeRO-3: deepspeed.initialize partitions the already-loaded module (HfDeepSpeedConfig's
        # partition-at-load would need `accelerate`, not a dependency; fine for models that fit).
        model = models.load_model(model_path, dtype)
        model.train()
        self.processor = models.load_processor(model_path)
        self.tokenizer = models.tokenizer_of(self.processor)
        self.image_token_id = getattr(model.config, "image_token_index", None)
        self.is_vlm = hasattr(model.config, "vision_config")
        self.param_names = [n for n, _ in model.named_parameters()]
        optimizer = torch.optim.AdamW(model.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])
        self.engine, self.optimizer, _, _ = deepspeed.initialize(
            model=model, optimizer=optimizer, config=ds_config)
        self.ref = None
        if cfg["kl_coef"] > 0:
            self.ref = models.load_model(model_path, dtype).to(self.device).eval()
            for p in self.ref.parameters():
                p.requires_grad_(False)
        self.fairgrad = None
        if cfg.get("fairgrad"):
            from algorithms.fairgrad import FairGrad  # noqa: F401  (checked at start-up)

            self.fairgrad = True
        self.steps = 0

    # -- tensors ----------------------------------------------------------------------------
    def _rollout_logp(self, batch: TrainBatch, shape: tuple[int, int]):
        """(B, L-1) rollout log-probs aligned with :meth:`_token_logp` (token j of completion
        i is predicted at position len(prompt) + j - 1), or None without them."""
        import torch

        if not batch.rollout_logprobs:
            return None
        out = torch.zeros(shape, dtype=torch.float32)
        for i, (p, lp) in enumerate(zip(batch.prompt_ids, batch.rollout_logprobs)):
            out[i, len(p) - 1: len(p) - 1 + len(lp)] = torch.tensor(lp, dtype=torch.float32)
        return out.to(self.device)

    def _collate(self, batch: TrainBatch):
        """Right-padded ``input_ids, attention_mask, completion mask (B, L)`` + pixel values."""
        from platform.clinical.generation import decode_image

        import torch

        seqs = [p + c for p, c in zip(batch.prompt_ids, batch.completion_ids)]
        L = max(len(s) for s in seqs)
        pad = self.tokenizer.pad_token_id or 0
        ids = torch.full((len(seqs), L), pad, dtype=torch.long)
        attn = torch.zeros((len(seqs), L), dtype=torch.long)
        cmask = torch.zeros((len(seqs), L), dtype=torch.float32)
        for i, (p, c) in enumerate(zip(batch.prompt_ids, batch.completion_ids)):
            ids[i, : len(p) + len(c)] = torch.tensor(p + c)
            attn[i, : len(p) + len(c)] = 1
            cmask[i, len(p): len(p) + len(c)] = 1.0
        inputs = {"input_ids": ids, "attention_mask": attn}
        if self.is_vlm:
            inputs["token_type_ids"] = (ids == self.image_token_id).long()
            imgs = [decode_image(b, i) for i, b in enumerate(batch.images) if b is not None]
            if imgs:
                px = self.processor.image_processor(images=imgs, return_tensors="pt")["pixel_values"]
                inputs["pixel_values"] = px.to(self.engine.module.dtype)
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        return inputs, cmask.to(self.device)

    def _token_logp(self, model, inputs, cmask):
        """Log-probs ``(B, L-1)`` of each next token under ``logits / temperature``; mask ``(B, L-1)``."""
        import torch

        logits = model(**inputs).logits[:, :-1].float() / self.temperature
        target = inputs["input_ids"][:, 1:]
        logp = torch.log_softmax(logits, dim=-1).gather(-1, target.unsqueeze(-1)).squeeze(-1)
        return logp, cmask[:, 1:]

    # -- update -----------------------------------------------------------------------------
    def update(self, batch: TrainBatch, shards: list[list[int]], global_n: int,
               spec: LossSpec | None = None) -> dict[str, float]:
        """One update on this rank's micro-batches (``shards[micro] -> indices into batch``;
        ``batch`` is the whole global batch, ``global_n`` its size).

        ``spec``: the loss (None = this learner's config, the generation cap taken as the
        longest completion). All ranks must call this together with the same ``len(shards)``.
        """
        from platform import faults

        import torch

        faults.check(f"learner{self.rank}.update")  # crash tests (EQUIRL_FAULT); else a no-op
        start = time.perf_counter()
        if spec is None:
            spec = _spec_from_dict(self.cfg, max((len(c) for c in batch.completion_ids), default=1))
        n_seqs, n_tokens = batch.counts()
        scale = self.world * len(shards)  # DeepSpeed averages micro-batches and ranks
        stats = {k: 0.0 for k in ("loss", "clipfrac", "kl", "ratio", "tokens", "logprob_diff",
                                  "logprob_diff_max", "tis_weight", "tis_clipped")}
        old = None
        if self.cfg["ppo_epochs"] > 1:
            with torch.no_grad():
                old = [self._token_logp(self.engine, *self._micro(batch, idx)[:2])[0] for idx in shards]
        grad_norm = float("nan")
        for epoch in range(self.cfg["ppo_epochs"]):
            for m, idx in enumerate(shards):
                inputs, cmask, adv, weight, rollout = self._micro(batch, idx)
                leaves = self._detached_params() if self.fairgrad else None
                logp, mask = self._token_logp(self._functional(leaves) if leaves else self.engine,
                                              inputs, cmask)
                old_logp = old[m] if old is not None else logp.detach()
                ref_logp = None
                if self.ref is not None:
                    with torch.no_grad():
                        ref_logp, _ = self._token_logp(self.ref, inputs, cmask)
                per_tok, st = policy_token_loss(logp, old_logp, adv, mask, spec, ref_logp=ref_logp,
                                                rollout_logp=rollout)
                shares = sample_losses(per_tok, mask, spec.agg, n_seqs, n_tokens, spec.norm_len) * weight
                if self.fairgrad:
                    loss = self._fairgrad_surrogate(shares * scale * len(shares), batch, idx, leaves)
                    stats["fairgrad_conflicts"] = stats.get("fairgrad_conflicts", 0.0) + self._conflicts
                else:
                    loss = (shares * scale).sum()
                self.engine.backward(loss)
                self.engine.step()
                stats["loss"] += float(shares.sum().item())
                if idx:
                    for k in ("clipfrac", "kl", "ratio", "tokens", "tis_weight", "tis_clipped"):
                        stats[k] += st.get(k, 0.0)
                    if epoch == 0 and "logprob_diff" in st:  # the mismatch before any step
                        stats["logprob_diff"] += st["logprob_diff"]
                        stats["logprob_diff_max"] = max(stats["logprob_diff_max"], st["logprob_diff_max"])
            norm = self.engine.get_global_grad_norm()
            grad_norm = float(norm) if norm is not None else grad_norm
        self.steps += 1
        epochs = self.cfg["ppo_epochs"]
        return {"loss_sum": stats["loss"], "clipfrac_sum": stats["clipfrac"], "kl_sum": stats["kl"],
                "ratio_sum": stats["ratio"], "tokens": max(stats["tokens"], 1.0) / epochs,
                "grad_norm": grad_norm, "seconds": time.perf_counter() - start,
                "logprob_diff_sum": stats["logprob_diff"], "logprob_diff_max": stats["logprob_diff_max"],
                "tis_weight_sum": stats["tis_weight"], "tis_clipped": stats["tis_clipped"],
                "has_rollout_logp": float(bool(batch.rollout_logprobs)),
                "fairgrad_conflicts": stats.get("fairgrad_conflicts", 0.0)}

    def _micro(self, batch: TrainBatch, idx: list[int]):
        """Collated micro-batch: ``inputs, cmask (B, L), advantages (B,), weights (B,),
        rollout log-probs (B, L-1) or None``.

        An empty micro-batch runs sample 0 with weight 0 (every rank must call backward).
        """
        import torch

        sub = batch.take(idx if idx else [0])
        inputs, cmask = self._collate(sub)
        adv = torch.tensor(sub.advantages, dtype=torch.float32, device=self.device)
        weight = torch.full((len(sub),), 1.0 if idx else 0.0, device=self.device)
        rollout = self._rollout_logp(sub, (cmask.shape[0], cmask.shape[1] - 1))
        return inputs, cmask, adv, weight, rollout

    def _detached_params(self) -> dict[str, Any]:
        """Leaf copies (shared storage) of the trainable parameters for the FairGrad forward.

        DeepSpeed ZeRO-2 hooks the real parameters' gradient accumulation; per-objective
        ``torch.autograd.grad`` calls on them would fire its reduction hooks several times
        and corrupt its buckets. Gradients are taken w.r.t. these aliases instead.
        """
        return {n: p.detach().requires_grad_(True)
                for n, p in self.engine.module.named_parameters() if p.requires_grad}

    def _functional(self, leaves: dict[str, Any]):
        from torch.func import functional_call

        module = self.engine.module
        return lambda **kw: functional_call(module, leaves, args=(), kwargs=kw)

    def _fairgrad_surrogate(self, per_sample_loss, batch: TrainBatch, idx: list[int],
                            leaves: dict[str, Any] | None = None):
        """A loss whose gradient is FairGrad's projected sum (task + per-group objectives).

        ``per_sample_loss`` (B,): its mean is this micro-batch's task loss, computed through
        ``leaves`` (aliases of the parameters, see ``_detached_params``) when given. The
        per-objective gradients are taken with ``torch.autograd.grad``, projected (PCGrad
        rule, ``algorithms.fairgrad.project_conflicting``) and summed into g; the returned
        ``sum_p <p, g_p>`` over the real parameters has gradient g, so DeepSpeed reduces and
        applies it as usual. ``self._conflicts`` counts the conflicting pairs seen.
        """
        import torch

        from algorithms.fairgrad import fairgrad_losses_from_groups, project_conflicting

        groups = [batch.groups[i] for i in idx] if idx and batch.groups else [0] * len(per_sample_loss)
        losses = fairgrad_losses_from_groups(per_sample_loss, groups)
        named = [(n, p) for n, p in self.engine.module.named_parameters() if p.requires_grad]
        params = [p for _, p in named]
        wrt = [leaves[n] for n, _ in named] if leaves is not None else params
        grads = []
        for i, l_k in enumerate(losses):
            g = torch.autograd.grad(l_k, wrt, retain_graph=i < len(losses) - 1, allow_unused=True)
            grads.append(torch.cat([(x if x is not None else torch.zeros_like(p)).reshape(-1)
                                    for x, p in zip(g, params)]))
        self._conflicts = float(sum(
            float(torch.dot(grads[a], grads[b])) < 0
            for a in range(len(grads)) for b in range(a + 1, len(grads))))
        flat = torch.stack(project_conflicting(grads, rng=self.steps * 7919 + self.rank)).sum(0)
        out, offset = torch.zeros((), device=flat.device), 0
        for p in params:
            n = p.numel()
            out = out + (p * flat[offset: offset + n].view_as(p)).sum()
            offset += n
        return out

    # -- weights, state ---------------------------------------------------------------------
    def full_weights(self) -> list[tuple[str, Any]] | None:
        """Gathered full parameters (rank 0 returns them, others None). Call on all ranks."""
        import deepspeed

        module = self.engine.module
        named = list(module.named_parameters())
        params = [p for _, p in named]
        ctx = (deepspeed.zero.GatheredParameters(params, modifier_rank=None)
               if self.cfg["zero_stage"] == 3 else _nullcontext())
        with ctx:
            if self.rank != 0:
                return None
            return [(n, p.detach().to("cpu", copy=True).clone()) for n, p in named]

    # -- broadcast weight sync (weight_sync.broadcast_weights) ------------------------------
    def _gathered(self):
        """ZeRO-3: gather full parameters on every rank (a collective); ZeRO-2: nothing."""
        import deepspeed

        if self.cfg["zero_stage"] != 3:
            return _nullcontext()
        return deepspeed.zero.GatheredParameters(list(self.engine.module.parameters()),
                                                 modifier_rank=None)

    def named_weights(self) -> list[tuple[str, Any]]:
        """Full HF-named parameters on this rank's device (valid inside :meth:`_gathered`)."""
        return [(n, p.detach()) for n, p in self.engine.module.named_parameters()]

    def weight_specs(self) -> list[tuple[str, str, tuple[int, ...]]]:
        """What engines allocate before a broadcast (full shapes, also under ZeRO-3)."""
        return [(n, str(p.dtype).removeprefix("torch."), tuple(getattr(p, "ds_shape", p.shape)))
                for n, p in self.engine.module.named_parameters()]

    def send_weights(self) -> int:
        """Every rank joins the gather; rank 0 broadcasts (``init_sender`` first)."""
        with self._gathered():
            if self.rank != 0:
                return 0
            if self._sender is None:
                raise RuntimeError("send_weights on learner rank 0 before init_sender")
            return self._sender.send(self.named_weights())

    def export(self, path: str) -> bool:
        """Write the full policy as a Hugging Face model dir (safetensors + processor) into
        ``path`` (rank 0; every rank joins the ZeRO-3 gather). True on the rank that wrote."""
        with self._gathered():
            if self.rank != 0:
                return False
            self.engine.module.save_pretrained(path, safe_serialization=True)
            self.processor.save_pretrained(path)
            return True

    def optimizer_state(self) -> list[Any]:
        """This rank's optimizer tensors (flattened, CPU) for bit-exact comparisons."""
        return _flatten_tensors(self.optimizer.state_dict())

    def save(self, path: str, tag: str) -> str:
        self.engine.save_checkpoint(path, tag=tag, client_state={"steps": self.steps})
        return tag

    def load(self, path: str, tag: str) -> int:
        _, client = self.engine.load_checkpoint(path, tag=tag, load_optimizer_states=True,
                                                load_lr_scheduler_states=True)
        if client is None:
            raise FileNotFoundError(f"no learner checkpoint {tag!r} under {path}")
        self.steps = int(client.get("steps", 0))
        return self.steps


def _spec_from_dict(cfg: dict[str, Any], norm_len: int) -> LossSpec:
    """The loss of a learner config dict (empty fields: the base defaults)."""
    from platform.clinical.config import LearnerConfig

    fields = {k: v for k, v in cfg.items() if k in LearnerConfig.__dataclass_fields__}
    return LearnerConfig(**fields).loss_spec(norm_len)


class _nullcontext:
    def __enter__(self):
        return None

    def __exit__(self, *a):
        return False


def _flatten_tensors(obj: Any) -> list[Any]:
    import torch

    if isinstance(obj, torch.Tensor):
        return [obj.detach().to("cpu", copy=True)]
    if isinstance(obj, dict):
        return [t for k in sorted(obj, key=str) for t in _flatten_tensors(obj[k])]
    if isinstance(obj, (list, tuple)):
        return [t for v in obj for t in _flatten_tensors(v)]
    return []


def ensure_comm_extension() -> None:
    """Build DeepSpeed's CPU comm extension once, before learners start (shared cache dir)."""
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(TORCH_EXTENSIONS_DIR))
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    if os.environ.get("DS_ACCELERATOR") != "cpu":
        return
    built = Path(os.environ["TORCH_EXTENSIONS_DIR"]).glob("*/deepspeed_shm_comm*.so")
    if any(built):  # already built: skip importing deepspeed in the driver
        return
    from deepspeed.comm.torch import build_shm_op

    build_shm_op()


class LearnerLost(RuntimeError):
    """A learner rank died or hung; the message names it."""


class LearnerGroup:
    """Driver-side handle: ``num_learners`` learner actors that always act together."""

    def __init__(self, model_path: str, cfg: Any, temperature: float, seed: int, dtype: str,
                 actor_options: list[dict[str, Any]] | None = None):
        """``actor_options[rank]``: Ray options placing that rank in its placement-group bundle
        (``placement.Placement.learner_options``); None = ``cfg.num_cpus``/``cfg.num_gpus``.
        The ranks rendezvous at rank 0's node IP and a port free there (multi-node safe)."""
        import ray

        Path(TORCH_EXTENSIONS_DIR).mkdir(parents=True, exist_ok=True)
        self.cfg = cfg
        self.timeout = cfg.timeout_s
        actor = ray.remote(LearnerImpl)
        cfg_dict = {k: getattr(cfg, k) for k in cfg.__dataclass_fields__}
        env = {"TORCH_EXTENSIONS_DIR": str(TORCH_EXTENSIONS_DIR),
               "DS_ACCELERATOR": os.environ.get("DS_ACCELERATOR", "cpu")}
        from platform.cluster import worker_runtime_env

        self.actors = [
            actor.options(**(actor_options[rank] if actor_options is not None else
                             {"num_cpus": cfg.num_cpus, "num_gpus": cfg.num_gpus}),
                          runtime_env=worker_runtime_env(env)).remote(
                rank, cfg.num_learners, model_path, cfg_dict, temperature, seed, dtype)
            for rank in range(cfg.num_learners)
        ]
        addr, port = ray.get(self.actors[0].endpoint.remote(), timeout=self.timeout)
        self._all(lambda a: a.setup.remote(addr, port))

    def _all(self, call) -> list[Any]:
        return self._gather([call(a) for a in self.actors])

    def _gather(self, refs: list[Any]) -> list[Any]:
        """``ray.get`` of one call per rank; a rank that died or did not answer within
        ``learner.timeout_s`` is named in :class:`LearnerLost`."""
        import ray
        from ray.exceptions import GetTimeoutError, RayActorError

        try:
            return ray.get(refs, timeout=self.timeout)
        except (RayActorError, GetTimeoutError) as exc:
            dead, silent = [], []
            for rank, ref in enumerate(refs):
                ready, _ = ray.wait([ref], timeout=0)
                if not ready:
                    silent.append(rank)
                    continue
                try:
                    ray.get(ref, timeout=0)
                except RayActorError:
                    dead.append(rank)
            what = "; ".join(part for part in (
                f"rank {dead} died" if dead else "",
                f"rank {silent} did not answer within learner.timeout_s={self.timeout:g} s"
                if silent and not dead else "") if part)
            raise LearnerLost(f"learner {what or type(exc).__name__}: a learner is not restarted "
                              "(its optimizer state and collective group go with it); continue "
                              "from the last checkpoint with --resume") from exc

    def update(self, batch: TrainBatch, spec: LossSpec | None = None) -> dict[str, float]:
        """One training step on all ranks; returns ``learner/*`` (and, with rollout log-probs
        in the batch, ``rollout/logprob_diff/mean|max``) metrics."""
        import ray

        shards = shard_batch(batch, len(self.actors), self.cfg.grad_accum)
        ref = ray.put(batch)
        outs = self._all_indexed(lambda a, r: a.update.remote(ref, shards[r], len(batch), spec))
        tokens = sum(o["tokens"] for o in outs)
        epochs = self.cfg.ppo_epochs
        out = {
            "learner/loss": sum(o["loss_sum"] for o in outs) / epochs,
            "learner/clipfrac": sum(o["clipfrac_sum"] for o in outs) / tokens / epochs,
            "learner/kl": sum(o["kl_sum"] for o in outs) / tokens / epochs,
            "learner/ratio": sum(o["ratio_sum"] for o in outs) / tokens / epochs,
            "learner/grad_norm": outs[0]["grad_norm"],
            "learner/tokens": tokens,
        }
        if outs[0].get("has_rollout_logp"):
            out["rollout/logprob_diff/mean"] = sum(o["logprob_diff_sum"] for o in outs) / tokens
            out["rollout/logprob_diff/max"] = max(o["logprob_diff_max"] for o in outs)
            if (spec.tis_cap if spec is not None else self.cfg.tis_cap) > 0:
                out["learner/tis_weight"] = sum(o["tis_weight_sum"] for o in outs) / tokens / epochs
                out["learner/tis_clipfrac"] = sum(o["tis_clipped"] for o in outs) / tokens / epochs
        if self.cfg.fairgrad:
            out["learner/fairgrad_conflicts"] = sum(o["fairgrad_conflicts"] for o in outs)
        return out

    def _all_indexed(self, call) -> list[Any]:
        return self._gather([call(a, r) for r, a in enumerate(self.actors)])

    def full_weights(self) -> list[tuple[str, Any]]:
        return self._all(lambda a: a.full_weights.remote())[0]

    def optimizer_state(self) -> list[list[Any]]:
        return self._all(lambda a: a.optimizer_state.remote())

    def export(self, path: str) -> None:
        """The policy as a Hugging Face model dir at ``path`` (``LearnerImpl.export``)."""
        self._all(lambda a: a.export.remote(path))

    def save(self, path: str, tag: str) -> None:
        self._all(lambda a: a.save.remote(path, tag))

    def load(self, path: str, tag: str) -> None:
        self._all(lambda a: a.load.remote(path, tag))

    def shutdown(self) -> None:
        import ray

        for a in self.actors:
            ray.kill(a, no_restart=True)
        self.actors = []

