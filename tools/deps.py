"""Print the dependency list of pyproject.toml (optionally with extras), one per line.

`make install` pipes this into pip: the project itself is not pip-installed because its
`platform/` package shadows the stdlib module (see README).

Usage: python tools/deps.py [EXTRA ...]        # core deps, plus the named extras
       python tools/deps.py --only EXTRA ...   # only the named extras
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path


def main(argv: list[str]) -> int:
    data = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    project = data["project"]
    extras = project.get("optional-dependencies", {})
    only = bool(argv) and argv[0] == "--only"
    names = argv[1:] if only else argv
    unknown = [n for n in names if n not in extras]
    if unknown:
        print(f"unknown extra(s) {unknown}; known: {sorted(extras)}", file=sys.stderr)
        return 2
    deps = [] if only else list(project["dependencies"])
    for name in names:
        deps.extend(extras[name])
    print("\n".join(deps))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
