"""Typed configs: dataclasses built from YAML + ``--set key=value`` overrides.

One dataclass per entry point. Every field is declared with :func:`option`, which holds its
one doc string (and whether it is an MLflow param); invariants are checked in
``__post_init__`` with :func:`base.errors.require`, so every config is validated in one place.

* :func:`build` turns nested dicts into nested dataclasses, coercing scalars and rejecting
  unknown keys with the list of allowed ones;
* :func:`merge_sources` is the one precedence rule of every CLI: defaults < ``--config
  FILE.yaml`` < ``--set key=value`` < explicit flags;
* :func:`fields_of` walks a config class (nested sections as dotted names) and is the single
  source of :func:`help_text` (``--help``), :func:`markdown_table` (the tables in ``docs/``)
  and :func:`tracked_params` (the MLflow params of a run).
"""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml

from base.errors import ConfigError, UsageError

C = TypeVar("C")


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; unreadable or malformed files raise UsageError naming the file."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise UsageError(f"--config: cannot read {p}: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise UsageError(f"--config: {p} is not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UsageError(f"--config: {p} must hold a mapping of fields, got {type(data).__name__}")
    return data


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """``["a.b=1", "c=x"]`` -> ``{"a": {"b": 1}, "c": "x"}`` (values parsed as YAML scalars)."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--set: expected key=value, got {item!r}")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        set_path(out, key.strip(), value)
    return out


def set_path(data: dict[str, Any], dotted: str, value: Any) -> None:
    node = data
    parts = dotted.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise UsageError(f"--set: {dotted!r} goes through a non-mapping field {part!r}")
    node[parts[-1]] = value


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _coerce(field: str, tp: Any, value: Any) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(field, arg, value)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(field, f"got {value!r}, expected {tp}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(field, f"got {value!r}; allowed: {', '.join(map(repr, args))}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(field, f"expected a mapping, got {value!r}")
        return build(tp, value, prefix=f"{field}.")
    if origin in (list, tuple):
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(field, f"expected a list, got {value!r}")
        inner = args[0] if args else Any
        items = [_coerce(f"{field}[{i}]", inner, v) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(field, f"expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(field, f"expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ConfigError(field, f"expected an integer, got {value!r}")
        try:
            f = float(value)
        except ValueError:
            raise ConfigError(field, f"expected an integer, got {value!r}") from None
        if not f.is_integer():
            raise ConfigError(field, f"expected an integer, got {value!r}")
        return int(f)
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(field, f"expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(field, f"expected a number, got {value!r}") from None
    if tp is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(field, f"expected a string, got {value!r}")
        return str(value)
    return value


def build(cls: type[C], data: dict[str, Any] | None = None, *, prefix: str = "") -> C:
    """Build dataclass ``cls`` from a (nested) mapping, with type coercion and clear errors."""
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"{prefix}{unknown[0]}", f"unknown field; allowed: {', '.join(sorted(fields))}"
        )
    kwargs = {name: _coerce(f"{prefix}{name}", hints[name], value) for name, value in data.items()}
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        if prefix and not exc.field.startswith(prefix):
            raise ConfigError(prefix + exc.field, str(exc).split(": ", 1)[-1]) from None
        raise


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


# ------------------------------------------------------------------ declaring fields
def option(default: Any = dataclasses.MISSING, help: str = "", *,
           track: bool | Callable[[Any], Any] = True, **kw: Any) -> Any:
    """A config field with its one doc string.

    Args:
        default: the default value. A list or dict is copied per instance; a dataclass
            *type* makes a nested section built with its own defaults.
        help: what the field does and its allowed values (``--help``, the docs tables).
        track: log the field as an MLflow param (True), not (False), or a callable
            ``track(root_config) -> value`` (None: not logged) for values that depend on
            other fields (e.g. λ of a plain-PPO run is 0).
    """
    metadata = {"help": help, "track": track}
    if isinstance(default, type) and dataclasses.is_dataclass(default):
        return dataclasses.field(default_factory=default, metadata=metadata, **kw)
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: copy.deepcopy(default),
                                 metadata=metadata, **kw)
    return dataclasses.field(default=default, metadata=metadata, **kw)


@dataclasses.dataclass(frozen=True)
class FieldInfo:
    """One leaf field of a config class, named by its dotted path (``rollout.vllm.dtype``)."""

    name: str
    type: str
    default: Any
    help: str
    track: bool | Callable[[Any], Any]


def _type_name(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Literal:
        return " | ".join(repr(a) if isinstance(a, str) else str(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in args)
    if tp is type(None):
        return "None"
    if origin is not None:
        return f"{origin.__name__}[{', '.join(_type_name(a) for a in args)}]"
    return getattr(tp, "__name__", str(tp))


def _section(tp: Any) -> type | None:
    """The dataclass of a nested section field (``X`` or ``X | None``), else None."""
    if dataclasses.is_dataclass(tp):
        return tp
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(inner) == 1 and dataclasses.is_dataclass(inner[0]):
            return inner[0]
    return None


def _default_of(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return dataclasses.MISSING


def fields_of(cls: type, prefix: str = "") -> list[FieldInfo]:
    """Every leaf field of ``cls`` in declaration order; nested sections are walked."""
    hints = typing.get_type_hints(cls)
    out: list[FieldInfo] = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        section = _section(hints[f.name])
        if section is not None:
            out += fields_of(section, f"{prefix}{f.name}.")
            continue
        out.append(FieldInfo(f"{prefix}{f.name}", _type_name(hints[f.name]), _default_of(f),
                             f.metadata.get("help", ""), f.metadata.get("track", True)))
    return out


def _show(value: Any) -> str:
    if value is dataclasses.MISSING:
        return "(required)"
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    return str(value)


def help_text(cls: type, width: int = 100) -> str:
    """Every field with its type, default and doc: the config part of a CLI's ``--help``."""
    import textwrap

    lines = ["config fields (--set FIELD=VALUE, or nested mappings in --config FILE.yaml):"]
    for info in fields_of(cls):
        lines.append(f"  {info.name} = {_show(info.default)}  ({info.type})")
        lines += textwrap.wrap(info.help, width, initial_indent=" " * 6,
                               subsequent_indent=" " * 6) or [" " * 6 + "(undocumented)"]
    return "\n".join(lines)


def markdown_table(cls: type) -> str:
    """The config table of ``cls`` for ``docs/`` (generated; see tools/config_docs.py)."""
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    rows = ["| field | type | default | description |", "|---|---|---|---|"]
    rows += [f"| `{i.name}` | {cell(i.type)} | `{cell(_show(i.default))}` | {cell(i.help)} |"
             for i in fields_of(cls)]
    return "\n".join(rows)


def get_path(cfg: Any, dotted: str) -> Any:
    value = cfg
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


def _param_value(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return str(value)


def tracked_params(cfg: Any) -> dict[str, str]:
    """The MLflow params of a run: every field whose ``track`` says so, by dotted name.

    A dict field is flattened (``advantage.kwargs.alpha``); None values are left out; the
    properties a config class names in ``DERIVED_PARAMS`` (e.g. the estimator an algorithm
    implies) are added under their own names.
    """
    out: dict[str, str] = {}
    for info in fields_of(type(cfg)):
        if info.track is False:
            continue
        value = info.track(cfg) if callable(info.track) else get_path(cfg, info.name)
        if value is None:
            continue
        if isinstance(value, dict):
            out.update({f"{info.name}.{k}": _param_value(v) for k, v in value.items()})
        else:
            out[info.name] = _param_value(value)
    for name in getattr(type(cfg), "DERIVED_PARAMS", ()):
        out[name] = _param_value(getattr(cfg, name))
    return out


# ------------------------------------------------------------------------ sources
def merge_sources(config_file: str | Path | None = None, overrides: list[str] | None = None,
                  flags: dict[str, Any] | None = None, fixed: dict[str, Any] | None = None
                  ) -> dict[str, Any]:
    """The one precedence rule: defaults < ``config_file`` < ``overrides`` (``key=value``)
    < ``flags`` (dotted field -> value; None = flag not given) < ``fixed`` (set by the
    command itself, e.g. the algorithm name)."""
    data = load_yaml(config_file) if config_file else {}
    data = deep_merge(data, parse_overrides(overrides))
    for dotted, value in (flags or {}).items():
        if value is not None:
            set_path(data, dotted, value)
    for dotted, value in (fixed or {}).items():
        set_path(data, dotted, value)
    return data
