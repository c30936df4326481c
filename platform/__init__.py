"""EquiRL orchestration: CLIs (train, sweep, report, fairness, data, ui), Ray actors,
MLflow tracking and configs.

This package is also a faithful stand-in for the standard-library ``platform`` module.
Users run ``python -m platform.train``; with the repository root first on ``sys.path``
(which ``python -m`` guarantees), ``import platform`` finds this package, not the stdlib
module, and stdlib callers (uuid, ray, torch, mlflow, ...) still call
``platform.system()``, ``platform.uname()`` and friends. So on import we execute the
stdlib ``platform.py`` from its file and re-export every name it defines. Classes and
functions defined there get ``__module__ = "platform"`` so that pickles (e.g. of a
``platform.uname()`` result) load in any process, whichever ``platform`` it imports.

Rules that keep this safe (tested in tests/platform/test_stdlib_shadow.py):
  * run from the repo root (``python -m ...``, ``python -m pytest``; the root conftest.py
    makes plain ``pytest`` work too);
  * Ray workers need the repo on their path: use ``platform.cluster.init_ray`` (local) or
    ``ray job submit --working-dir .`` (cluster);
  * never ``pip install`` this project: site-packages comes after the stdlib on sys.path.
"""

from __future__ import annotations

import importlib.util as _ilu
import os as _os
import sys as _sys
import sysconfig as _sysconfig

_STDLIB_NAME = "_equirl_stdlib_platform"


def _load_stdlib_platform():
    cached = _sys.modules.get(_STDLIB_NAME)
    if cached is not None:
        return cached
    path = _os.path.join(_sysconfig.get_path("stdlib"), "platform.py")
    spec = _ilu.spec_from_file_location(_STDLIB_NAME, path)
    if spec is None or spec.loader is None:  # pragma: no cover - broken interpreter
        raise ImportError(f"cannot locate the standard-library platform module at {path}")
    module = _ilu.module_from_spec(spec)
    _sys.modules[_STDLIB_NAME] = module
    spec.loader.exec_module(module)
    return module


_stdlib = _load_stdlib_platform()

_OWN = {"__name__", "__file__", "__path__", "__package__", "__spec__", "__loader__",
        "__doc__", "__builtins__", "__cached__"}

for _name, _value in vars(_stdlib).items():
    if _name in _OWN:
        continue
    if getattr(_value, "__module__", None) == _STDLIB_NAME:
        try:
            _value.__module__ = __name__
        except (AttributeError, TypeError):  # pragma: no cover - builtins, slots
            pass
    globals()[_name] = _value

# Public API of the stdlib module (it has no __all__); `from platform import *` works too.
__all__ = sorted(n for n in vars(_stdlib) if not n.startswith("_"))

del _name, _value
