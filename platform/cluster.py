"""Ray connection in one place: environment hygiene and worker import paths.

* Nothing lands in ``~/.ray`` or ``~/ray_results``: usage stats and token auth are off and
  every storage path is explicit (``storage_root()``).
* Workers must import this repo's ``platform`` package (it shadows the stdlib module):
  locally we put the repo on the workers' PYTHONPATH through the runtime env; under
  ``ray job submit --working-dir .`` Ray already does (the job's working dir is the repo).
* Run outputs of both tracks live under ``storage_root()``: Tune/RLlib results, sweeps and
  checkpoints (:func:`checkpoint_root`).
* ``init_ray()`` connects to ``address`` or ``RAY_ADDRESS`` (a job driver on a cluster),
  otherwise starts a private local instance (``address="local"``), never silently joining
  an unrelated cluster started on the same machine.
* A private local instance listens on 127.0.0.1 only (:func:`loopback_only`): Ray 2.60
  otherwise binds its GCS, raylet and agent servers on all interfaces.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]

HYGIENE_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_AUTH_MODE": "disabled",
    "RAY_DEDUP_LOGS": "1",
    # No TUNE_RESULT_DIR / RAY_AIR_LOCAL_CACHE_DIR: Ray 2.60's Tuner.fit raises
    # DeprecationWarning when either is set. Pass storage_root() explicitly instead
    # (Tune: RunConfig(storage_path=...); RLlib outside Tune: platform.allocation.rllib.build_algo).
    "DS_ACCELERATOR": os.environ.get("DS_ACCELERATOR", "cpu"),
    "TOKENIZERS_PARALLELISM": "false",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
}


def apply_hygiene() -> None:
    """Set the environment defaults above (without overriding explicit user settings)."""
    for key, value in HYGIENE_ENV.items():
        os.environ.setdefault(key, value)


def storage_root() -> Path:
    """Where Tune/RLlib results and checkpoints go (``EQUIRL_STORAGE`` or repo/ray_results)."""
    return Path(os.environ.get("EQUIRL_STORAGE", REPO_ROOT / "ray_results")).resolve()


def checkpoint_root(track: str, experiment: str, run_name: str) -> Path:
    """Where a run's checkpoints go, for every track:
    ``<storage_root()>/checkpoints/<track>/<experiment>/<run_name>``."""
    return storage_root() / "checkpoints" / track / experiment / run_name


def worker_runtime_env(extra_env: dict[str, str] | None = None) -> dict[str, Any]:
    """Runtime env that lets workers import ``platform``/``envs``/``algorithms`` from the repo."""
    pythonpath = os.pathsep.join(
        p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p
    )
    env = {"PYTHONPATH": pythonpath, **{k: os.environ[k] for k in HYGIENE_ENV if k in os.environ}}
    env.update(extra_env or {})
    return {"env_vars": env}


# Ray's "no cluster" switch (ray/_private/ray_constants.py, ENABLE_RAY_CLUSTER).
SINGLE_NODE_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


@contextmanager
def loopback_only() -> Iterator[None]:
    """Start Ray's servers on 127.0.0.1 only, for a single-machine instance.

    Ray 2.60 turns a node address of 127.0.0.1 into the machine's routable address
    (``services.resolve_ip_for_localhost``), then binds the GCS, raylet and object-manager
    gRPC servers on all interfaces, and the dashboard and runtime-env agents on that
    address. Measured on a head started with ``--node-ip-address 127.0.0.1``: 6 of 7
    listening sockets were not loopback. Its single-machine mode (``SINGLE_NODE_ENV=0``,
    meant for macOS and Windows) keeps the node at 127.0.0.1, and every server then binds
    loopback. The processes Ray starts inherit the variable. The driver read the constant
    when it imported ray, so it is set on the module here and restored afterwards. Never
    for a multi-node cluster, whose nodes must reach each other; an explicit user setting
    wins.
    """
    from ray._private import ray_constants

    if SINGLE_NODE_ENV in os.environ:  # the user's choice
        yield
        return
    saved = ray_constants.ENABLE_RAY_CLUSTER
    os.environ[SINGLE_NODE_ENV] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved
        os.environ.pop(SINGLE_NODE_ENV, None)


def init_ray(address: str | None = None, num_cpus: int | None = None, **kwargs: Any):
    """Start or connect to Ray with hygiene and import paths; idempotent."""
    apply_hygiene()
    import ray

    if ray.is_initialized():
        return ray.get_runtime_context()
    address = address or os.environ.get("RAY_ADDRESS")
    if address and address != "local":
        # A job driver (ray job submit) already runs with the repo as its working dir.
        return ray.init(address=address, log_to_driver=kwargs.pop("log_to_driver", True), **kwargs)
    kwargs.setdefault("include_dashboard", False)
    kwargs.setdefault("log_to_driver", False)
    with loopback_only():
        return ray.init(
            address="local",
            num_cpus=num_cpus,
            runtime_env=kwargs.pop("runtime_env", None) or worker_runtime_env(),
            **kwargs,
        )


def ray_run_info() -> dict[str, str]:
    """Which Ray cluster this driver is attached to, for a run's tags (``equirl.ray_*``):
    the GCS address and the driver's node id. Under ``ray job submit`` they name the head the
    job was submitted to; a driver that started its own local Ray shows a different address."""
    import ray

    ctx = ray.get_runtime_context()
    return {"ray_gcs_address": str(ctx.gcs_address), "ray_node_id": str(ctx.get_node_id())}
