"""One registry per plug-in point (algorithms, advantage estimators, rewards, ...).

A duplicate name raises; an unknown name lists the known ones. Entries may be registered
lazily as ``"package.module:attribute"`` strings so that e.g. ``train --help`` lists every
algorithm without importing torch, RLlib or DeepSpeed.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class RegistryError(KeyError):
    """Unknown or duplicate registry name. ``str()`` is the plain message."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


class Registry(Generic[T]):
    """Name -> object mapping with loud failures.

    >>> r = Registry("reward function")
    >>> @r.register("accuracy")
    ... def acc(x): return x
    >>> r.get("accuracy")(1)
    1
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Any] = {}
        self._help: dict[str, str] = {}

    def register(self, name: str, obj: T | str | None = None, *, help: str = "") -> Any:
        """Register ``obj`` under ``name``; usable as a decorator when ``obj`` is omitted.

        ``obj`` may be a ``"module:attr"`` string, imported on first ``get``.
        """
        if not isinstance(name, str) or not name:
            raise ValueError(f"{self.kind} name must be a non-empty string, got {name!r}")

        def _add(value: Any) -> Any:
            if name in self._entries:
                raise RegistryError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = value
            doc = help or (getattr(value, "__doc__", None) or "").strip().split("\n")[0]
            self._help[name] = doc if not isinstance(value, str) else help
            return value

        if obj is None:
            return _add
        return _add(obj)

    def get(self, name: str) -> T:
        if name not in self._entries:
            raise RegistryError(
                f"unknown {self.kind} {name!r}; known: {', '.join(sorted(self._entries)) or '(none)'}"
            )
        value = self._entries[name]
        if isinstance(value, str):
            module_name, _, attr = value.partition(":")
            value = getattr(importlib.import_module(module_name), attr)
            self._entries[name] = value
        return value

    def help(self, name: str) -> str:
        return self._help.get(name, "")

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)


def lazy(target: str) -> Callable[[], Any]:
    """Return a thunk importing ``"module:attr"`` when called."""
    module_name, _, attr = target.partition(":")
    return lambda: getattr(importlib.import_module(module_name), attr)
