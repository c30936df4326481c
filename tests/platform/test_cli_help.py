"""``--help`` of every CLI with a config lists every config field, its default and its doc."""

from __future__ import annotations

import subprocess
import sys

import pytest

from base.config import fields_of

CLIS = [
    (["platform.train", "group-robust-ppo"], "platform.allocation.config", "AllocationConfig"),
    (["platform.train", "fairgrpo"], "platform.clinical.config", "ClinicalConfig"),
    (["platform.train", "fairgrad-classifier"], "platform.tabular", "TabularConfig"),
    (["platform.sweep", "group-robust-ppo"], "platform.allocation.config", "AllocationConfig"),
    (["platform.clinical.compare"], "platform.clinical.config", "ClinicalConfig"),
]


@pytest.mark.parametrize("argv,module,cls", CLIS, ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_help_lists_every_field(argv, module, cls, repo_root, run_env):
    import importlib

    config_cls = getattr(importlib.import_module(module), cls)
    res = subprocess.run([sys.executable, "-m", *argv, "--help"], cwd=repo_root, env=run_env(),
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    missing = [f.name for f in fields_of(config_cls)
               if f"  {f.name} = " not in res.stdout or f.help.split()[0] not in res.stdout]
    assert not missing, f"{' '.join(argv)} --help lacks {missing}"
