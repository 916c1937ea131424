"""A lazy registry for open sets (readers, filters, tasks, engines...).

Entries are "module:attr" strings imported on first use, so registering a heavy optional
component costs nothing until someone asks for it. Unknown names get a did-you-mean.
"""

from __future__ import annotations

import difflib
import importlib
from typing import Any, Generic, TypeVar

from domaintune.errors import ConfigError

T = TypeVar("T")


def suggest(name: str, choices: list[str] | tuple[str, ...] | set[str]) -> str:
    """Return ' (did you mean 'x'?)' for the closest choice, or '' if nothing is close."""
    close = difflib.get_close_matches(name, sorted(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def import_target(target: str) -> Any:
    """Import 'package.module:attr' (or a bare module path) and return the object."""
    module_name, _, attr = target.partition(":")
    module = importlib.import_module(module_name)
    return getattr(module, attr) if attr else module


class Registry(Generic[T]):
    """Name -> lazily imported object. `kind` is used in error messages ("reader", "task")."""

    def __init__(self, kind: str):
        self.kind = kind
        self._targets: dict[str, str] = {}
        self._loaded: dict[str, T] = {}

    def register(self, name: str, target: str) -> None:
        if name in self._targets and self._targets[name] != target:
            raise ValueError(f"{self.kind} '{name}' is already registered as {self._targets[name]}")
        self._targets[name] = target

    def names(self) -> list[str]:
        return sorted(self._targets)

    def __contains__(self, name: str) -> bool:
        return name in self._targets

    def get(self, name: str) -> T:
        if name not in self._targets:
            raise ConfigError(
                [f"unknown {self.kind} '{name}'{suggest(name, self._targets)}; "
                 f"known: {', '.join(self.names())}"]
            )
        if name not in self._loaded:
            self._loaded[name] = import_target(self._targets[name])
        return self._loaded[name]
