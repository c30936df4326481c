"""Shared CLI plumbing: one parser shape, one config precedence, exit code 2 on bad input.

Every entry point with a typed config builds it the same way::

    p = cli.parser("python -m platform.train ppo", "what it does", AllocationConfig)
    cli.add_common_train_options(p)          # --config --set --seed --iterations --run-name ...
    p.add_argument("--scenario")             # a flag for a field
    args = p.parse_args(argv)
    cfg = cli.config_from_args(AllocationConfig, args, flags={"scenario": "scenario"})

Precedence: defaults < ``--config FILE.yaml`` < ``--set key=value`` < explicit flags
(:func:`base.config.merge_sources`). ``--help`` ends with every config field, its type,
default and doc (:func:`base.config.help_text`), so the CLI, the docs tables and the MLflow
params all come from the field declarations.

``--resume`` means the same in every command: continue the named run from its last
checkpoint; when there is nothing to continue it is an error (exit 2), never a silent fresh
start.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from base.config import build, help_text, merge_sources, set_path
from base.errors import UsageError

C = TypeVar("C")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse exits 2 too; keep the message on one line
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n")


def parser(prog: str, description: str, config_cls: type | None = None) -> argparse.ArgumentParser:
    """An argparse parser whose ``--help`` ends with the fields of ``config_cls``."""
    return _Parser(prog=prog, description=description,
                   epilog=help_text(config_cls) if config_cls is not None else None,
                   formatter_class=argparse.RawDescriptionHelpFormatter)


def add_config_options(p: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """``--config FILE.yaml`` and repeatable ``--set KEY=VALUE``."""
    g = p.add_argument_group("common options")
    g.add_argument("--config", metavar="FILE.yaml", help="YAML file with config fields")
    g.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field (dotted keys; repeatable)")
    return g


def add_tracking_options(g: argparse._ArgumentGroup, default_experiment: str | None = None) -> None:
    g.add_argument("--tracking-uri", default=None,
                   help="MLflow tracking URI (default sqlite:///<repo>/mlflow.db)")
    g.add_argument("--experiment", default=default_experiment,
                   help=f"MLflow experiment name (default {default_experiment or 'per command'})")


def add_common_train_options(p: argparse.ArgumentParser) -> None:
    """Options every ``platform.train`` algorithm (and ``platform.sweep``) accepts."""
    g = add_config_options(p)
    g.add_argument("--seed", type=int, default=None, help="random seed (config field seed)")
    g.add_argument("--iterations", type=int, default=None,
                   help="training iterations (config field iterations)")
    add_tracking_options(g)
    g.add_argument("--resume", action="store_true",
                   help="continue the run of this name from its last checkpoint "
                        "(exit 2 when there is none)")


# argparse dest of a common option -> the config field it sets
COMMON_FLAGS = {"seed": "seed", "iterations": "iterations"}


def config_from_args(cls: type[C], args: argparse.Namespace, flags: Mapping[str, str] = COMMON_FLAGS,
                     fixed: Mapping[str, Any] | None = None) -> C:
    """Build ``cls`` from ``--config``, ``--set``, the flags (argparse dest -> dotted field)
    and ``fixed`` values; errors name the field (UsageError, exit 2). A fixed field given
    another value in ``--config`` or ``--set`` is an error, not silently replaced."""
    values = {field: getattr(args, dest, None) for dest, field in flags.items()}
    data = merge_sources(getattr(args, "config", None), getattr(args, "overrides", None), values)
    for dotted, value in (fixed or {}).items():
        given = _get_path(data, dotted)
        if given is not None and given != value:
            raise UsageError(f"{dotted}: set by the command to {value!r}; got {given!r} "
                             "(from --config or --set)")
        set_path(data, dotted, value)
    return build(cls, data)


def _get_path(data: Mapping[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(data, Mapping):
            return None
        data = data.get(part)
    return data


def run_main(main: Callable[[list[str]], int], argv: list[str] | None = None) -> int:
    """Call ``main(argv)``; UsageError -> ``error: ...`` on stderr and exit code 2."""
    try:
        return int(main(list(sys.argv[1:] if argv is None else argv)) or 0)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return UsageError.exit_code
