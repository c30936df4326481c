"""base.config: one field declaration -> build, precedence, --help, docs table, MLflow params."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pytest

from base.config import (
    build,
    fields_of,
    help_text,
    markdown_table,
    merge_sources,
    option,
    tracked_params,
)
from base.errors import ConfigError, UsageError, require
from base.registry import Registry, RegistryError


@dataclass
class Inner:
    depth: int = option(2, "how deep | how far")
    names: list[str] = option(["a", "b"], "names, comma separated on the command line")


@dataclass
class Outer:
    DERIVED_PARAMS = ("label",)

    mode: Literal["fast", "slow"] = option("fast", "speed")
    rate: float = option(0.5, "a rate in (0, 1)")
    secret_dir: str = option("", "a local path", track=False)
    lam: float = option(0.3, "only meaningful when mode is slow",
                        track=lambda c: c.lam if c.mode == "slow" else 0.0)
    extra: dict = option({}, "free-form keyword arguments")
    inner: Inner = option(Inner, "a nested section")

    def __post_init__(self):
        require(0 < self.rate < 1, "rate", f"{self.rate} must be in (0, 1)")

    @property
    def label(self) -> str:
        return f"{self.mode}-{self.inner.depth}"


def test_option_defaults_are_fresh_per_instance():
    a, b = Outer(), Outer()
    a.inner.names.append("c")
    a.extra["k"] = 1
    assert b.inner.names == ["a", "b"] and b.extra == {}


def test_build_nested_coercion_and_errors():
    cfg = build(Outer, {"rate": "0.25", "inner": {"depth": "4", "names": "x, y"}})
    assert cfg.rate == 0.25 and cfg.inner.depth == 4 and cfg.inner.names == ["x", "y"]
    with pytest.raises(ConfigError, match=r"inner.dept: unknown field; allowed: depth, names"):
        build(Outer, {"inner": {"dept": 1}})
    with pytest.raises(ConfigError, match=r"mode: got 'medium'; allowed: 'fast', 'slow'"):
        build(Outer, {"mode": "medium"})
    with pytest.raises(ConfigError, match=r"rate: 2.0 must be in \(0, 1\)"):
        build(Outer, {"rate": 2})


def test_precedence_defaults_file_set_flags(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("rate: 0.1\ninner:\n  depth: 7\nmode: slow\n")
    data = merge_sources(path, ["rate=0.2", "inner.names=[p]"],
                         flags={"rate": 0.3, "inner.depth": None}, fixed={"mode": "fast"})
    cfg = build(Outer, data)
    # file < --set < flag; a flag left None does not override; fixed wins over the file
    assert (cfg.rate, cfg.inner.depth, cfg.inner.names, cfg.mode) == (0.3, 7, ["p"], "fast")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n")
    with pytest.raises(UsageError, match="must hold a mapping"):
        merge_sources(bad)
    with pytest.raises(UsageError, match="expected key=value"):
        merge_sources(None, ["rate"])


def test_fields_help_and_markdown_list_every_leaf():
    names = [f.name for f in fields_of(Outer)]
    assert names == ["mode", "rate", "secret_dir", "lam", "extra", "inner.depth", "inner.names"]
    text = help_text(Outer)
    for f in fields_of(Outer):
        assert f.name in text and f.help.split()[0] in text
    assert "inner.names = ['a', 'b']  (list[str])" in text
    assert "mode = 'fast'  ('fast' | 'slow')" in text
    table = markdown_table(Outer)
    assert table.count("\n") == len(names) + 1
    assert "how deep \\| how far" in table  # a pipe in a doc cannot break the table


def test_tracked_params_follow_field_metadata():
    cfg = build(Outer, {"extra": {"alpha": 2}, "inner": {"names": ["q", "r"]}})
    params = tracked_params(cfg)
    assert params == {"mode": "fast", "rate": "0.5", "lam": "0.0", "extra.alpha": "2",
                      "inner.depth": "2", "inner.names": "q,r", "label": "fast-2"}
    slow = tracked_params(build(Outer, {"mode": "slow"}))
    assert slow["lam"] == "0.3" and "secret_dir" not in slow


def test_registry_is_loud():
    r = Registry("widget")
    r.register("a", "base.errors:UsageError", help="lazy")
    assert r.get("a") is UsageError and r.help("a") == "lazy"
    with pytest.raises(RegistryError, match="already registered"):
        r.register("a", object())
    with pytest.raises(RegistryError, match="unknown widget 'b'; known: a"):
        r.get("b")
