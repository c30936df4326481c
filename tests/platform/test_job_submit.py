"""End to end on a real Ray head started as ``make head`` starts it (PYTHONPATH = the repo, the
venv first on PATH): ``ray job submit -- python -m platform.train`` exactly as the design card
writes it (no ``--working-dir``), and ``ray job submit --working-dir . -- python -m platform.sweep``.

Starts its own head on free ports (dashboard on 127.0.0.1), submits a 2-iteration
group-robust PPO job on the rural hospital, then a 2-trial sweep (λ 0 and 0.3), waits for
SUCCEEDED each time, finds the MLflow runs (one parent + one child per trial for the sweep),
checks hygiene (HOME points at an empty dir for the head, the CLI and the job: nothing may
appear in ``~/.ray`` or ``~/ray_results``), and stops only the processes of that head (never a global ``ray stop``: other Ray
instances may be running on this machine).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path

import pytest
from test_loopback import LOOPBACK, listening, process_tree

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def _free_ports(n: int) -> list[int]:
    with ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


def _kill_head(head: subprocess.Popen, gcs_port: int) -> None:
    """Terminate the head's process tree and anything started for its GCS port."""
    import psutil

    def mine() -> list[psutil.Process]:
        procs = []
        try:
            procs = psutil.Process(head.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            pass
        marker = f":{gcs_port}"
        for p in psutil.process_iter(["cmdline"]):
            cmd = " ".join(p.info.get("cmdline") or [])
            if f"gcs-address=127.0.0.1{marker}" in cmd or f"--gcs_server_port={gcs_port}" in cmd \
                    or f"--port={gcs_port}" in cmd and "gcs_server" in cmd:
                procs.append(p)
        return procs

    victims = mine()
    head.send_signal(signal.SIGTERM)
    for p in victims:
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(victims, timeout=15)
    for p in alive + mine():
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    try:
        head.wait(timeout=15)
    except subprocess.TimeoutExpired:
        head.kill()


def _make_head_env(repo_root: Path) -> dict[str, str]:
    """The ``NAME=value`` assignments of the Makefile's ``head`` recipe that are not paths."""
    recipe = (repo_root / "Makefile").read_text().split("\nhead:", 1)[1].split("\n\n", 1)[0]
    env = dict(re.findall(r"\b(RAY_[A-Z_]+)=(\S+)", recipe))
    assert env.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER") == "0", recipe  # Ray on loopback
    return env


def _gcs_tree(gcs_port: int) -> set[int]:
    """Processes of the head that ``ray start`` daemonised (their command line names its GCS)."""
    import psutil

    pids: set[int] = set()
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info.get("cmdline") or [])
        if f":{gcs_port}" in cmd or f"--gcs_server_port={gcs_port}" in cmd:
            pids |= process_tree(p.pid)
    return pids


def _wait_http(url: str, timeout: float) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(1)
    raise TimeoutError(f"{url} did not answer within {timeout}s")


def _submit_and_wait(ray_bin: str, address: str, runtime_env: dict, cwd, env, module_args: list[str],
                     timeout: float = 420, working_dir: bool = True) -> str:
    """``ray job submit [--working-dir .] -- python -m <module_args>``; SUCCEEDED -> its logs."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    wd = ["--working-dir", "."] if working_dir else []
    submit = subprocess.run(
        [ray_bin, "job", "submit", "--address", address, *wd, "--no-wait",
         "--runtime-env-json", json.dumps(runtime_env), "--", "python", "-m", *module_args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=180)
    assert submit.returncode == 0, submit.stdout + submit.stderr
    job_id = re.search(r"(raysubmit_\w+)", submit.stdout + submit.stderr).group(1)
    client = JobSubmissionClient(address)
    deadline = time.time() + timeout
    status = client.get_job_status(job_id)
    while status not in {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}:
        assert time.time() < deadline, f"job {job_id} still {status}"
        time.sleep(2)
        status = client.get_job_status(job_id)
    logs = client.get_job_logs(job_id)
    assert status == JobStatus.SUCCEEDED, logs[-4000:]
    return logs


def test_ray_job_submit_trains_and_logs_to_mlflow(repo_root, run_env, tmp_path):
    import mlflow

    gcs, dash, client_port, nm, om, agent, agent_grpc, rt_agent, metrics = _free_ports(9)
    ray_bin = "ray"  # as a user types it, with the venv activated (PATH below)
    home = tmp_path / "home"
    home.mkdir()
    venv_bin = str(Path(sys.executable).parent)
    env = run_env(RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="disabled", HOME=str(home))
    env.pop("RAY_ADDRESS", None)
    env.update(VIRTUAL_ENV=str(Path(venv_bin).parent),  # what `source .venv/bin/activate` does
               PATH=os.pathsep.join([venv_bin, env.get("PATH", os.defpath)]))
    env.pop("PYTHONPATH", None)  # a user's shell has none; only the head gets the repo ...
    # ... as `make head` (and the image) sets it; `make head` also keeps Ray on loopback
    head_env = {**env, "PYTHONPATH": str(repo_root), **_make_head_env(repo_root)}
    log = (tmp_path / "head.log").open("w")
    head = subprocess.Popen(
        [ray_bin, "start", "--head", "--block", "--num-cpus", "2", "--node-ip-address", "127.0.0.1",
         "--dashboard-host", "127.0.0.1", "--include-dashboard", "true",
         "--port", str(gcs), "--dashboard-port", str(dash), "--ray-client-server-port", str(client_port),
         "--node-manager-port", str(nm), "--object-manager-port", str(om),
         "--dashboard-agent-listen-port", str(agent), "--dashboard-agent-grpc-port", str(agent_grpc),
         "--runtime-env-agent-port", str(rt_agent), "--metrics-export-port", str(metrics),
         "--object-store-memory", str(300 * 1024**2), "--disable-usage-stats"],
        cwd=tmp_path, env=head_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    address = f"http://127.0.0.1:{dash}"
    db = tmp_path / "mlflow.db"
    try:
        _wait_http(f"{address}/api/version", timeout=180)
        runtime_env = {
            "excludes": [".venv", ".venv-vllm", "ray_results", "mlruns", "*.db", ".git", "artifacts"],
            "env_vars": {"EQUIRL_STORAGE": str(tmp_path / "storage"), "RAY_AUTH_MODE": "disabled"},
        }
        # 4 batched hospitals x 50 decisions: whole episodes every iteration, so the
        # per-episode fairness and per-group metrics exist
        tiny = ["--set", "train_batch_size=200", "--set", "minibatch_size=100", "--set", "num_epochs=1",
                "--set", "eval_episodes=1", "--set", "hidden_sizes=[16]",
                "--set", "env_config.max_decisions=50", "--set", "num_envs_per_env_runner=4"]
        # the design card's form: no --working-dir (the head's PYTHONPATH has the repo)
        plain = {"env_vars": runtime_env["env_vars"]}
        logs = _submit_and_wait(ray_bin, address, plain, repo_root, env, [
            "platform.train", "group-robust-ppo", "--scenario", "rural", "--iterations", "2",
            "--lambda", "0.3", "--num-env-runners", "1", "--tracking-uri", f"sqlite:///{db}",
            "--experiment", "job-submit", *tiny], working_dir=False)
        assert "iter    2/2" in logs and "MLflow run" in logs
        # The sweep CLI on the same cluster, with --working-dir (still works): a Tune grid of
        # 2 trials, parent + child runs.
        logs = _submit_and_wait(ray_bin, address, runtime_env, repo_root, env, [
            "platform.sweep", "group-robust-ppo", "--scenarios", "rural", "--lambdas", "0,0.3",
            "--seeds", "1", "--iterations", "1", "--tracking-uri", f"sqlite:///{db}",
            "--experiment", "job-sweep", "--set", "num_env_runners=0", *tiny])
        # privacy: every server of the head (GCS, raylet, dashboard, agents, the workers
        # the jobs left) listens on 127.0.0.1 only
        socks = listening(process_tree(head.pid) | _gcs_tree(gcs))
        assert {gcs, dash} <= {p for _, p, _ in socks}, socks
        exposed = [s for s in socks if s[0] not in LOOPBACK]
        assert not exposed, f"the head listens beyond loopback: {exposed}"
    finally:
        _kill_head(head, gcs)
        log.close()

    assert not (home / ".ray").exists(), list((home / ".ray").rglob("*"))
    assert not (home / "ray_results").exists(), list((home / "ray_results").rglob("*"))
    mlf = mlflow.MlflowClient(f"sqlite:///{db}")
    (run,) = mlf.search_runs([mlf.get_experiment_by_name("job-submit").experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.params["algorithm"] == "group-robust-ppo" and run.data.params["scenario"] == "rural"
    steps = sorted(m.step for m in mlf.get_metric_history(run.info.run_id, "training_iteration"))
    assert steps == [1, 2]
    assert any(k.startswith("fairness/") for k in run.data.metrics)
    assert any(k.startswith("group/") and k.endswith("/return_per_capita") for k in run.data.metrics)
    assert any(k.startswith("robust/weight/") for k in run.data.metrics)
    assert Path(run.data.tags["equirl.checkpoint"]).is_dir()
    # the job's driver attached to the head started above (a driver that fell back to a
    # private local Ray would record that instance's own GCS address)
    assert run.data.tags["equirl.ray_gcs_address"] == f"127.0.0.1:{gcs}"

    runs = mlf.search_runs([mlf.get_experiment_by_name("job-sweep").experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and len(children) == 2
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parents[0].info.run_id}
    assert parents[0].data.tags["equirl.ray_gcs_address"] == run.data.tags["equirl.ray_gcs_address"]
    assert parents[0].data.tags["equirl.ray_node_id"] == run.data.tags["equirl.ray_node_id"]
    assert sorted(float(r.data.params["robust_lambda"]) for r in children) == [0.0, 0.3]
    assert all(r.info.status == "FINISHED" for r in runs)
    assert all("eval/return" in r.data.metrics for r in children)
