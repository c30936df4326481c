"""``python -m platform.ui [--port 5000] [--tracking-uri URI]``: the MLflow UI on the project's store.

Starts ``mlflow server --host 127.0.0.1`` over the project's tracking store (default
``sqlite:///<repo>/mlflow.db``) with the same explicit artifact root the trainers use
(``<db dir>/mlruns``), one worker, and ``MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false`` (no job
runner: nothing left behind in /dev/shm). Waits until ``/health`` answers, prints the URL
(and the runs-table URL of ``--experiment``, if given), then serves until Ctrl-C.

Useful routes (MLflow 3.17): runs table ``/#/experiments/<id>/runs?workflowType=machine_learning``
(the bare experiment route opens an empty GenAI page), compare
``/#/compare-runs?runs=["id1","id2"]&experiments=["<id>"]``, one run's charts
``/#/experiments/<id>/runs/<run>/model-metrics``. Child (trial) runs are collapsed under the
sweep's parent run in the table: expand it with the ``+`` next to the parent.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from platform.cli import parser, run_main

from base.errors import UsageError

HOST = "127.0.0.1"  # privacy: never bind other interfaces


@dataclass
class UIServer:
    """A running ``mlflow server`` child process."""

    proc: subprocess.Popen
    url: str

    def stop(self, timeout: float = 15.0) -> None:
        """Terminate the server's process group (uvicorn workers included)."""
        if self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=timeout)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=timeout)


def server_command(uri: str, port: int, workers: int = 1) -> list[str]:
    """The ``mlflow server`` command line for store ``uri`` (sqlite/postgres/mysql)."""
    from platform.tracking import artifact_root_for

    cmd = [sys.executable, "-m", "mlflow", "server", "--host", HOST, "--port", str(port),
           "--backend-store-uri", uri, "--workers", str(workers)]
    root = artifact_root_for(uri)
    if root:
        cmd += ["--default-artifact-root", root, "--no-serve-artifacts"]
    return cmd


def resolve_store(uri: str | None) -> str:
    """The backend store to serve; a server URI is refused (it is already a UI)."""
    from platform.tracking import check_tracking_uri, default_tracking_uri

    uri = uri or default_tracking_uri()
    if uri.startswith(("http://", "https://")):
        raise UsageError(f"--tracking-uri: {uri} is already an MLflow server; open it in a browser")
    check_tracking_uri(uri)
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///"):])
        if not db.exists():
            print(f"note: {db} does not exist yet; the UI starts with an empty store", file=sys.stderr)
    return uri


def start(uri: str | None = None, port: int = 5000, *, timeout: float = 120.0,
          log_path: Path | None = None) -> UIServer:
    """Start the server and wait for ``/health``; UsageError if it dies or never answers."""
    uri = resolve_store(uri)
    check_port_free(port)
    env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    log = open(log_path, "wb") if log_path else subprocess.DEVNULL  # noqa: SIM115
    proc = subprocess.Popen(server_command(uri, port), env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    server = UIServer(proc, f"http://{HOST}:{port}")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            hint = f"; see {log_path}" if log_path else " (is the port in use? try --port)"
            raise UsageError(f"--port: mlflow server exited with code {proc.returncode}{hint}")
        try:
            with urllib.request.urlopen(server.url + "/health", timeout=2) as resp:  # noqa: S310
                if resp.status == 200:
                    return server
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    server.stop()
    raise UsageError(f"mlflow server did not answer on {server.url} within {timeout:.0f} s")


def check_port_free(port: int) -> None:
    """UsageError if something already listens on 127.0.0.1:``port`` (its /health would lie)."""
    import socket

    with socket.socket() as s:
        try:
            s.bind((HOST, port))
        except OSError:
            raise UsageError(f"--port: {HOST}:{port} is already in use; pick another with --port") from None


def _raise_interrupt(signum, frame):  # SIGTERM -> same clean stop as Ctrl-C
    raise KeyboardInterrupt


def experiment_url(base: str, experiment_id: str) -> str:
    return f"{base}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


def main(argv: list[str]) -> int:
    p = parser("python -m platform.ui", __doc__.split("\n\n")[0])
    p.add_argument("--port", type=int, default=5000, help="port on 127.0.0.1 (default 5000)")
    p.add_argument("--tracking-uri", default=None,
                   help="store to serve (default sqlite:///<repo>/mlflow.db)")
    p.add_argument("--experiment", default=None, help="also print this experiment's runs-table URL")
    a = p.parse_args(argv)
    if not 0 < a.port < 65536:
        raise UsageError(f"--port: {a.port} is not a TCP port (1-65535)")
    signal.signal(signal.SIGTERM, _raise_interrupt)
    server = start(a.tracking_uri, a.port)
    print(f"MLflow UI: {server.url}", flush=True)
    if a.experiment:
        import mlflow

        exp = mlflow.MlflowClient(server.url).get_experiment_by_name(a.experiment)
        if exp is None:
            print(f"note: no experiment named {a.experiment!r} yet", file=sys.stderr)
        else:
            print(f"runs: {experiment_url(server.url, exp.experiment_id)}", flush=True)
    print("Ctrl-C stops the server.", flush=True)
    try:
        return server.proc.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(run_main(main))
