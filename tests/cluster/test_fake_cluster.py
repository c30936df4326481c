"""A fake multi-node Ray cluster from clusters/local.yaml, and a `ray job submit --working-dir .`
job across its nodes (tests/cluster/fake_cluster_job.py).

    RAY_FAKE_CLUSTER=1 ray start --head --autoscaling-config=clusters/local.yaml

Our own head on free ports with its own --temp-dir, in its own process group: torn down by
that group id, never with a global `ray stop` (other Ray instances may share the machine).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
RAY = str(Path(sys.executable).parent / "ray")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def own_processes(temp_dir: Path) -> list[int]:
    """PIDs whose command line mentions our --temp-dir (raylets, GCS, agents, workers)."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if str(temp_dir).encode() in (entry / "cmdline").read_bytes():
                    out.append(int(entry.name))
            except OSError:
                continue
    return out


def teardown(pgid: int, temp_dir: Path) -> None:
    for sig, grace in ((signal.SIGTERM, 3), (signal.SIGKILL, 10)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            pass
        for pid in own_processes(temp_dir):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and own_processes(temp_dir):
            time.sleep(0.5)
        if not own_processes(temp_dir):
            return


@pytest.fixture
def fake_cluster(tmp_path):
    # A short temp dir: Ray's unix socket paths must stay under 107 characters.
    temp_dir = Path(f"/tmp/eqfc-{os.getpid()}-{int(time.time()) % 100000}")
    gcs, dashboard, client, agent = free_ports(4)
    cfg = yaml.safe_load((REPO / "clusters" / "local.yaml").read_text())
    cfg["provider"]["gcs_address"] = f"127.0.0.1:{gcs}"
    config_path = tmp_path / "local.yaml"
    config_path.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "RAY_FAKE_CLUSTER": "1", "RAY_USAGE_STATS_ENABLED": "0",
           "RAY_AUTH_MODE": "disabled",
           # as the cluster image does (docker/Dockerfile: ENV PYTHONPATH, python on PATH), so
           # jobs need no --working-dir
           "PYTHONPATH": str(REPO),
           "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    env.pop("RAY_ADDRESS", None)
    head = subprocess.Popen(
        [RAY, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={gcs}",
         f"--dashboard-port={dashboard}", "--dashboard-host=127.0.0.1",
         f"--ray-client-server-port={client}", f"--dashboard-agent-listen-port={agent}",
         f"--autoscaling-config={config_path}", f"--temp-dir={temp_dir}", "--num-cpus=1",
         "--disable-usage-stats"],
        env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True)
    try:
        out, _ = head.communicate(timeout=120)
        assert head.returncode == 0, out
        yield {"gcs": f"127.0.0.1:{gcs}", "dashboard": f"http://127.0.0.1:{dashboard}",
               "env": env, "min_workers": cfg["available_node_types"]["gpu_worker"]["min_workers"]}
    finally:
        teardown(head.pid, temp_dir)
        assert not own_processes(temp_dir), "fake cluster processes survived teardown"


def alive_nodes(payload) -> int:
    """Count node records with state ALIVE anywhere in a state-API JSON reply."""
    if isinstance(payload, dict):
        own = 1 if payload.get("state") == "ALIVE" and "node_id" in payload else 0
        return own + sum(alive_nodes(v) for v in payload.values())
    if isinstance(payload, list):
        return sum(alive_nodes(v) for v in payload)
    return 0


def wait_for_workers(dashboard: str, count: int, timeout: float = 180) -> int:
    """Poll the dashboard's state API until head + ``count`` fake workers are alive."""
    import urllib.request

    deadline, alive = time.monotonic() + timeout, 0
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{dashboard}/api/v0/nodes?limit=100", timeout=10) as r:
                alive = alive_nodes(json.loads(r.read()))
        except (OSError, ValueError):
            alive = 0
        if alive >= count + 1:
            return alive
        time.sleep(2)
    return alive


def test_fake_cluster_scales_and_runs_a_job_across_nodes(fake_cluster):
    alive = wait_for_workers(fake_cluster["dashboard"], fake_cluster["min_workers"])
    assert alive >= 3, f"autoscaler brought up {alive - 1} fake worker nodes, expected >= 2"

    runner = ("import runpy; runpy.run_path('tests/cluster/fake_cluster_job.py', "
              "run_name='__main__')")
    excludes = json.dumps({"excludes": [".venv", ".venv-vllm", ".git", "mlruns", "ray_results",
                                        "mlflow.db", "**/__pycache__", ".hypothesis", ".pytest_cache",
                                        ".ruff_cache", "artifacts", "checkpoints"]})
    job = subprocess.run(
        [RAY, "job", "submit", "--address", fake_cluster["dashboard"], "--working-dir", ".",
         "--runtime-env-json", excludes, "--", sys.executable, "-c", runner],
        cwd=REPO, env=fake_cluster["env"], capture_output=True, text=True, timeout=300)
    lines = [ln for ln in job.stdout.splitlines() if ln.startswith("RESULT ")]
    useful = [ln for ln in (job.stdout + job.stderr).splitlines() if "packaging.py" not in ln]
    assert job.returncode == 0 and lines, "\n".join(useful[-80:])
    result = json.loads(lines[-1][len("RESULT "):])

    # one task per node, each importing this repo's `platform` from the job's working dir
    node_ids = {n["node_id"] for n in result["nodes"]}
    assert len(node_ids) >= 3
    for n in result["nodes"]:
        assert n["has_path"] and "working_dir_files" in n["platform_file"] and n["system"] == "Linux"

    # dedicated devices: engine and learner on different fake GPU nodes, one GPU each
    eng, lrn = result["devices"]["engine"], result["devices"]["learner"]
    assert eng["gpu_ids"] and lrn["gpu_ids"]
    assert (eng["node_id"], eng["gpu_ids"][0]) != (lrn["node_id"], lrn["gpu_ids"][0])
    assert eng["node_id"] != lrn["node_id"]
    assert result["cluster"]["GPU"] >= 2
    assert "asked for 16 GPUs" in result["too_many"] and result["too_many"].startswith("UsageError")


def test_the_design_card_command_on_the_fake_cluster(fake_cluster, tmp_path):
    """Issue 18 part 1, the cluster form: ``ray job submit -- python -m platform.train ...``
    with no --working-dir, submitted from outside the repo, against the multi-node cluster
    (the image's PYTHONPATH holds the repo); the run trains, ends FINISHED and attached to
    that cluster (its GCS port in the run's tags), not to a Ray of its own."""
    import mlflow

    wait_for_workers(fake_cluster["dashboard"], fake_cluster["min_workers"])
    db = tmp_path / "mlflow.db"
    runtime_env = json.dumps({"env_vars": {"EQUIRL_STORAGE": str(tmp_path / "storage")}})
    job = subprocess.run(
        [RAY, "job", "submit", "--address", fake_cluster["dashboard"], "--runtime-env-json",
         runtime_env, "--", "python", "-m", "platform.train", "group-robust-ppo", "--scenario",
         "rural", "--iterations", "2", "--num-env-runners", "1", "--tracking-uri", f"sqlite:///{db}",
         "--experiment", "cluster-job", "--set", "train_batch_size=200", "--set", "minibatch_size=100",
         "--set", "num_epochs=1", "--set", "eval_episodes=1", "--set", "hidden_sizes=[16]",
         "--set", "env_config.max_decisions=50", "--set", "num_envs_per_env_runner=4"],
        cwd=tmp_path, env=fake_cluster["env"], capture_output=True, text=True, timeout=300)
    out = job.stdout + job.stderr
    assert job.returncode == 0 and "iter    2/2" in out, out[-4000:]
    client = mlflow.MlflowClient(f"sqlite:///{db}")
    (run,) = client.search_runs([client.get_experiment_by_name("cluster-job").experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.tags["equirl.ray_gcs_address"].rsplit(":", 1)[1] == fake_cluster["gcs"].rsplit(":", 1)[1]
