"""Fetch the wheels the GPU kit needs on the lent GPU machine into ``.gpu-wheels/`` (git-ignored).

    make gpu-wheels                                   # = .venv/bin/python -m benchmarks.gpu_wheels
    .venv/bin/python -m benchmarks.gpu_wheels --no-transformers   # use the machine's transformers

That machine (Python 3.12, x86-64, torch 2.11 + CUDA 13, transformers 5.17, no network) lacks
DeepSpeed and what DeepSpeed imports beyond its own packages: hjson and pydantic (with
pydantic-core, annotated-types, typing-inspection and a typing-extensions new enough for them).
The project's pinned transformers (5.23) travels too, so the kit measures the version CI tests;
without it (``--no-transformers``) the kit runs on the machine's 5.17 (its dry run passes on both).
DeepSpeed is published as a source archive only: it is built here into a pure-Python wheel with
``DS_BUILD_OPS=0`` (no compiled ops; on CUDA DeepSpeed JIT-builds the few it needs with that
machine's nvcc). Versions are the project's: DeepSpeed (and transformers) from pyproject.toml,
the others as installed in this venv, which CI tests.

Everything that travels with a ``run`` call (tracked and untracked files + carried paths) must
stay within 64 MiB: the wheels' total plus the working tree is checked and printed; over the
limit -> exit 1 and the folder is left as it was. The folder is replaced whole (built in a temp
dir first). The device ``run`` call that uses it: README.md, "Tests and benchmarks".
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEST = REPO / ".gpu-wheels"
LIMIT_MIB = 64.0
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "manylinux1_x86_64"]
TARGET = ["--python-version", "3.12", "--implementation", "cp", "--only-binary=:all:",
          *[a for p in PLATFORMS for a in ("--platform", p)]]
FROM_VENV = ["hjson", "pydantic", "pydantic-core", "annotated-types", "typing-inspection",
             "typing-extensions"]
"""DeepSpeed's imports that the machine lacks, pinned to this venv's versions."""


def pyproject_pin(name: str) -> str:
    """``name==version`` as pinned in pyproject.toml's dependencies (or an extra)."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"]) + [r for v in project.get("optional-dependencies", {}).values()
                                            for r in v]
    for r in reqs:
        if r.replace(" ", "").lower().startswith(f"{name.lower()}=="):
            return r.replace(" ", "")
    raise SystemExit(f"error: pyproject.toml pins no exact {name} version")


def working_tree_bytes() -> int:
    """Bytes of what a ``run`` call sends besides carried paths: tracked + untracked, not ignored."""
    out = subprocess.run(["git", "ls-files", "-z", "-co", "--exclude-standard"], cwd=REPO,
                         capture_output=True, check=True).stdout.split(b"\0")
    return sum((REPO / f.decode()).stat().st_size for f in out if f and (REPO / f.decode()).is_file())


def check_limit(wheel_bytes: dict[str, int], tree_bytes: int, limit_mib: float = LIMIT_MIB) -> tuple[bool, str]:
    """Whether wheels + working tree fit ``limit_mib``; a report line per wheel and the totals."""
    total = sum(wheel_bytes.values())
    lines = [f"  {name:<70} {size / 2**20:7.2f} MiB" for name, size in sorted(wheel_bytes.items())]
    lines.append(f"  {'wheels':<70} {total / 2**20:7.2f} MiB")
    lines.append(f"  {'working tree (tracked + untracked, not ignored)':<70} {tree_bytes / 2**20:7.2f} MiB")
    fits = total + tree_bytes <= limit_mib * 2**20
    lines.append(f"  {'total that travels':<70} {(total + tree_bytes) / 2**20:7.2f} MiB "
                 f"({'within' if fits else 'OVER'} the {limit_mib:g} MiB limit)")
    return fits, "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu_wheels", description=__doc__.split("\n")[0])
    p.add_argument("--dest", default=str(DEST), help="wheel folder (git-ignored; default .gpu-wheels)")
    p.add_argument("--no-transformers", action="store_true",
                   help="leave out the project's pinned transformers (the machine's 5.17 is used; "
                        "the kit runs on both)")
    args = p.parse_args(argv)
    pip = [sys.executable, "-m", "pip"]
    pins = [f"{n}=={metadata.version(n)}" for n in FROM_VENV]
    if not args.no_transformers:
        pins.append(pyproject_pin("transformers"))
    deepspeed = pyproject_pin("deepspeed")
    dest = Path(args.dest)
    with tempfile.TemporaryDirectory(prefix="gpu-wheels-") as tmp:
        for pin in pins:
            subprocess.run([*pip, "download", "-q", "--no-deps", *TARGET, "-d", tmp, pin], check=True)
        # DeepSpeed: source only on PyPI; a py3-none-any wheel, no compiled ops, built with this
        # venv's torch (its setup.py imports torch)
        env = {**os.environ, "DS_BUILD_OPS": "0"}
        subprocess.run([*pip, "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", tmp, deepspeed],
                       check=True, env=env)
        wheels = sorted(Path(tmp).glob("*.whl"))
        bad = [w.name for w in wheels if not (w.name.endswith("-none-any.whl") or "cp312" in w.name)]
        if bad:
            print(f"error: not installable on Python 3.12 / x86-64: {bad}", file=sys.stderr)
            return 1
        sizes = {w.name: w.stat().st_size for w in wheels}
        fits, report = check_limit(sizes, working_tree_bytes())
        print(report)
        if not fits:
            print("error: over the limit: nothing written", file=sys.stderr)
            return 1
        staged = dest.with_name(dest.name + ".new")
        shutil.rmtree(staged, ignore_errors=True)
        staged.mkdir(parents=True)
        for w in wheels:
            shutil.copy2(w, staged / w.name)
        (staged / "manifest.json").write_text(json.dumps({"wheels": sizes, "deepspeed": deepspeed},
                                                         indent=1) + "\n")
        shutil.rmtree(dest, ignore_errors=True)
        staged.rename(dest)
    print(f"wrote {len(wheels)} wheels to {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
