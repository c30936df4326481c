"""MLflow tracking in one place.

* Default store: ``sqlite:///<repo>/mlflow.db`` with artifacts under ``<repo>/mlruns``
  (explicit artifact root, as MLflow 3.17 requires for sqlite stores).
* ``check_tracking_uri`` fails fast (UsageError, exit 2) on an unreachable server or an
  unwritable sqlite path, before any run is created.
* ``tracked_run`` ends a run FAILED when the body raises (KILLED on Ctrl-C), never RUNNING.
* Metric names are namespaced (``fairness/...``, ``group/<g>/...``, ``time/...``).
* Tags: ``equirl.track``, ``equirl.algorithm`` (:func:`run_tags`) on every run of both tracks.
* Privacy: only aggregates are logged; nothing patient-level unless a caller opts in.
"""

from __future__ import annotations

import contextlib
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from platform.cluster import REPO_ROOT
from typing import Any

from base.errors import UsageError

DEFAULT_DB = REPO_ROOT / "mlflow.db"
DEFAULT_ARTIFACTS = REPO_ROOT / "mlruns"
DEFAULT_EXPERIMENT = "equirl"

# Tags every run of every track carries (filter on them in the MLflow UI / search_runs).
TAG_ALGORITHM = "equirl.algorithm"  # the platform.train / platform.sweep algorithm name
TAG_TRACK = "equirl.track"          # "allocation", "clinical" or "tabular"
TAG_CHECKPOINT = "equirl.checkpoint"  # the run's latest checkpoint directory
TAG_ERROR = "equirl.error"  # why a FAILED run failed (exception type and message)
TAG_MODEL_DIR = "equirl.model_dir"  # the run's exported final policy (a Hugging Face model dir)


def run_tags(track: str, algorithm: str, **extra: str) -> dict[str, str]:
    """The tags of a run: ``equirl.track``, ``equirl.algorithm`` and ``equirl.<key>`` extras."""
    return {TAG_TRACK: track, TAG_ALGORITHM: algorithm,
            **{f"equirl.{k}": str(v) for k, v in extra.items()}}


def default_tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{DEFAULT_DB}"


def artifact_root_for(uri: str) -> str | None:
    """Explicit artifact location for local stores (``<db dir>/mlruns``); None for servers."""
    if uri.startswith("sqlite:///"):
        return (Path(uri[len("sqlite:///"):]).resolve().parent / "mlruns").as_uri()
    if uri.startswith("file:") or "://" not in uri:
        return None
    return None


def check_tracking_uri(uri: str, timeout: float = 5.0) -> None:
    """Raise UsageError naming ``--tracking-uri`` if the store cannot be reached or written."""
    if uri.startswith(("http://", "https://")):
        url = uri.rstrip("/") + "/health"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310
                if resp.status >= 400:
                    raise UsageError(f"--tracking-uri: {uri} answered HTTP {resp.status}")
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise UsageError(f"--tracking-uri: cannot reach MLflow server {uri}: {reason}") from None
    elif uri.startswith("sqlite:///"):
        path = Path(uri[len("sqlite:///"):])
        parent = path.resolve().parent
        if not parent.is_dir() or not os.access(parent, os.W_OK):
            raise UsageError(f"--tracking-uri: directory {parent} for {uri} does not exist or is not writable")
        if path.exists() and not os.access(path, os.W_OK):
            raise UsageError(f"--tracking-uri: {path} is not writable")
    elif uri.startswith(("postgresql://", "mysql://", "databricks")):
        return
    elif uri.startswith("file:") or "://" not in uri:
        raise UsageError(
            f"--tracking-uri: {uri!r} is a file store; MLflow 3.17 needs a database "
            "(sqlite:///path/mlflow.db) or a server (http://host:port)"
        )
    else:
        raise UsageError(
            f"--tracking-uri: unsupported scheme in {uri!r}; use sqlite:///..., http(s)://... or postgresql://..."
        )


def setup(uri: str | None, experiment: str | None) -> tuple[str, str]:
    """Point MLflow at ``uri`` and ``experiment`` (created with an explicit artifact root).

    Returns ``(uri, experiment_id)``.
    """
    import mlflow

    uri = uri or default_tracking_uri()
    check_tracking_uri(uri)
    mlflow.set_tracking_uri(uri)
    name = experiment or DEFAULT_EXPERIMENT
    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name(name)
    if exp is None:
        exp_id = client.create_experiment(name, artifact_location=artifact_root_for(uri))
    else:
        if exp.lifecycle_stage == "deleted":
            client.restore_experiment(exp.experiment_id)
        exp_id = exp.experiment_id
    mlflow.set_experiment(experiment_id=exp_id)
    return uri, exp_id


@contextlib.contextmanager
def tracked_run(
    *,
    run_name: str | None = None,
    run_id: str | None = None,
    tags: dict[str, str] | None = None,
    nested: bool = False,
    parent_run_id: str | None = None,
) -> Iterator[Any]:
    """Start (or resume, with ``run_id``) an MLflow run that never ends RUNNING.

    Finished -> FINISHED; exception -> FAILED (re-raised) with the error, type and message
    (first 500 characters), in the tag ``equirl.error``; KeyboardInterrupt -> KILLED.
    """
    import mlflow

    run = mlflow.start_run(
        run_id=run_id, run_name=None if run_id else run_name, tags=tags, nested=nested,
        parent_run_id=parent_run_id,
    )
    try:
        yield run
    except KeyboardInterrupt:
        mlflow.end_run(status="KILLED")
        raise
    except BaseException as exc:
        try:
            mlflow.set_tag(TAG_ERROR, f"{type(exc).__name__}: {exc}"[:500])
        finally:
            mlflow.end_run(status="FAILED")
        raise
    else:
        mlflow.end_run(status="FINISHED")


def log_config(cfg: Any) -> None:
    """The run's resolved config (every field, after defaults < file < --set < flags) as the
    artifact ``config.yaml``: what reproduces the run with ``--config config.yaml``."""
    import dataclasses

    import mlflow
    import yaml

    mlflow.log_text(yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False), "config.yaml")


def last_logged_step(run_id: str, key: str) -> int | None:
    """Largest step logged for ``key`` in ``run_id`` (None if none): resume deduplication."""
    import mlflow

    history = mlflow.MlflowClient().get_metric_history(run_id, key)
    return max((m.step for m in history), default=None)


def clean_metric_name(name: str) -> str:
    """MLflow allows alphanumerics, ``_ - . / space``; map anything else to ``_``."""
    return "".join(c if c.isalnum() or c in "_-./ " else "_" for c in str(name))


def log_metrics(metrics: dict[str, float], step: int) -> None:
    """Log finite scalar metrics with cleaned names (non-finite values are skipped)."""
    import math

    import mlflow

    clean = {
        clean_metric_name(k): float(v)
        for k, v in metrics.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))
    }
    if clean:
        mlflow.log_metrics(clean, step=step)
