"""Regenerate (or check) the config tables in docs/ from the config classes themselves.

A table lives between two markers in any Markdown file under docs/ or the README::

    <!-- config-table: platform.clinical.config:ClinicalConfig -->
    | field | type | default | description |
    ...
    <!-- /config-table -->

Its body is :func:`base.config.markdown_table` of the named class, so the docs, ``--help``
and the MLflow params all come from the same field declarations.

Usage (from the repo root):
    python -m tools.config_docs            # check: exit 1 and name every stale table
    python -m tools.config_docs --write    # rewrite the stale tables in place
"""

from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MARKER = re.compile(
    r"(<!-- config-table: (?P<target>[\w.]+:\w+) -->\n)(?P<body>.*?)(<!-- /config-table -->)",
    re.DOTALL)


def documents() -> list[Path]:
    return sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])


def render(target: str) -> str:
    from base.config import markdown_table

    module, _, name = target.partition(":")
    return markdown_table(getattr(importlib.import_module(module), name)) + "\n"


def refresh(text: str) -> tuple[str, list[str]]:
    """``text`` with every table regenerated, and the targets whose table changed."""
    stale: list[str] = []

    def sub(m: re.Match) -> str:
        body = render(m["target"])
        if body != m["body"]:
            stale.append(m["target"])
        return m.group(1) + body + m.group(4)

    return MARKER.sub(sub, text), stale


def tables() -> dict[Path, list[str]]:
    """Document -> the config classes it holds a table of."""
    out = {}
    for path in documents():
        found = [m["target"] for m in MARKER.finditer(path.read_text())]
        if found:
            out[path] = found
    return out


def main(argv: list[str]) -> int:
    write = "--write" in argv
    problems = []
    for path in documents():
        text = path.read_text()
        new, stale = refresh(text)
        if not stale:
            continue
        if write:
            path.write_text(new)
            print(f"rewrote {path.relative_to(ROOT)}: {', '.join(stale)}")
        else:
            problems += [f"{path.relative_to(ROOT)}: table of {t} is stale" for t in stale]
    for p in problems:
        print(p, file=sys.stderr)
    if problems:
        print("run: python -m tools.config_docs --write", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
