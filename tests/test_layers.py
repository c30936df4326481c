"""The layering, held in place: platform -> algorithms -> envs -> fairness -> base.

A package may import its own layer and the layers below it, never one above; no two
modules import each other, directly or through others (function-level imports count:
they are imports all the same). ``algorithms`` is math only: no Ray, MLflow, DeepSpeed or
vLLM and no file I/O. ``base`` imports nothing of the project.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LAYERS = ("base", "fairness", "envs", "algorithms", "platform")  # bottom -> top
RANK = {name: i for i, name in enumerate(LAYERS)}
FORBIDDEN_IN_ALGORITHMS = ("ray", "mlflow", "deepspeed", "vllm")
# envs modules that read files: algorithms take arrays, the caller loads them
IO_MODULES = ("envs.cohorts", "envs.clinical.dataset", "envs.clinical.convert",
              "envs.hospital.calibration")
IO_CALLS = {"open", "read_text", "write_text", "read_bytes", "write_bytes", "read_csv",
            "read_parquet", "to_csv", "to_parquet", "savez", "loadtxt", "mkdir", "unlink"}


def modules() -> dict[str, Path]:
    out = {}
    for layer in LAYERS:
        for path in sorted((REPO / layer).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = path
    return out


MODULES = modules()


def imported(path: Path, name: str) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in the file, at any depth."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.append((node.lineno, mod))
            # ``from pkg import sub`` imports the module pkg.sub when there is one
            out += [(node.lineno, f"{mod}.{a.name}") for a in node.names
                    if f"{mod}.{a.name}" in MODULES]
    return out


def _rel(path: Path) -> str:
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def project_module(mod: str) -> str | None:
    """The project module ``mod`` names (or its nearest project package), else None."""
    while mod:
        if mod in MODULES:
            return mod
        mod = mod.rpartition(".")[0]
    return None


def graph() -> dict[str, set[str]]:
    g: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        deps = {project_module(m) for _, m in imported(path, name)}
        g[name] = {d for d in deps if d and d != name and not name.startswith(d + ".")}
    return g


def test_no_upward_imports():
    bad = []
    for name, path in MODULES.items():
        layer = name.split(".")[0]
        for line, mod in imported(path, name):
            top = mod.split(".")[0]
            if top in RANK and RANK[top] > RANK[layer] and project_module(mod):
                bad.append(f"{_rel(path)}:{line} {name} ({layer}) imports {mod} ({top})")
    assert not bad, "upward imports:\n" + "\n".join(bad)


def test_no_import_cycles():
    g = graph()
    cycles, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(g.get(node, ())):
            if state.get(dep) == 1:
                cycles.append(" -> ".join(stack[stack.index(dep):] + [dep]))
            elif dep not in state:
                visit(dep, stack)
        stack.pop()
        state[node] = 2

    for node in sorted(g):
        if node not in state:
            visit(node, [])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


@pytest.mark.parametrize("name", [n for n in MODULES if n.startswith("algorithms")])
def test_algorithms_are_math_only(name):
    path = MODULES[name]
    heavy = [f"line {line}: {mod}" for line, mod in imported(path, name)
             if mod.split(".")[0] in FORBIDDEN_IN_ALGORITHMS or mod.startswith(IO_MODULES)]
    assert not heavy, f"{name} imports a runtime or a loader: {heavy}"
    io = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call):
            fn = node.func
            called = fn.id if isinstance(fn, ast.Name) else fn.attr if isinstance(fn, ast.Attribute) else ""
            if called in IO_CALLS:
                io.append(f"line {node.lineno}: {called}()")
    assert not io, f"{name} does file I/O: {io}"


def test_base_imports_nothing_of_the_project():
    for name, path in MODULES.items():
        if name.startswith("base"):
            tops = {m.split(".")[0] for _, m in imported(path, name)}
            assert not tops & (set(LAYERS) - {"base"}), (name, tops)


def test_checker_sees_a_violation(tmp_path, monkeypatch):
    """The checks can fail: an upward import and a two-module cycle are both reported."""
    fake = {"envs.x": tmp_path / "x.py", "envs.y": tmp_path / "y.py"}
    fake["envs.x"].write_text("import platform.cli\nfrom envs import y\n")
    fake["envs.y"].write_text("def f():\n    import envs.x\n")
    monkeypatch.setattr(sys.modules[__name__], "MODULES", {**MODULES, **fake})
    with pytest.raises(AssertionError, match="envs.x imports|imports platform.cli"):
        test_no_upward_imports()
    with pytest.raises(AssertionError, match="envs.x -> envs.y -> envs.x"):
        test_no_import_cycles()
