"""Cluster launcher YAMLs validated offline with Ray's own config code, and the Dockerfiles
linted with hadolint (a parse check if hadolint is unavailable)."""

from __future__ import annotations

import copy
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


def load(name: str) -> dict:
    return yaml.safe_load((REPO / "clusters" / name).read_text())


def prepared(cfg: dict) -> dict:
    from ray.autoscaler._private.util import prepare_config, validate_config

    out = prepare_config(copy.deepcopy(cfg))
    validate_config(out)
    return out


def test_gpu_yaml_is_a_valid_aws_cluster_with_gpu_workers():
    cfg = prepared(load("gpu.yaml"))
    assert cfg["provider"]["type"] == "aws"
    head = cfg["available_node_types"][cfg["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0 and head["resources"]["CPU"] == 0
    gpu = cfg["available_node_types"]["gpu_worker"]
    assert gpu["resources"]["GPU"] >= 1 and gpu["min_workers"] >= 1
    assert gpu["node_config"]["InstanceType"].startswith(("g5", "g6", "p4", "p5"))
    assert cfg["docker"]["image"] and "--gpus all" in cfg["docker"]["worker_run_options"]
    assert "." in cfg["file_mounts"].values()
    assert any("mlflow server" in c and "127.0.0.1" in c for c in cfg["head_setup_commands"])
    assert any("import vllm" in c for c in cfg["worker_setup_commands"])
    assert any("--dashboard-host=127.0.0.1" in c for c in cfg["head_start_ray_commands"])


@pytest.mark.parametrize("breakage", [
    lambda c: c["available_node_types"]["gpu_worker"]["resources"].update(GPU="four"),
    lambda c: c.update(max_workers=-1),
    lambda c: c.update(head_node_type="missing"),
    lambda c: c["available_node_types"]["gpu_worker"].update(node_typo={}),
])
def test_gpu_yaml_breakage_is_caught_by_ray_validation(breakage):
    cfg = load("gpu.yaml")
    breakage(cfg)
    with pytest.raises(Exception):  # noqa: B017 - jsonschema.ValidationError or ValueError
        prepared(cfg)


def test_local_yaml_is_a_valid_fake_multinode_cluster():
    from ray.autoscaler._private.util import validate_config

    cfg = load("local.yaml")
    validate_config(cfg)  # complete as written: Ray 2.60 ships no fake_multinode defaults file
    assert cfg["provider"]["type"] == "fake_multinode"
    workers = cfg["available_node_types"]["gpu_worker"]
    assert workers["min_workers"] >= 2 and workers["resources"]["GPU"] == 1
    assert cfg["head_node_type"] == "ray.head.default"  # the name the fake provider uses


DOCKERFILES = [REPO / "docker" / "Dockerfile", REPO / "docker" / "Dockerfile.cpu"]


def hadolint() -> str | None:
    local = Path(sys.executable).parent / "hadolint"
    return str(local) if local.exists() else shutil.which("hadolint")


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_lints_clean(path, tmp_path):
    exe = hadolint()
    if exe is None:  # parse check: every instruction is a known Dockerfile keyword
        keywords = {"FROM", "ARG", "ENV", "RUN", "COPY", "WORKDIR", "ENTRYPOINT", "CMD", "LABEL",
                    "USER", "EXPOSE"}
        logical = path.read_text().replace("\\\n", " ").splitlines()
        words = [ln.split()[0] for ln in logical if ln.strip() and not ln.lstrip().startswith("#")]
        assert words[0] == "FROM" and set(words) <= keywords, words
        return  # hadolint not installed: the parse check above is the lint
    out = subprocess.run([exe, "--no-color", str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    # The linter does fail on a bad file (so a clean result above means something).
    bad = tmp_path / "Dockerfile"
    bad.write_text(path.read_text().replace("# hadolint ignore=DL3008\n", "") + "\nRUN cd /tmp\n")
    out = subprocess.run([exe, "--no-color", str(bad)], capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "DL3003" in out.stdout


def test_gpu_dockerfile_pins_the_stack():
    text = DOCKERFILES[0].read_text()
    assert text.startswith("#") and "FROM nvidia/cuda:" in text
    assert "ARG VLLM_VERSION=0.33.0" in text and "tools/deps.py" in text
    deps = subprocess.run([sys.executable, str(REPO / "tools" / "deps.py")], capture_output=True,
                          text=True, check=True).stdout
    assert "deepspeed==0.19.8" in deps and "ray[default,rllib,train,tune]==2.60.0" in deps
