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


def check_out(out: str | Path, flag: str, marker: str = EXPORT_FILE) -> None:
    """UsageError unless ``out`` is absent, an empty folder or an earlier export (it holds
    ``marker``): the folder an export replaces."""
    out = Path(out)
    if not out.exists():
        return
    if not out.is_dir() or (any(out.iterdir()) and not (out / marker).is_file()):
        from base.errors import UsageError

        raise UsageError(f"{flag}: {out} exists and is not an earlier export (no {marker}); "
                         "the export would replace it: choose a new folder")


def export_policy(learners: Any, model_path: str | Path, out: str | Path,
                  info: dict[str, Any]) -> Path:
    """Write the learners' current weights to ``out`` (atomically); ``info`` (algorithm,
    step, run id, ...) goes into ``equirl_export.json``. Returns ``out``."""
    return _write_atomically(out, lambda tmp: learners.export(str(tmp)), model_path, info)


def export_checkpoint(folder: str | Path, model_path: str | Path, out: str | Path,
                      info: dict[str, Any], dtype: str = "float32") -> Path:
    """The policy of a checkpoint step folder (``<root>/step-N``, any ZeRO stage: DeepSpeed's
    ``zero_to_fp32`` gathers the partitions) as a model dir at ``out``, on this machine."""
    from platform.clinical import models

    import torch

    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    state = get_fp32_state_dict_from_zero_checkpoint(str(Path(folder) / "learner"), tag="ds")
    model = models.load_model(model_path, dtype)
    tied = {k for k in getattr(model, "_tied_weights_keys", None) or {}}
    missing, unexpected = model.load_state_dict(state, strict=False)
    bad_missing = [k for k in missing if k not in tied and not any(k.endswith(t) for t in tied)]
    if unexpected or bad_missing:
        from base.errors import UsageError

        raise UsageError(f"{folder}: the checkpoint does not fit {model_path} (missing "
                         f"{bad_missing[:3]}, unexpected {list(unexpected)[:3]})")
    processor = models.load_processor(model_path)

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp, safe_serialization=True)
        processor.save_pretrained(tmp)

    return _write_atomically(out, write, model_path, info)


def _write_atomically(out: str | Path, write, model_path: str | Path, info: dict[str, Any]) -> Path:
    from platform.clinical.models import SPEC_FILE

    out = Path(out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        write(tmp)
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
