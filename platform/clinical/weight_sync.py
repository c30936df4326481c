"""Learner -> rollout-engine weight sync, after every update, with a timeout.

Two transports, one result type (:class:`SyncResult`, whose ``seconds`` the driver logs
to MLflow as ``weight_sync/seconds``):

* **CPU** (CI, laptops): the full state dict gathered on learner rank 0 travels through
  the Ray object store (one ``ray.put``) and each engine reloads it with vLLM's
  ``llm.collective_rpc("reload_weights", kwargs={"weights_iterator": ...})``.
* **GPU** (OpenRLHF style): a process group spanning learner rank 0 (rank 0) and every
  engine worker (ranks 1..), made from a ``TCPStore`` and a ``ProcessGroupNCCL`` outside
  ``torch.distributed``'s global state (:func:`init_broadcast_group`; pure torch, so the
  learners need no vLLM); rank 0 broadcasts each tensor, the workers receive into fresh
  buffers and load them with vLLM's ``reload_weights``. The engine side lives in
  :class:`WeightSyncWorkerExtension`, which vLLM mixes into its workers
  (``LLM(worker_extension_cls="platform.clinical.weight_sync.WeightSyncWorkerExtension")``).
  ``backend="gloo"`` runs the same protocol on CPU tensors (CI runs the driver with it).

The driver picks one with ``rollout.weight_sync`` (:func:`sync_method`; ``auto``: broadcast
over NCCL when the backend supports broadcasts and its engines and the learners have GPUs of
their own, the object store otherwise).

A collective that one side never joins hangs forever; every wait here goes through
:func:`wait_named`, which raises :class:`WeightSyncTimeout` naming the workers that did
not finish instead.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

WORKER_EXTENSION = "platform.clinical.weight_sync.WeightSyncWorkerExtension"
METRIC_SYNC_SECONDS = "weight_sync/seconds"


class WeightSyncTimeout(RuntimeError):
    """A weight-sync step did not finish in time; ``stuck`` names the workers."""

    def __init__(self, what: str, stuck: list[str], timeout_s: float):
        self.stuck = stuck
        super().__init__(f"{what} timed out after {timeout_s:g} s; still waiting on: "
                         f"{', '.join(stuck)} (the others finished). Check that worker's log "
                         "(`ray logs actor --id ...`) and the network between the nodes.")


@dataclass(frozen=True)
class SyncResult:
    """One sync: transport, tensors, bytes moved per receiver, wall seconds."""

    method: str
    num_tensors: int
    num_bytes: int
    seconds: float

    def metrics(self) -> dict[str, float]:
        return {METRIC_SYNC_SECONDS: self.seconds, "weight_sync/mbytes": self.num_bytes / 2**20,
                "weight_sync/tensors": float(self.num_tensors)}


def sync_method(cfg: Any) -> str:
    """How weights reach the rollout workers after each update (``rollout.weight_sync`` of a
    ``ClinicalConfig``): ``object_store``, ``broadcast-nccl`` or ``broadcast-gloo``.

    ``object_store`` works for every backend; ``broadcast`` needs a backend whose spec
    supports it (:mod:`.backends`): NCCL when its engines are on GPUs (then learner rank 0
    needs a GPU of its own), gloo on CPU. ``auto``: NCCL broadcast when the backend supports
    it, its engines and the learners have GPUs and ``placement`` is ``dedicated`` (colocated:
    NCCL cannot put two ranks on one GPU), else the object store. Impossible choices raise a
    ConfigError naming ``rollout.weight_sync``.
    """
    from platform.clinical.backends import broadcast_backends, spec

    from base.errors import require

    r, lc = cfg.rollout, cfg.learner
    mode, colocated = r.weight_sync, cfg.placement == "colocated"
    broadcast = spec(r.backend).supports_broadcast
    if mode == "auto":
        gpus = broadcast and r.num_gpus > 0 and lc.num_gpus > 0
        mode = "broadcast" if gpus and not colocated else "object_store"
    if mode == "object_store":
        return mode
    require(broadcast, "rollout.weight_sync",
            f"'broadcast' needs rollout.backend={'|'.join(broadcast_backends())} (got "
            f"{r.backend!r}); allowed with {r.backend}: auto, object_store")
    if r.num_gpus > 0:
        require(lc.num_gpus > 0, "rollout.weight_sync",
                "'broadcast' with GPU engines is an NCCL broadcast from learner rank 0, which "
                "needs learner.num_gpus > 0; or set rollout.weight_sync=object_store")
        require(not colocated, "rollout.weight_sync",
                "'broadcast' with placement=colocated would put two NCCL ranks on one GPU, which "
                "NCCL refuses; use auto or object_store with colocated, or placement=dedicated")
        return "broadcast-nccl"
    return "broadcast-gloo"


def wait_named(refs: Mapping[str, Any], timeout_s: float, what: str) -> dict[str, Any]:
    """``ray.get`` every ref in ``{worker name: ObjectRef}`` within ``timeout_s`` in total.

    Raises WeightSyncTimeout naming the workers whose refs are not ready (errors of the
    finished ones are raised as they are). Returns ``{name: value}``.
    """
    import ray

    by_ref = {ref: name for name, ref in refs.items()}
    _, pending = ray.wait(list(by_ref), num_returns=len(by_ref), timeout=timeout_s)
    if pending:
        raise WeightSyncTimeout(what, [by_ref[r] for r in pending], timeout_s)
    return {name: ray.get(ref) for name, ref in refs.items()}


def tensor_bytes(named_tensors: Iterable[tuple[str, Any]]) -> tuple[int, int]:
    n, total = 0, 0
    for _, t in named_tensors:
        n += 1
        total += t.numel() * t.element_size()
    return n, total


def to_cpu_list(named_tensors: Iterable[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """Detached contiguous CPU copies (what travels through the object store)."""
    return [(name, t.detach().to("cpu").contiguous()) for name, t in named_tensors]


def sync_via_object_store(engines: Mapping[str, Any], named_tensors: Iterable[tuple[str, Any]],
                          version: int, timeout_s: float = 300.0) -> tuple[SyncResult, Any]:
    """CPU transport: put the weights once, every engine actor ``load_weights`` them.

    ``engines`` maps a worker name to a rollout actor (``load_weights(named, version)``, as
    :class:`platform.clinical.rollout.RolloutWorker`). Returns the result and the ObjectRef
    of the weights (keep it to reload a restarted engine).
    """
    import ray

    start = time.perf_counter()
    weights = to_cpu_list(named_tensors)
    n, nbytes = tensor_bytes(weights)
    ref = ray.put(weights)
    wait_named({name: e.load_weights.remote(ref, version) for name, e in engines.items()}, timeout_s,
               "weight sync (object store -> reload_weights)")
    return SyncResult("reload_weights", n, nbytes, time.perf_counter() - start), ref


# --- broadcast protocol (GPU: NCCL; CPU: gloo) ---------------------------------------------


def tensor_specs(named_tensors: Iterable[tuple[str, Any]]) -> list[tuple[str, str, tuple[int, ...]]]:
    """``[(name, dtype name, shape)]``: what receivers allocate before each broadcast."""
    return [(name, str(t.dtype).removeprefix("torch."), tuple(t.shape)) for name, t in named_tensors]


def init_broadcast_group(master_address: str, master_port: int, rank: int, world_size: int,
                         backend: str, device: Any = None, timeout_s: float = 300.0) -> Any:
    """Join the learner+engines group as ``rank`` (rank 0, the learner, hosts the store).

    Pure torch, no ``torch.distributed`` global state and no vLLM import, so a DeepSpeed
    learner (whose default process group is the learners' own) and a vLLM worker (whose
    default group is its tensor-parallel one) can both join, each from its own Python
    environment, as OpenRLHF does: a ``TCPStore`` rendezvous, then a ``ProcessGroupNCCL``
    (GPU tensors on ``device``) or ``ProcessGroupGloo`` (CPU tensors) over a prefixed store.
    """
    from datetime import timedelta

    import torch.distributed as dist

    if backend not in ("nccl", "gloo"):
        raise ValueError(f"weight sync backend must be 'nccl' or 'gloo', got {backend!r}")
    timeout = timedelta(seconds=timeout_s)
    store = dist.TCPStore(master_address, master_port, world_size, is_master=rank == 0,
                          timeout=timeout, wait_for_workers=False)
    prefix = dist.PrefixStore("equirl-weight-sync", store)
    if backend == "gloo":
        group = dist.ProcessGroupGloo(prefix, rank, world_size, timeout)
    else:
        import torch

        if device is not None:
            torch.cuda.set_device(device)
        opts = dist.ProcessGroupNCCL.Options()
        opts._timeout = timeout
        group = dist.ProcessGroupNCCL(prefix, rank, world_size, opts)
    return BroadcastGroup(group, store, rank, world_size, backend)


@dataclass
class BroadcastGroup:
    """A joined group; keeps the ``TCPStore`` alive as long as the group (rank 0 serves it)."""

    group: Any
    store: Any
    rank: int
    world_size: int
    backend: str


def broadcast_tensor(group: BroadcastGroup, tensor: Any, src: int = 0, timeout_s: float = 300.0) -> None:
    """In-place broadcast from ``src`` (gloo ops time out after ``timeout_s`` inside the
    group; an NCCL op that never completes is bounded by the driver's :func:`wait_named`)."""
    from datetime import timedelta

    import torch.distributed as dist

    opts = dist.BroadcastOptions()
    opts.rootRank = src
    opts.timeout = timedelta(seconds=timeout_s)
    group.group.broadcast([tensor], opts).wait()


class BroadcastSender:
    """Learner rank 0's side of the broadcast (a plain object the learner actor holds).

    ``init()`` and ``send()`` must run concurrently with the engines' receive calls; the
    driver waits on both with :func:`wait_named`.
    """

    def __init__(self) -> None:
        self.group: Any = None
        self.timeout_s = 300.0

    def init(self, master_address: str, master_port: int, world_size: int, backend: str = "nccl",
             timeout_s: float = 300.0) -> None:
        import torch

        device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else None
        self.timeout_s = timeout_s
        self.group = init_broadcast_group(master_address, master_port, 0, world_size, backend,
                                          device, timeout_s)

    def send(self, named_tensors: Iterable[tuple[str, Any]]) -> int:
        """Broadcast every tensor in order (specs must have been sent to the receivers)."""
        import torch

        if self.group is None:
            raise RuntimeError("BroadcastSender.send before init(): call init on learner rank 0")
        n = 0
        for _, t in named_tensors:
            broadcast_tensor(self.group, t.detach().contiguous(), timeout_s=self.timeout_s)
            n += 1
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return n


class WeightSyncWorkerExtension:
    """Mixed into every vLLM worker (``worker_extension_cls``); called via ``collective_rpc``.

    Uses the worker's ``self.device``, ``self.model_runner`` and ``self.rank`` (vLLM's
    Worker attributes). Engine ``i`` with tensor-parallel size ``tp`` occupies ranks
    ``1 + i*tp + worker_rank`` of the broadcast group.
    """

    def init_weight_update_group(self, master_address: str, master_port: int, rank_offset: int,
                                 world_size: int, backend: str = "nccl",
                                 timeout_s: float = 300.0) -> int:
        from vllm.distributed.parallel_state import get_world_group

        rank = get_world_group().rank + rank_offset
        device = getattr(self, "device", None) if backend == "nccl" else None
        self._equirl_group = init_broadcast_group(master_address, master_port, rank, world_size,
                                                  backend, device, timeout_s)
        self._equirl_timeout_s = timeout_s
        return rank

    def receive_weights(self, specs: list[tuple[str, str, tuple[int, ...]]]) -> int:
        """Receive every broadcast tensor, then load them in place with the worker's
        ``reload_weights`` (vLLM's supported in-place path: a plain ``model.load_weights``
        after start-up fails on post-processed parameters). Returns the count."""
        import torch

        device = self.device if torch.cuda.is_available() else torch.device("cpu")
        received = []
        for name, dtype, shape in specs:
            buf = torch.empty(shape, dtype=getattr(torch, dtype), device=device)
            broadcast_tensor(self._equirl_group, buf,
                             timeout_s=getattr(self, "_equirl_timeout_s", 300.0))
            received.append((name, buf))
        self.reload_weights(weights_iterator=iter(received))
        return len(received)

    def weights_checksum(self) -> float:
        """Sum of all parameters (tests: did the weights change?)."""
        return float(sum(p.detach().float().sum().item()
                         for p in self.model_runner.model.parameters()))

    def weight_sums(self) -> dict[str, float]:
        """``{name: float64 sum}`` of every non-empty parameter (tests compare with the learner)."""
        return {n: float(p.detach().double().sum().item())
                for n, p in self.model_runner.model.named_parameters() if p.numel()}


class BroadcastLearnerMixin:
    """Methods a learner actor (rank 0) needs for :func:`broadcast_weights`.

    The class must define ``named_weights() -> list[(name, tensor)]`` returning the full,
    HF-named weights (for ZeRO-3: gathered with ``GatheredParameters``, on rank 0).
    """

    _sender: BroadcastSender | None = None

    def sync_endpoint(self) -> tuple[str, int]:
        """This node's IP and a free port for the broadcast group's rendezvous."""
        import socket

        import ray

        with socket.socket() as s:
            s.bind(("", 0))
            port = s.getsockname()[1]
        return ray.util.get_node_ip_address(), port

    def init_sender(self, master_address: str, master_port: int, world_size: int,
                    backend: str = "nccl", timeout_s: float = 300.0) -> int:
        self._sender = BroadcastSender()
        self._sender.init(master_address, master_port, world_size, backend, timeout_s)
        return 0

    def weight_specs(self) -> list[tuple[str, str, tuple[int, ...]]]:
        return tensor_specs(self.named_weights())

    def send_weights(self) -> int:
        if self._sender is None:
            raise RuntimeError("send_weights before init_sender")
        return self._sender.send(self.named_weights())


def init_broadcast_group_for(learner: Any, engines: Mapping[str, Any], tensor_parallel_size: int = 1,
                             backend: str = "nccl", timeout_s: float = 300.0) -> int:
    """Form the group {learner rank 0} + every engine worker; returns its world size.

    Engine ``i`` (in ``engines`` order) takes ranks ``1 + i*tp .. (i+1)*tp``.
    """
    import ray

    addr, port = ray.get(learner.sync_endpoint.remote(), timeout=timeout_s)
    world = 1 + len(engines) * tensor_parallel_size
    refs = {"learner-rank-0": learner.init_sender.remote(addr, port, world, backend, timeout_s)}
    for i, (name, engine) in enumerate(engines.items()):
        refs[name] = engine.init_weight_group.remote(addr, port, 1 + i * tensor_parallel_size,
                                                     world, backend, timeout_s)
    wait_named(refs, timeout_s, f"weight-sync group init ({backend}, world size {world})")
    return world


def broadcast_weights(learner: Any, engines: Mapping[str, Any], version: int,
                      timeout_s: float = 300.0, backend: str = "nccl",
                      peers: Iterable[Any] = ()) -> SyncResult:
    """One learner -> engines broadcast (group from :func:`init_broadcast_group_for`).

    The learner's send and every engine's receive run concurrently; ``peers`` (learner ranks
    1..) call ``send_weights`` too, to join a ZeRO-3 parameter gather (they send nothing).
    If any of them has not returned after ``timeout_s`` the WeightSyncTimeout names it.
    """
    import ray

    start = time.perf_counter()
    specs = ray.get(learner.weight_specs.remote(), timeout=timeout_s)
    refs = {"learner-rank-0": learner.send_weights.remote()}
    refs.update({f"learner-rank-{r}": p.send_weights.remote() for r, p in enumerate(peers, 1)})
    for name, engine in engines.items():
        refs[name] = engine.receive_weights.remote(specs, version)
    wait_named(refs, timeout_s, f"weight broadcast ({backend}) of version {version}")
    nbytes = 0
    for _, dtype, shape in specs:
        numel = 1
        for d in shape:
            numel *= d
        nbytes += numel * _DTYPE_BYTES.get(dtype, 4)
    return SyncResult(f"broadcast-{backend}", len(specs), nbytes, time.perf_counter() - start)


_DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8, "int64": 8, "int32": 4,
                "uint8": 1, "int8": 1, "bool": 1}
