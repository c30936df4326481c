"""The driver-side rollout pool: thin Ray actor shells over one backend, sharding and retries.

:class:`RolloutPool` starts ``num_workers`` actors of the backend's spec (:mod:`.backends`:
its actor class and runtime env), shards each :class:`~platform.clinical.generation.GenerationRequest`
over them, retries a shard on a restarted worker (``max_restarts``) after re-sending the latest
weights, and merges the results. Weight sync goes through :mod:`.weight_sync` (object store, or a
learner-rank-0 broadcast where the backend supports it). The request/result types and the worker
body live in :mod:`.generation`; the backends in :mod:`.hf_backend` and :mod:`.vllm_backend`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from platform.clinical.backends import spec
from platform.clinical.generation import GenerationRequest, GenerationResult
from typing import Any


class RolloutWorkerLost(RuntimeError):
    """A rollout worker died or hung and could not be replaced; the message names it."""


class GenerateTimeout(RolloutWorkerLost):
    """A rollout worker did not answer ``generate`` in time and the retries are used up."""


@dataclass
class RolloutPool:
    """Driver-side handle over ``num_workers`` rollout actors.

    ``generate(req)`` shards the prompts, and if a worker dies mid-call waits for Ray to
    restart it (up to ``max_restarts``), re-sends the latest weights and retries that shard,
    so no prompt of the step is lost. A worker that does not answer within ``timeout_s``
    (stopped, hung) is killed and replaced the same way. Once the retries or Ray's restarts are
    used up, :class:`GenerateTimeout` / :class:`RolloutWorkerLost` name the worker.
    """

    backend: str
    "``rollout.backend``: the registry name of the backend (:mod:`.backends`)."
    backend_kwargs: dict[str, Any]
    "Arguments of the backend class (the spec's ``engine_kwargs``)."
    num_workers: int = 2
    num_cpus: float = 0.25
    num_gpus: float = 0.0
    max_restarts: int = 2
    timeout_s: float = 600.0
    tensor_parallel_size: int = 1
    "Ranks per worker in a broadcast group (the spec's tensor parallelism)."
    actor_options: list[dict[str, Any]] | None = None
    "Per-worker Ray options (``placement.Placement.engine_options(i)``); None = num_cpus/num_gpus."
    workers: list[Any] = field(default_factory=list, init=False)
    restarts: int = field(default=0, init=False)
    weights_source: Callable[[], list[tuple[str, Any]]] | None = None
    "Current full weights for a restarted worker when weights travel by broadcast (no object-store copy)."
    _weights_ref: Any = field(default=None, init=False)
    _version: int = field(default=-1, init=False)
    _group_transport: str | None = field(default=None, init=False)
    _group_restarts: int = field(default=0, init=False)

    def start(self, wait: bool = True) -> RolloutPool:
        """Create the actors; ``wait=False`` returns at once (call :meth:`wait_ready`).

        The actor class and its runtime env come from the backend's spec (e.g. vLLM engines
        are a worker with broadcast weight sync, run under ``EQUIRL_VLLM_PYTHON`` when set).
        """
        import ray

        cls = ray.remote(spec(self.backend).worker)
        self.workers = [
            cls.options(**self._resources(k), max_restarts=self.max_restarts, max_task_retries=0,
                        name=None).remote(self.backend, self.backend_kwargs)
            for k in range(self.num_workers)
        ]
        if wait:
            self.wait_ready()
        return self

    def _resources(self, k: int) -> dict[str, Any]:
        """Ray options placing worker ``k``: its placement-group bundle, or plain resources,
        plus the backend's runtime env."""
        if self.actor_options is None:
            opts: dict[str, Any] = {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus}
        else:
            opts = {key: v for key, v in self.actor_options[k].items() if v is not None}
        env = spec(self.backend).runtime_env(opts.get("runtime_env"))
        if env:
            opts["runtime_env"] = env
        return opts

    def wait_ready(self) -> None:
        import ray

        ray.get([w.version.remote() for w in self.workers], timeout=self.timeout_s)

    def named(self) -> dict[str, Any]:
        """``{"rollout-worker-k": actor}``: the names timeouts and errors use."""
        return {f"rollout-worker-{k}": w for k, w in enumerate(self.workers)}

    def load_weights(self, named_tensors: list[tuple[str, Any]], version: int):
        """Object-store sync: one ``ray.put``, every worker loads it (vLLM: ``reload_weights``).

        Returns the :class:`~platform.clinical.weight_sync.SyncResult`; a worker that does not
        finish within ``timeout_s`` is named in the WeightSyncTimeout."""
        from platform.clinical.weight_sync import sync_via_object_store

        result, self._weights_ref = sync_via_object_store(self.named(), named_tensors, version,
                                                          self.timeout_s)
        self._version = version
        return result

    # -- broadcast weight sync (vLLM engines; NCCL on GPUs, gloo on CPU) --------------------
    def init_broadcast(self, learners: Any, transport: str) -> int:
        """Form the group {learner rank 0} + every engine worker (again after a restart);
        ``transport``: "nccl" (GPU engines) or "gloo" (CPU)."""
        from platform.clinical.weight_sync import init_broadcast_group_for

        world = init_broadcast_group_for(learners.actors[0], self.named(),
                                         self.tensor_parallel_size, transport, self.timeout_s)
        self._group_transport = transport
        return world

    def broadcast_weights(self, learners: Any, version: int, transport: str):
        """Learner rank 0 broadcasts its weights into every engine (other learner ranks join a
        ZeRO-3 gather). A restarted engine is not in the old group, so the group is formed
        anew first. Returns the SyncResult; a stuck learner or engine is named on timeout."""
        from platform.clinical.weight_sync import broadcast_weights

        if self._group_transport != transport or self._group_restarts != self.restarts:
            self.init_broadcast(learners, transport)
            self._group_restarts = self.restarts
        result = broadcast_weights(learners.actors[0], self.named(), version, self.timeout_s,
                                   transport, peers=learners.actors[1:])
        self._version, self._weights_ref = version, None
        return result

    def generate(self, req: GenerationRequest) -> GenerationResult:
        import sys

        import ray
        from ray.exceptions import (
            ActorDiedError,
            ActorUnavailableError,
            GetTimeoutError,
            RayActorError,
        )

        shards = req.shard(len(self.workers))
        pending = {k: self.workers[k].generate.remote(sub) for k, (_, sub) in enumerate(shards)}
        results: dict[int, GenerationResult] = {}
        attempts = 0
        while pending:
            k, ref = next(iter(pending.items()))
            try:
                results[k] = ray.get(ref, timeout=self.timeout_s)
                del pending[k]
            except (RayActorError, ActorDiedError, ActorUnavailableError, GetTimeoutError) as exc:
                stuck = isinstance(exc, GetTimeoutError)
                attempts += 1
                if attempts > self.max_restarts * len(self.workers):
                    if stuck:
                        raise GenerateTimeout(
                            f"rollout-worker-{k}: generate did not return within "
                            f"rollout.timeout_s={self.timeout_s:g} s and the restarts are used up "
                            f"(rollout.max_restarts={self.max_restarts})") from None
                    raise
                if stuck:  # stopped or hung: replace it as if it had died
                    print(f"rollout-worker-{k}: no answer to generate within {self.timeout_s:g} s;"
                          " killing it for a restart", file=sys.stderr, flush=True)
                    ray.kill(self.workers[k], no_restart=False)
                self.restarts += 1
                try:
                    self._resync(k)
                except RayActorError as dead:  # Ray's restarts of the actor are used up
                    raise RolloutWorkerLost(
                        f"rollout-worker-{k}: {'hung' if stuck else 'died'} in generate and "
                        f"could not be restarted (rollout.max_restarts={self.max_restarts}): "
                        f"{type(dead).__name__}") from dead
                pending[k] = self.workers[k].generate.remote(shards[k][1])
        return GenerationResult.concat([results[k] for k in range(len(shards))])

    def _resync(self, k: int) -> None:
        """Wait for worker ``k``'s restart, then give it the latest weights."""
        import ray
        from ray.exceptions import RayActorError

        deadline = time.monotonic() + self.timeout_s
        if self._weights_ref is None and self._version >= 0 and self.weights_source is not None:
            self._weights_ref = ray.put(self.weights_source())  # broadcast mode: fetch them now
        while True:
            try:
                if self._weights_ref is not None:
                    ray.get(self.workers[k].load_weights.remote(self._weights_ref, self._version),
                            timeout=self.timeout_s)
                else:
                    ray.get(self.workers[k].version.remote(), timeout=self.timeout_s)
                return
            except RayActorError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def pids(self) -> list[int]:
        import ray

        return ray.get([w.pid.remote() for w in self.workers], timeout=self.timeout_s)

    def shutdown(self) -> None:
        import ray

        for w in self.workers:
            ray.kill(w, no_restart=True)
        self.workers = []
