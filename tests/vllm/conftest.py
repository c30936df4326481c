"""Tests of the vLLM rollout backend, run inside the separate vLLM CPU environment.

``.venv-vllm/bin/python -m pytest tests/vllm`` (made by ``make install-vllm``) runs the
engine tests; in the main environment (no vllm) only ``test_vllm_env.py`` is collected,
and it runs that command as a subprocess (skipping with a message if .venv-vllm is absent).
"""

from __future__ import annotations

import importlib.util
import os

import pytest

_SPEC = importlib.util.find_spec("vllm")
# A real package, not this directory seen as a namespace package named "vllm".
HAVE_VLLM = _SPEC is not None and _SPEC.origin is not None
if not HAVE_VLLM:
    collect_ignore_glob = ["test_engine*.py", "test_grpo*.py", "test_broadcast*.py"]

# One engine core per process, no multiprocessing; 1 GB of KV cache is plenty here.
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory):
    from tiny_llama import build_tiny_llama  # tests/vllm is on sys.path (rootdir conftest)

    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def backend_kwargs(tiny_llama):
    return {"model_path": str(tiny_llama), "max_model_len": 256, "dtype": "float32",
            "device": "cpu", "seed": 0, "max_num_seqs": 32}


@pytest.fixture(scope="session")
def engine_pool(ray_session, backend_kwargs):
    """One vLLM rollout worker (a Ray actor) for the whole session."""
    from platform.clinical.rollout import RolloutPool

    pool = RolloutPool(backend="vllm", backend_kwargs=backend_kwargs, num_workers=1,
                       num_cpus=1, max_restarts=1, timeout_s=300).start()
    yield pool
    pool.shutdown()
