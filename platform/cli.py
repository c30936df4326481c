"""Shared CLI plumbing: the common train options and exit-code-2 error handling."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from platform.errors import UsageError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse exits 2 too; keep the message on one line
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n")


def parser(prog: str, description: str) -> argparse.ArgumentParser:
    return _Parser(prog=prog, description=description,
                   formatter_class=argparse.RawDescriptionHelpFormatter)


def add_common_train_options(p: argparse.ArgumentParser) -> None:
    """Options every ``platform.train`` algorithm (and ``platform.sweep``) accepts."""
    g = p.add_argument_group("common options")
    g.add_argument("--config", metavar="FILE.yaml", help="YAML file with config fields")
    g.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field (dotted keys; repeatable)")
    g.add_argument("--seed", type=int, default=None, help="random seed (default 0)")
    g.add_argument("--iterations", type=int, default=None, help="training iterations")
    g.add_argument("--tracking-uri", default=None,
                   help="MLflow tracking URI (default sqlite:///<repo>/mlflow.db)")
    g.add_argument("--experiment", default=None, help="MLflow experiment name")
    g.add_argument("--resume", action="store_true",
                   help="continue the latest run of this experiment/name from its last checkpoint")


def run_main(main: Callable[[list[str]], int], argv: list[str] | None = None) -> int:
    """Call ``main(argv)``; UsageError -> ``error: ...`` on stderr and exit code 2."""
    try:
        return int(main(list(sys.argv[1:] if argv is None else argv)) or 0)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return UsageError.exit_code
