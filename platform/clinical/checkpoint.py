"""Checkpoints of a clinical run: learner model + optimizer (DeepSpeed), estimator, data position.

Layout under ``<root>`` (one folder per run)::

    step-000005/learner/ds/...    DeepSpeed checkpoint (every rank's ZeRO partitions + optimizer)
    step-000005/driver.pt         step, data position (epoch, cursor, seed), estimator state,
                                  MLflow run id, config (torch.save of plain Python objects)
    latest                        the name of the newest complete step folder, written last

A step folder counts only once ``latest`` names it (written atomically after everything else),
so an interrupted save never becomes the resume point. Keeps the newest ``keep`` folders.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from base.errors import UsageError

LATEST = "latest"


def step_dir(root: str | Path, step: int) -> Path:
    return Path(root) / f"step-{step:06d}"


def save(root: str | Path, step: int, learners: Any, driver_state: dict[str, Any], keep: int = 2) -> Path:
    """Write step ``step`` (all learner ranks save together), then point ``latest`` at it."""
    import torch

    folder = step_dir(root, step)
    if folder.exists():
        shutil.rmtree(folder)
    (folder / "learner").mkdir(parents=True)
    learners.save(str(folder / "learner"), "ds")
    torch.save(driver_state, folder / "driver.pt")
    tmp = Path(root) / f".{LATEST}.tmp"
    tmp.write_text(folder.name)
    os.replace(tmp, Path(root) / LATEST)
    _prune(Path(root), keep)
    return folder


def latest(root: str | Path) -> Path | None:
    """The newest complete step folder, or None if the run has no checkpoint."""
    marker = Path(root) / LATEST
    if not marker.is_file():
        return None
    folder = Path(root) / marker.read_text().strip()
    return folder if (folder / "driver.pt").is_file() else None


def missing_files(folder: str | Path) -> list[str]:
    """What restoring ``folder`` needs and it lacks: ``driver.pt`` and the learners' DeepSpeed
    model and optimizer states."""
    folder, ds = Path(folder), Path(folder) / "learner" / "ds"
    need = {"driver.pt": (folder / "driver.pt").is_file(),
            "learner/ds/*model_states.pt": any(ds.glob("*model_states.pt")),
            "learner/ds/*optim_states.pt": any(ds.glob("*optim_states.pt"))}
    return [name for name, present in need.items() if not present]


def require_complete(folder: str | Path, flag: str) -> None:
    """UsageError naming ``flag`` and the missing files unless ``folder`` can be restored."""
    missing = missing_files(folder)
    if missing:
        raise UsageError(f"{flag}: checkpoint {folder} is incomplete: no {', '.join(missing)}")


def check_replaceable(root: str | Path, flag: str) -> None:
    """UsageError unless ``root`` is absent, empty or a run's checkpoint folder: a fresh run
    clears its checkpoint folder, which must never be a folder of other files."""
    root = Path(root)
    if not root.exists():
        return
    if not root.is_dir():
        raise UsageError(f"{flag}: {root} is a file, not a checkpoint folder")
    ours = (LATEST, f".{LATEST}.tmp", "model")  # "model": the default export dir
    foreign = sorted(p.name for p in root.iterdir()
                     if p.name not in ours and not p.name.startswith(("step-", ".model.tmp")))
    if foreign:
        raise UsageError(f"{flag}: {root} holds {foreign[:3]}, not a run's checkpoints; a new "
                         "run clears its checkpoint folder: choose a new or empty one")


def load_driver_state(folder: Path) -> dict[str, Any]:
    import torch

    try:
        return torch.load(folder / "driver.pt", weights_only=False)
    except Exception as exc:  # noqa: BLE001 (a corrupt file is bad input)
        raise UsageError(f"--resume: cannot read {folder / 'driver.pt'}: {exc}") from None


def restore(folder: Path, learners: Any) -> dict[str, Any]:
    """Load learner model + optimizer on all ranks; return the driver state."""
    state = load_driver_state(folder)
    learners.load(str(folder / "learner"), "ds")
    return state


def _prune(root: Path, keep: int) -> None:
    steps = sorted(p for p in root.glob("step-*") if p.is_dir())
    for old in steps[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
