"""Root conftest: make the repo's ``platform`` package win over the stdlib module.

The ``pytest`` console script imports the stdlib ``platform`` before collecting; this
drops that module from ``sys.modules`` so the next ``import platform`` (with the repo
root first on sys.path, which pytest's rootdir conftest handling ensures) finds the
package. ``python -m pytest`` does not need it, but both must work.
"""

import os
import sys

ROOT = os.path.dirname(os.path.abspath(__file__))
if sys.path[0] != ROOT:
    sys.path.insert(0, ROOT)
_mod = sys.modules.get("platform")
if _mod is not None and not hasattr(_mod, "__path__"):
    del sys.modules["platform"]
import platform  # noqa: E402,F401  (now the package; a stand-in for the stdlib module)

assert hasattr(platform, "__path__"), platform
