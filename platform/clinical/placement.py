"""Where rollout engines and learners run: Ray placement groups on dedicated GPUs.

At scale (OpenRLHF's "distributed" layout) vLLM rollout engines and DeepSpeed learners
hold *disjoint* GPUs: one placement group reserves ``num_engines x tensor_parallel_size``
single-GPU bundles for the engines, another ``num_learners`` bundles of
``gpus_per_learner`` GPUs for the learners. Ray never hands the same GPU to two bundles,
so the two roles cannot collide. ``colocate=True`` is the single-GPU layout instead:
engine ``i`` and learner ``i`` share bundle ``i`` (each actor asks for half of it).

Everything is checked *before* anything is reserved (:func:`check_capacity`): a request
for more GPUs than the cluster has is a :class:`~base.errors.UsageError` naming the
fields to change, never a placement group that waits forever. On a CPU-only machine
(``use_gpus=False``) the same code reserves CPU bundles, which is how CI exercises it.

Pure planning (:func:`plan`) is separate from the Ray calls (:func:`reserve`).

The training driver's side (a ``ClinicalConfig`` -> its placement) is at the end:
:func:`requested_gpus` / :func:`check_gpu_capacity` (before any actor exists),
:func:`placement_config` (the layout, pure) and :func:`placement_for` (reserve it, and the Ray
options of each rollout worker and learner). A backend's GPUs per worker come from its spec
(:mod:`.backends`), never from its name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from platform.clinical.backends import spec
from typing import Any, Literal

from base.errors import UsageError, require


@dataclass
class PlacementConfig:
    """How many devices each role gets (``placement.*`` in the training config)."""

    num_engines: int = 1
    "Rollout engine actors (vLLM or HF), each an independent copy of the policy."
    tensor_parallel_size: int = 1
    "GPUs per rollout engine (vLLM tensor parallelism); 1 on CPU."
    num_learners: int = 1
    "DeepSpeed learner ranks (data parallel)."
    gpus_per_learner: int = 1
    "GPUs per learner rank (1 for ZeRO data parallel)."
    colocate: bool = False
    "Share GPUs: engine i and learner i on the same GPU (needs num_engines == num_learners)."
    use_gpus: bool = True
    "Reserve GPUs; false reserves CPU bundles only (CI, laptops)."
    engine_gpus: bool = True
    "Rollout engines get GPUs (false: engines on CPU bundles, learners still on GPUs; dedicated only)."
    cpus_per_bundle: float = 1.0
    "CPUs reserved with each bundle (driver-side work of the actor in it)."
    strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = "PACK"
    "Ray placement strategy for each group."
    ready_timeout_s: float = 300.0
    "Seconds to wait for the cluster to grant the reservation (the autoscaler may add nodes)."

    def __post_init__(self) -> None:
        require(self.num_engines >= 1, "placement.num_engines", f"must be >= 1, got {self.num_engines}")
        require(self.tensor_parallel_size >= 1, "placement.tensor_parallel_size",
                f"must be >= 1, got {self.tensor_parallel_size}")
        require(self.num_learners >= 1, "placement.num_learners", f"must be >= 1, got {self.num_learners}")
        require(self.gpus_per_learner >= 0, "placement.gpus_per_learner",
                f"must be >= 0, got {self.gpus_per_learner}")
        require(self.cpus_per_bundle > 0, "placement.cpus_per_bundle",
                f"must be > 0, got {self.cpus_per_bundle}")
        require(self.ready_timeout_s > 0, "placement.ready_timeout_s", "must be > 0")
        if self.colocate:
            require(self.num_engines == self.num_learners, "placement.colocate",
                    f"colocated engines and learners pair up one-to-one: num_engines "
                    f"({self.num_engines}) must equal num_learners ({self.num_learners})")
            require(self.tensor_parallel_size == 1 and self.gpus_per_learner <= 1,
                    "placement.colocate", "colocation shares one GPU per pair: "
                    "tensor_parallel_size and gpus_per_learner must be 1")
            require(self.engine_gpus, "placement.engine_gpus",
                    "colocated engines share their learner's GPU; engine_gpus must be true")
        if not self.engine_gpus:
            require(self.tensor_parallel_size == 1, "placement.tensor_parallel_size",
                    f"tensor parallelism needs GPUs; got {self.tensor_parallel_size} with "
                    "placement.engine_gpus=false")
        if not self.use_gpus:
            require(self.tensor_parallel_size == 1, "placement.tensor_parallel_size",
                    f"tensor parallelism needs GPUs; got {self.tensor_parallel_size} with "
                    "placement.use_gpus=false")


@dataclass(frozen=True)
class PlacementPlan:
    """Bundles to reserve. Engine ``i`` uses ``engine_bundles[i]`` of the rollout group;
    learner ``j`` uses ``learner_bundles[j]`` of the learner group (the same group when
    colocated)."""

    rollout_bundles: list[dict[str, float]]
    learner_bundles: list[dict[str, float]]
    engine_bundles: list[list[int]]
    learner_bundle_index: list[int]
    colocated: bool
    gpus_rollout: int
    gpus_learners: int
    actor_gpu_fraction: float = field(default=1.0)

    @property
    def total_gpus(self) -> int:
        return self.gpus_rollout if self.colocated else self.gpus_rollout + self.gpus_learners

    @property
    def total_cpus(self) -> float:
        bundles = self.rollout_bundles + ([] if self.colocated else self.learner_bundles)
        return sum(b.get("CPU", 0.0) for b in bundles)


def plan(cfg: PlacementConfig) -> PlacementPlan:
    """The bundles ``cfg`` asks for (pure; no Ray).

    Dedicated: rollout group = ``num_engines * tp`` bundles ``{GPU: 1, CPU: c}``; engine i
    gets bundles ``[i*tp, (i+1)*tp)``. Learner group = ``num_learners`` bundles
    ``{GPU: gpus_per_learner, CPU: c}``. Colocated: one group of ``num_engines`` bundles
    ``{GPU: 1, CPU: 2c}``; engine i and learner i each take half of bundle i.
    """
    gpu = 1.0 if cfg.use_gpus and cfg.engine_gpus else 0.0
    tp = cfg.tensor_parallel_size

    def bundle(gpus: float, cpus: float) -> dict[str, float]:
        return {"CPU": cpus, **({"GPU": gpus} if gpus else {})}

    if cfg.colocate:
        bundles = [bundle(gpu, 2 * cfg.cpus_per_bundle) for _ in range(cfg.num_engines)]
        return PlacementPlan(
            rollout_bundles=bundles, learner_bundles=bundles,
            engine_bundles=[[i] for i in range(cfg.num_engines)],
            learner_bundle_index=list(range(cfg.num_learners)), colocated=True,
            gpus_rollout=int(gpu) * cfg.num_engines, gpus_learners=int(gpu) * cfg.num_learners,
            actor_gpu_fraction=0.5,
        )
    learner_gpu = float(cfg.gpus_per_learner) if cfg.use_gpus else 0.0
    return PlacementPlan(
        rollout_bundles=[bundle(gpu, cfg.cpus_per_bundle) for _ in range(cfg.num_engines * tp)],
        learner_bundles=[bundle(learner_gpu, cfg.cpus_per_bundle) for _ in range(cfg.num_learners)],
        engine_bundles=[list(range(i * tp, (i + 1) * tp)) for i in range(cfg.num_engines)],
        learner_bundle_index=list(range(cfg.num_learners)), colocated=False,
        gpus_rollout=int(gpu) * cfg.num_engines * tp,
        gpus_learners=int(learner_gpu) * cfg.num_learners,
    )


def check_capacity(cfg: PlacementConfig, p: PlacementPlan, cluster: dict[str, float]) -> None:
    """Raise UsageError if ``p`` needs more GPUs/CPUs than ``cluster`` (``ray.cluster_resources()``).

    Called before any reservation, so a bad request never holds (or waits for) a GPU.
    """
    have_gpus = int(cluster.get("GPU", 0))
    if p.total_gpus > have_gpus:
        if cfg.colocate:
            need = f"{cfg.num_engines} colocated engine+learner pairs x 1 GPU"
        else:
            need = (f"rollout: placement.num_engines {cfg.num_engines} x "
                    f"placement.tensor_parallel_size {cfg.tensor_parallel_size} = {p.gpus_rollout}; "
                    f"learners: placement.num_learners {cfg.num_learners} x "
                    f"placement.gpus_per_learner {cfg.gpus_per_learner} = {p.gpus_learners}")
        hint = ("set placement.use_gpus=false to run on CPU" if have_gpus == 0 else
                "lower those fields, set placement.colocate=true, or add GPU worker nodes "
                "(clusters/gpu.yaml: available_node_types.gpu_worker.min_workers)")
        raise UsageError(f"placement: asked for {p.total_gpus} GPUs ({need}) but the cluster "
                         f"has {have_gpus}; {hint}")
    have_cpus = float(cluster.get("CPU", 0))
    if p.total_cpus > have_cpus:
        raise UsageError(f"placement: asked for {p.total_cpus:g} CPUs "
                         f"(placement.cpus_per_bundle {cfg.cpus_per_bundle:g} per bundle) but the "
                         f"cluster has {have_cpus:g}; lower placement.cpus_per_bundle or the "
                         "number of engines/learners")


@dataclass
class Placement:
    """Reserved placement groups and the bundle each actor should use."""

    plan: PlacementPlan
    rollout_group: Any
    learner_group: Any

    def engine_options(self, i: int) -> dict[str, Any]:
        """``.options(**...)`` for engine ``i``.

        With tensor parallelism the engine actor itself takes no GPU: vLLM's Ray executor
        starts one worker per bundle of the captured group (``VLLM_RAY_BUNDLE_INDICES``).
        """
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        bundles = self.plan.engine_bundles[i]
        tp = len(bundles)
        gpu_fraction = self.plan.actor_gpu_fraction if tp == 1 else 0.0
        num_gpus = gpu_fraction if self.plan.gpus_rollout else 0.0
        cpus = self.plan.rollout_bundles[bundles[0]]["CPU"] * (0.5 if self.plan.colocated else 1.0)
        env = {}
        if tp > 1:
            env["VLLM_RAY_BUNDLE_INDICES"] = ",".join(map(str, bundles))
            env["VLLM_RAY_PER_WORKER_GPUS"] = "1"
        return {
            "num_cpus": cpus if tp == 1 else 0.0,
            "num_gpus": num_gpus,
            "scheduling_strategy": PlacementGroupSchedulingStrategy(
                placement_group=self.rollout_group, placement_group_bundle_index=bundles[0],
                placement_group_capture_child_tasks=tp > 1),
            "runtime_env": {"env_vars": env} if env else None,
        }

    def learner_options(self, j: int) -> dict[str, Any]:
        """``.options(**...)`` for learner rank ``j``."""
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        idx = self.plan.learner_bundle_index[j]
        bundle = self.plan.learner_bundles[idx]
        share = self.plan.actor_gpu_fraction if self.plan.colocated else 1.0
        return {
            "num_cpus": bundle["CPU"] * (0.5 if self.plan.colocated else 1.0),
            "num_gpus": bundle.get("GPU", 0.0) * share,
            "scheduling_strategy": PlacementGroupSchedulingStrategy(
                placement_group=self.learner_group, placement_group_bundle_index=idx),
        }

    def remove(self) -> None:
        from ray.util.placement_group import remove_placement_group

        for group in {id(g): g for g in (self.rollout_group, self.learner_group)}.values():
            remove_placement_group(group)


def reserve(cfg: PlacementConfig, name: str = "equirl") -> Placement:
    """Check capacity against the live cluster, then reserve both groups and wait for them.

    Raises UsageError before reserving anything if the cluster is too small, and a
    TimeoutError naming the group if Ray cannot grant it within ``cfg.ready_timeout_s``.
    """
    import ray
    from ray.util.placement_group import placement_group, remove_placement_group

    p = plan(cfg)
    check_capacity(cfg, p, ray.cluster_resources())
    rollout = placement_group(p.rollout_bundles, strategy=cfg.strategy, name=f"{name}-rollout")
    learner = rollout if p.colocated else placement_group(
        p.learner_bundles, strategy=cfg.strategy, name=f"{name}-learners")
    groups = {"rollout": rollout} if p.colocated else {"rollout": rollout, "learners": learner}
    refs = {n: g.ready() for n, g in groups.items()}
    _, pending = ray.wait(list(refs.values()), num_returns=len(refs), timeout=cfg.ready_timeout_s)
    if pending:
        stuck = [n for n, r in refs.items() if r in pending]
        for g in groups.values():
            remove_placement_group(g)
        raise TimeoutError(f"placement group(s) {stuck} for {name!r} not granted within "
                           f"{cfg.ready_timeout_s:g} s (placement.ready_timeout_s); bundles: "
                           f"{p.rollout_bundles} / {p.learner_bundles}")
    return Placement(plan=p, rollout_group=rollout, learner_group=learner)


def device_report() -> dict[str, Any]:
    """Where the calling Ray task/actor runs: node id, GPU ids, accelerator ids (for checks)."""
    import ray

    ctx = ray.get_runtime_context()
    return {"node_id": ctx.get_node_id(), "gpu_ids": [str(g) for g in ray.get_gpu_ids()],
            "accelerator_ids": dict(ctx.get_accelerator_ids())}


def from_dict(data: dict[str, Any] | None) -> PlacementConfig:
    """Typed config from a mapping (unknown keys rejected with the allowed ones)."""
    from base.config import build

    return build(PlacementConfig, data or {}, prefix="placement.")


# --- the training driver's placement (a ClinicalConfig -> actors' Ray options) ---------------

def requested_gpus(cfg: Any) -> tuple[float, float]:
    """GPUs asked for by ``(rollout workers, learners)`` of a ``ClinicalConfig``; a worker
    takes what its backend's spec says (vLLM: ``rollout.num_gpus`` x tensor-parallel size)."""
    r, lc = cfg.rollout, cfg.learner
    return r.num_workers * spec(r.backend).gpus_per_worker(r), lc.num_learners * lc.num_gpus


def check_gpu_capacity(cfg: Any, cluster: dict[str, float]) -> None:
    """UsageError if the actors would ask for more GPUs than ``cluster`` (``ray.cluster_resources()``).

    Checked before any actor is created, so a too-large request never waits on (or holds) a GPU.
    """
    rollout, learners = requested_gpus(cfg)
    have = float(cluster.get("GPU", 0.0))
    if rollout + learners <= have + 1e-9:
        return
    r, lc = cfg.rollout, cfg.learner
    backend = spec(r.backend)
    tp = (f" x {backend.tensor_parallel_field} {backend.tensor_parallel(r)}"
          if backend.tensor_parallel_field else "")
    hint = ("set rollout.num_gpus=0 and learner.num_gpus=0 to run on CPU" if have == 0 else
            "lower those fields or add GPU worker nodes (clusters/gpu.yaml)")
    raise UsageError(
        f"rollout.num_gpus / learner.num_gpus: asked for {rollout + learners:g} GPUs (rollout: "
        f"rollout.num_workers {r.num_workers} x rollout.num_gpus {r.num_gpus:g}{tp} = {rollout:g}; "
        f"learners: learner.num_learners {lc.num_learners} x learner.num_gpus {lc.num_gpus:g} = "
        f"{learners:g}) but the cluster has {have:g}; {hint}")


def placement_config(cfg: Any) -> PlacementConfig | None:
    """The :class:`PlacementConfig` of a ``ClinicalConfig``; None on CPU.

    No GPUs asked for (``rollout.num_gpus == learner.num_gpus == 0``) -> None: actors are
    scheduled as before, no placement group. Otherwise one bundle per engine (x tensor-parallel
    size) and one per learner, ``dedicated`` (disjoint GPUs) or ``colocated`` (engine i and
    learner i share GPU i) per ``cfg.placement``. GPU counts a layout cannot give raise a
    ConfigError naming the field (pure; no Ray).
    """
    r, lc = cfg.rollout, cfg.learner
    if r.num_gpus == 0 and lc.num_gpus == 0:
        return None
    backend = spec(r.backend)
    tp = backend.tensor_parallel(r)
    if cfg.placement == "colocated":
        for name, value in (("rollout.num_gpus", r.num_gpus), ("learner.num_gpus", lc.num_gpus)):
            require(value == 0.5, name, f"{value:g} with placement=colocated; engine i and learner i "
                    "share one GPU, so set rollout.num_gpus=0.5 and learner.num_gpus=0.5 "
                    "(or placement=dedicated for whole GPUs)")
        require(r.num_workers == lc.num_learners, "rollout.num_workers",
                f"{r.num_workers} with placement=colocated must equal learner.num_learners "
                f"({lc.num_learners}): engines and learners pair up on one GPU each")
        require(tp == 1, backend.tensor_parallel_field or "rollout.num_gpus",
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

    placement: Placement | None
    rollout_options: list[dict[str, Any]] | None
    learner_options: list[dict[str, Any]] | None

    def remove(self) -> None:
        if self.placement is not None:
            self.placement.remove()
            self.placement = None


def placement_for(cfg: Any, name: str = "equirl-clinical") -> ActorPlacement:
    """Reserve the placement group a ``ClinicalConfig`` asks for (:func:`reserve`: capacity
    check, then a wait bounded by the rollout/learner timeouts) and the options the driver
    creates rollout worker ``i`` / learner rank ``j`` with. On CPU: nothing reserved, options None."""
    pcfg = placement_config(cfg)
    if pcfg is None:
        return ActorPlacement(None, None, None)
    p = reserve(pcfg, name=name)
    return ActorPlacement(p, [p.engine_options(i) for i in range(pcfg.num_engines)],
                          [p.learner_options(j) for j in range(pcfg.num_learners)])


__all__ = [
    "ActorPlacement",
    "Placement",
    "PlacementConfig",
    "PlacementPlan",
    "check_capacity",
    "check_gpu_capacity",
    "device_report",
    "from_dict",
    "placement_config",
    "placement_for",
    "plan",
    "requested_gpus",
    "reserve",
]
