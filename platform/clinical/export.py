"""The final policy of a clinical run as a Hugging Face model directory.

:func:`export_policy` has learner rank 0 write ``save_pretrained`` output (safetensors weights,
config, generation config, processor with tokenizer and chat template) into a temporary
folder beside ``out``, adds ``equirl_export.json`` (what produced it; no data) and the
built-in tiny model's spec file when the run started from one (so the next run decodes option
letters as this one did), then renames it into place: a folder at ``out`` is always complete.
The result loads with ``from_pretrained`` and vLLM, and is ``--model`` of the next run
(``platform.train sft`` -> ``platform.train fairgrpo --model DIR``).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

EXPORT_FILE = "equirl_export.json"


def default_export_dir(ckpt_root: str | Path) -> Path:
    return Path(ckpt_root) / "model"


def export_policy(learners: Any, model_path: str | Path, out: str | Path,
                  info: dict[str, Any]) -> Path:
    """Write the learners' current weights to ``out`` (atomically); ``info`` (algorithm,
    step, run id, ...) goes into ``equirl_export.json``. Returns ``out``."""
    from platform.clinical.models import SPEC_FILE

    out = Path(out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        learners.export(str(tmp))
        if (Path(model_path) / SPEC_FILE).is_file():
            shutil.copy2(Path(model_path) / SPEC_FILE, tmp / SPEC_FILE)
        (tmp / EXPORT_FILE).write_text(json.dumps(
            {**info, "base_model": str(model_path)}, indent=2, sort_keys=True, default=str))
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
