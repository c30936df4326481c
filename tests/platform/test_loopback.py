"""Servers the project starts listen on 127.0.0.1 only (privacy: nothing reachable from the network).

The private local Ray of every training command (``platform.cluster.init_ray``), here the test
session's. The Ray head of ``make head`` and the MLflow UI have their checks beside the tests
that start them (``test_job_submit.py``, ``test_ui_browser.py``), through :func:`listening`.
"""

from __future__ import annotations

LOOPBACK = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}


def listening(pids: set[int]) -> list[tuple[str, int, str]]:
    """(address, port, process name) of every listening TCP socket of ``pids``."""
    import psutil

    out = []
    for conn in psutil.net_connections("tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.pid in pids:
            try:
                name = psutil.Process(conn.pid).name()
            except psutil.NoSuchProcess:
                continue
            out.append((conn.laddr.ip, conn.laddr.port, name))
    return out


def process_tree(pid: int) -> set[int]:
    import psutil

    try:
        root = psutil.Process(pid)
        return {pid} | {p.pid for p in root.children(recursive=True)}
    except psutil.NoSuchProcess:
        return set()


def test_local_ray_listens_on_loopback_only(ray_session):
    import os

    ray = ray_session
    ctx = ray.get_runtime_context()
    host, port = ctx.gcs_address.rsplit(":", 1)
    assert host == "127.0.0.1" and ray.util.get_node_ip_address() == "127.0.0.1"
    # Ray's processes (GCS, raylet, dashboard and runtime-env agents, workers) are this
    # driver's descendants
    socks = listening(process_tree(os.getpid()))
    ports = {p for _, p, _ in socks}
    names = {n for _, _, n in socks}
    # the survey sees Ray's servers (else the check below would pass on nothing)
    assert int(port) in ports, socks
    assert {"gcs_server", "raylet"} <= names, socks
    exposed = [s for s in socks if s[0] not in LOOPBACK]
    assert not exposed, f"listening beyond loopback: {exposed}"
