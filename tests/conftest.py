"""Shared fixtures: one local Ray for the session, isolated MLflow stores, hygiene env.

Tests run from the repo root (``python -m pytest`` or plain ``pytest``; see ../conftest.py).
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Hygiene before anything imports ray: nothing in ~/.ray or ~/ray_results.
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def session_tmp(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("session")


@pytest.fixture(scope="session")
def ray_session(session_tmp):
    """One private local Ray instance (2 CPUs) shared by the whole test session."""
    os.environ["EQUIRL_STORAGE"] = str(session_tmp / "ray_results")
    from platform.cluster import init_ray

    import ray

    init_ray(num_cpus=2, object_store_memory=400 * 1024**2)
    yield ray
    ray.shutdown()


@pytest.fixture
def mlflow_uri(tmp_path) -> str:
    """A fresh sqlite MLflow store in the test's tmp dir (artifacts beside it)."""
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


@pytest.fixture
def free_port() -> int:
    return find_free_port()


def find_free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def python_exe() -> str:
    return sys.executable


def subprocess_env(**extra: str) -> dict[str, str]:
    """Environment for ``python -m platform.*`` subprocesses run from the repo root."""
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env.update(extra)
    return env


@pytest.fixture
def run_env():
    return subprocess_env


@pytest.fixture
def torch_one_thread():
    """Tiny models: extra intra-op threads only contend on a loaded 2-core box."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
