"""DeepSpeed ZeRO-2/3 learner actors: PPO-clip on token log-probs, optional KL to a reference.

Each learner is a Ray actor (:class:`LearnerGroup` starts ``num_learners`` of them) that sets
MASTER_ADDR/MASTER_PORT/RANK/WORLD_SIZE/LOCAL_RANK, calls
``deepspeed.init_distributed(dist_backend="gloo")`` (NCCL on GPUs) and wraps the policy with
``deepspeed.initialize``. Every collective (update steps, ZeRO-3 gathers, checkpoints) is sent
to all ranks together and awaited with a timeout (a call on one rank alone would hang).

Loss: ``algorithms.losses.ppo_token_loss`` per completion (PPO-clip on token log-probs, k3 KL
to the frozen reference), averaged over the whole global batch.

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

from algorithms.losses import ppo_token_loss

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

    def __len__(self) -> int:
        return len(self.completion_ids)

    def take(self, idx: list[int]) -> TrainBatch:
        return TrainBatch(
            prompt_ids=[self.prompt_ids[i] for i in idx],
            completion_ids=[self.completion_ids[i] for i in idx],
            advantages=[self.advantages[i] for i in idx],
            images=[self.images[i] for i in idx],
            groups=[self.groups[i] for i in idx] if self.groups else [],
        )


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
    def update(self, batch: TrainBatch, shards: list[list[int]], global_n: int) -> dict[str, float]:
        """PPO update on this rank's micro-batches (``shards[micro] -> indices into batch``).

        All ranks must call this together with the same ``len(shards)``.
        """
        import torch

        start = time.perf_counter()
        scale = self.world * len(shards) / max(global_n, 1)  # DeepSpeed averages micro-batches and ranks
        stats = {"loss": 0.0, "clipfrac": 0.0, "kl": 0.0, "ratio": 0.0, "tokens": 0.0}
        old = None
        if self.cfg["ppo_epochs"] > 1:
            with torch.no_grad():
                old = [self._token_logp(self.engine, *self._micro(batch, idx)[:2])[0] for idx in shards]
        grad_norm = float("nan")
        for _epoch in range(self.cfg["ppo_epochs"]):
            for m, idx in enumerate(shards):
                inputs, cmask, adv, weight = self._micro(batch, idx)
                leaves = self._detached_params() if self.fairgrad else None
                logp, mask = self._token_logp(self._functional(leaves) if leaves else self.engine,
                                              inputs, cmask)
                old_logp = old[m] if old is not None else logp.detach()
                ref_logp = None
                if self.ref is not None:
                    with torch.no_grad():
                        ref_logp, _ = self._token_logp(self.ref, inputs, cmask)
                loss_seq, st = ppo_token_loss(logp, old_logp, ref_logp, adv, mask,
                                              self.cfg["clip_eps"], self.cfg["kl_coef"])
                weighted = loss_seq * weight * scale
                if self.fairgrad:
                    loss = self._fairgrad_surrogate(weighted * len(weighted), batch, idx, leaves)
                    stats["fairgrad_conflicts"] = stats.get("fairgrad_conflicts", 0.0) + self._conflicts
                else:
                    loss = weighted.sum()
                self.engine.backward(loss)
                self.engine.step()
                stats["loss"] += float((loss_seq * weight).sum().item())
                for k in ("clipfrac", "kl", "ratio", "tokens"):
                    stats[k] += st[k] if idx else 0.0
            norm = self.engine.get_global_grad_norm()
            grad_norm = float(norm) if norm is not None else grad_norm
        self.steps += 1
        tokens = max(stats["tokens"], 1.0)
        return {"loss_sum": stats["loss"], "clipfrac_sum": stats["clipfrac"], "kl_sum": stats["kl"],
                "ratio_sum": stats["ratio"], "tokens": tokens / self.cfg["ppo_epochs"],
                "grad_norm": grad_norm, "seconds": time.perf_counter() - start,
                "fairgrad_conflicts": stats.get("fairgrad_conflicts", 0.0)}

    def _micro(self, batch: TrainBatch, idx: list[int]):
        """Collated micro-batch: ``inputs, cmask (B, L), advantages (B,), weights (B,)``.

        An empty micro-batch runs sample 0 with weight 0 (every rank must call backward).
        """
        import torch

        sub = batch.take(idx if idx else [0])
        inputs, cmask = self._collate(sub)
        adv = torch.tensor(sub.advantages, dtype=torch.float32, device=self.device)
        weight = torch.full((len(sub),), 1.0 if idx else 0.0, device=self.device)
        return inputs, cmask, adv, weight

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
        import ray

        return ray.get([call(a) for a in self.actors], timeout=self.timeout)

    def update(self, batch: TrainBatch) -> dict[str, float]:
        """One training step on all ranks; returns averaged metrics (``learner/...``)."""
        import ray

        shards = shard_batch(batch, len(self.actors), self.cfg.grad_accum)
        ref = ray.put(batch)
        outs = self._all_indexed(lambda a, r: a.update.remote(ref, shards[r], len(batch)))
        tokens = sum(o["tokens"] for o in outs)
        return {
            "learner/loss": sum(o["loss_sum"] for o in outs) / max(len(batch), 1) / self.cfg.ppo_epochs,
            "learner/clipfrac": sum(o["clipfrac_sum"] for o in outs) / tokens / self.cfg.ppo_epochs,
            "learner/kl": sum(o["kl_sum"] for o in outs) / tokens / self.cfg.ppo_epochs,
            "learner/ratio": sum(o["ratio_sum"] for o in outs) / tokens / self.cfg.ppo_epochs,
            "learner/grad_norm": outs[0]["grad_norm"],
            "learner/tokens": tokens,
            **({"learner/fairgrad_conflicts": sum(o["fairgrad_conflicts"] for o in outs)}
               if self.cfg.fairgrad else {}),
        }

    def _all_indexed(self, call) -> list[Any]:
        import ray

        return ray.get([call(a, r) for r, a in enumerate(self.actors)], timeout=self.timeout)

    def full_weights(self) -> list[tuple[str, Any]]:
        return self._all(lambda a: a.full_weights.remote())[0]

    def optimizer_state(self) -> list[list[Any]]:
        return self._all(lambda a: a.optimizer_state.remote())

    def save(self, path: str, tag: str) -> None:
        self._all(lambda a: a.save.remote(path, tag))

    def load(self, path: str, tag: str) -> None:
        self._all(lambda a: a.load.remote(path, tag))

    def shutdown(self) -> None:
        import ray

        for a in self.actors:
            ray.kill(a, no_restart=True)
        self.actors = []

