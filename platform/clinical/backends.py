"""Rollout backends: one registry entry per backend, each carrying its own :class:`BackendSpec`.

``rollout.backend`` is looked up here and nowhere else names a backend: the driver, the pool,
the placement and weight-sync code ask the spec (GPUs per worker, broadcast support, actor
class, runtime env, preflight). A backend's spec lives in the backend's own module and is
registered lazily as ``"module:SPEC"``, so this module (and ``--help``) imports no backend::

    hf    platform.clinical.hf_backend:SPEC      HF generate (this environment)
    vllm  platform.clinical.vllm_backend:SPEC    vLLM engines (GPU image, or .venv-vllm on CPU)

Adding a backend = a module with its backend class and ``SPEC``, plus one ``register`` line.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from base.errors import ConfigError
from base.registry import Registry


def _nothing(*_: Any) -> None:
    return None


def _one(_rollout: Any) -> int:
    return 1


def _unchanged(runtime_env: dict[str, Any] | None) -> dict[str, Any] | None:
    return runtime_env


@dataclass(frozen=True)
class BackendSpec:
    """Everything the driver needs to know about one rollout backend.

    ``cfg`` below is a ``platform.clinical.config.ClinicalConfig`` and ``rollout`` its
    ``RolloutConfig`` (typed loosely: config imports this module).
    """

    name: str
    """The ``rollout.backend`` value."""
    backend: type
    """The backend class: ``backend(**engine_kwargs(...))`` has ``generate`` / ``load_weights``."""
    worker: type
    """The Ray actor body (``generation.WorkerImpl`` or a subclass with more methods)."""
    engine_kwargs: Callable[[Any, str, int], dict[str, Any]]
    """``(cfg, model_path, num_options) -> backend kwargs`` (``num_options``: the most answer
    options of any training prompt)."""
    supports_broadcast: bool = False
    """Weights can arrive by a learner-rank-0 broadcast (``rollout.weight_sync: broadcast``)."""
    tensor_parallel: Callable[[Any], int] = _one
    """``rollout -> GPUs (placement bundles) per worker per rollout.num_gpus``."""
    tensor_parallel_field: str = ""
    """The config field behind :attr:`tensor_parallel` (named in GPU-capacity errors)."""
    config_section: str = ""
    """The ``rollout.<section>`` this backend reads (its fields are logged only when chosen)."""
    validate: Callable[[Any], None] = _nothing
    """``rollout -> None``: backend-specific config invariants (raise ConfigError)."""
    preflight: Callable[[Any, str], None] = _nothing
    """``(cfg, model_path) -> None``: checks before Ray starts (installed? model supported?)."""
    runtime_env: Callable[[dict[str, Any] | None], dict[str, Any] | None] = _unchanged
    """Ray ``runtime_env`` of a worker actor, given the placement's (e.g. another Python)."""

    def gpus_per_worker(self, rollout: Any) -> float:
        """GPUs one rollout worker takes: ``rollout.num_gpus`` x tensor-parallel size."""
        return rollout.num_gpus * self.tensor_parallel(rollout)


BACKENDS: Registry[BackendSpec] = Registry("rollout backend")
BACKENDS.register("hf", "platform.clinical.hf_backend:SPEC",
                  help="Hugging Face generate in each rollout worker (CPU or one GPU share)")
BACKENDS.register("vllm", "platform.clinical.vllm_backend:SPEC",
                  help="vLLM engine (GPU image, or the separate CPU venv)")


def spec(name: str) -> BackendSpec:
    """The spec of ``rollout.backend`` = ``name``; unknown names raise a ConfigError (exit 2)
    naming the field and the allowed values."""
    if name not in BACKENDS:
        raise ConfigError("rollout.backend", f"{name!r}; allowed: {', '.join(BACKENDS.names())}")
    return BACKENDS.get(name)


def broadcast_backends() -> list[str]:
    """Backends whose engines can receive a weight broadcast (for error messages)."""
    return [n for n in BACKENDS.names() if spec(n).supports_broadcast]


def rollout_device(cfg: Any) -> str:
    """Where rollout engines run: "cuda" when each worker asks for GPUs, else "cpu"."""
    return "cuda" if cfg.rollout.num_gpus > 0 else "cpu"


def preflight(cfg: Any, model_path: str) -> None:
    """The chosen backend's checks before Ray starts (an unknown backend is refused too)."""
    spec(cfg.rollout.backend).preflight(cfg, model_path)
