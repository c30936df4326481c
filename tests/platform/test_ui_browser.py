"""The MLflow UI (``python -m platform.ui``) driven in headless Debian Chromium via Playwright.

Chromium comes from ``make install-browser`` (apt: chromium, chromium-driver); Playwright
uses it through ``executable_path`` (never ``playwright install``). Screenshots go to the
test's tmp dir and are copied to ``test-artifacts/`` (git-ignored) for CI to keep.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]

if not CHROMIUM.exists():
    pytest.skip(f"{CHROMIUM} is absent: install it with `make install-browser` "
                "(apt-get install chromium chromium-driver)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (dev extra) not installed")

CHROME_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--disable-dev-shm-usage"]
WAIT_MS = 90_000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(repo_root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(repo_root), env.get("PYTHONPATH")) if p)
    return env


def _run_with_artifacts(uri: str) -> tuple[str, str]:
    """A run (own experiment) with what an allocation training run logs beside its metrics:
    two per-group tables, the figure and the summary (platform.allocation.artifacts, real rule
    episodes). Returns (experiment id, run id)."""
    from platform.allocation import artifacts
    from platform.allocation.config import HeuristicConfig
    from platform.allocation.evaluate import evaluate_rule
    from platform.tracking import artifact_root_for

    import mlflow

    from base.config import build

    cfg = build(HeuristicConfig, {"policy": "triage", "scenario": "rural", "eval_episodes": 2})
    episodes = evaluate_rule("triage", cfg, 2)
    experiment_id = mlflow.MlflowClient(uri).create_experiment(
        "ui-artifacts", artifact_location=artifact_root_for(uri))
    before = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        with mlflow.start_run(experiment_id=experiment_id, run_name="with-artifacts") as run:
            tables = [artifacts.log_evaluation(episodes, step) for step in (1, 2)]
            artifacts.log_summary("triage on rural", tables, episodes)
    finally:
        mlflow.set_tracking_uri(before)
    return experiment_id, run.info.run_id


@pytest.fixture(scope="module")
def ui(tmp_path_factory, repo_root):
    """A sweep-shaped store served by the real ``python -m platform.ui`` on a free port."""
    from test_report_fixtures import make_sweep

    tmp = tmp_path_factory.mktemp("ui")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    ids = make_sweep(uri, "ui-sweep", scenarios=("urban",), lambdas=(0.0, 0.3), seeds=2,
                     duplicate_step=False)
    ids["artifacts_experiment"], ids["artifacts_run"] = _run_with_artifacts(uri)
    proc = subprocess.Popen(
        [sys.executable, "-m", "platform.ui", "--port", str(_free_port()), "--tracking-uri", uri],
        cwd=repo_root, env=_env(repo_root), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, start_new_session=True)
    url, lines = None, []
    for line in proc.stdout:  # the URL is printed once /health answers
        lines.append(line)
        if line.startswith("MLflow UI: "):
            url = line.split(": ", 1)[1].strip()
            break
    assert url and url.startswith("http://127.0.0.1:"), "".join(lines)
    yield {"url": url, "pid": proc.pid, **ids}
    os.killpg(proc.pid, signal.SIGINT)  # platform.ui stops its mlflow server on Ctrl-C
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("chromium")
    os.environ.setdefault("XDG_CONFIG_HOME", str(tmp / "xdg"))
    with sync_api.sync_playwright() as pw:
        # Playwright gives each launch a fresh temporary profile (its own user-data-dir).
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROME_ARGS)
        pg = browser.new_page(viewport={"width": 1600, "height": 1000})
        pg.set_default_timeout(WAIT_MS)
        yield pg
        browser.close()


def _shot(pg, tmp_path: Path, repo_root: Path, name: str) -> Path:
    path = tmp_path / name
    pg.screenshot(path=str(path), full_page=True)
    keep = repo_root / "test-artifacts"
    keep.mkdir(exist_ok=True)
    shutil.copy(path, keep / name)
    assert path.stat().st_size > 10_000  # a rendered page, not an empty image
    return path


def test_ui_listens_on_loopback_only(ui):
    """Privacy: the MLflow server (and its uvicorn workers) is reachable from this machine only."""
    from test_loopback import LOOPBACK, listening, process_tree

    socks = listening(process_tree(ui["pid"]))
    port = int(ui["url"].rsplit(":", 1)[1])
    assert port in {p for _, p, _ in socks}, socks
    exposed = [s for s in socks if s[0] not in LOOPBACK]
    assert not exposed, f"the UI listens beyond loopback: {exposed}"


def test_experiment_page_lists_sweep_runs(ui, page, tmp_path, repo_root):
    page.goto(f"{ui['url']}/#/experiments/{ui['experiment_id']}/runs?workflowType=machine_learning")
    parent = page.locator("[role=row]", has_text="sweep").first
    parent.wait_for()
    # Trial runs are nested under the sweep's parent run: expand it.
    parent.locator("button[data-component-id$='runnamecellrenderer.tsx_46']").click()
    for name in ("urban-l0.0-s0", "urban-l0.0-s1", "urban-l0.3-s0", "urban-l0.3-s1"):
        page.get_by_role("link", name=name, exact=True).wait_for()
    page.get_by_text("5 matching runs").wait_for()
    _shot(page, tmp_path, repo_root, "mlflow_runs.png")


def test_compare_view_shows_lambda(ui, page, tmp_path, repo_root):
    import mlflow

    client = mlflow.MlflowClient(ui["url"])
    runs = {r.data.params["robust_lambda"]: r.info.run_id for r in
            (client.get_run(i) for i in ui["children"])}
    ids = json.dumps([runs["0.0"], runs["0.3"]])
    page.goto(f"{ui['url']}/#/compare-runs?runs={ids}&experiments=[\"{ui['experiment_id']}\"]")
    page.get_by_text("Comparing 2 Runs").wait_for()
    row = page.locator("tr", has_text="robust_lambda").last
    row.wait_for()
    text = row.inner_text()
    assert "0.0" in text and "0.3" in text, text
    _shot(page, tmp_path, repo_root, "mlflow_compare.png")


def test_metric_chart_renders(ui, page, tmp_path, repo_root):
    run = ui["children"][0]
    page.goto(f"{ui['url']}/#/experiments/{ui['experiment_id']}/runs/{run}/model-metrics")
    page.locator("svg.main-svg").first.wait_for()  # the charts have loaded
    # Charts render lazily when scrolled into view: filter to the per-group training curve.
    page.get_by_placeholder("Search metric charts").fill("group/child/return")
    page.get_by_text("(group/child/return)").wait_for()  # its legend
    # Plotly draws SVG (not canvas): a line through the 3 logged iterations.
    line = page.locator("svg.main-svg .scatterlayer path.js-line[d*='L']").first
    line.wait_for()
    assert line.get_attribute("d").count("L") >= 2  # 3 points -> 2 segments
    _shot(page, tmp_path, repo_root, "mlflow_chart.png")


def test_artifacts_page_shows_the_group_table_and_the_figure(ui, page, tmp_path, repo_root):
    """A run's artifacts page: the per-group CSV renders as a table with the groups, and the
    per-group figure as an image (issue 18: runs worth opening)."""
    base = f"{ui['url']}/#/experiments/{ui['artifacts_experiment']}/runs/{ui['artifacts_run']}/artifacts"
    page.goto(f"{base}/eval/by_group/step-000002.csv")
    page.get_by_text("elderly", exact=True).first.wait_for()  # a table cell of the CSV
    for header in ("return_per_capita", "mean_wait", "success_rate"):
        page.get_by_text(header, exact=True).first.wait_for()
    _shot(page, tmp_path, repo_root, "mlflow_group_table.png")
    page.get_by_text("by_group.png", exact=True).click()  # in the artifact tree
    page.get_by_text("eval/by_group.png", exact=True).wait_for()  # the preview's title
    img = page.locator("img:not([src^='data:'])").first
    img.wait_for()
    assert page.evaluate("(el) => el.naturalWidth", img.element_handle()) > 300  # decoded
    _shot(page, tmp_path, repo_root, "mlflow_group_figure.png")
