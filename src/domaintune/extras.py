"""Optional dependencies: import one where it is used, or fail with the pip command that adds it.

The base install stays lean (see the extras in pyproject.toml); a feature that needs an extra
calls `require` at its lazy-import site, so a missing package is one clear line naming the
feature and the install command, not an `ImportError` traceback from deep inside a stage.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from types import ModuleType

from domaintune.errors import DomainTuneError


class MissingExtra(DomainTuneError):
    """An optional package a setting or command needs is not installed."""

    def __init__(self, module: str, extra: str, purpose: str):
        self.module, self.extra, self.purpose = module, extra, purpose
        super().__init__(f"{purpose} needs the '{module.split('.')[0]}' package, which is not installed: "
                         f"pip install 'domaintune[{extra}]'")


def available(module: str) -> bool:
    """Whether `module` can be imported, without importing it (a None in sys.modules blocks it)."""
    if module in sys.modules:
        return sys.modules[module] is not None
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a dotted name whose parent package is missing
        return False


def require(module: str, extra: str, purpose: str) -> ModuleType:
    """Import and return `module`; if it is missing, raise MissingExtra naming `purpose` (what the
    user asked for, e.g. "data.normalize.chinese=t2s") and `pip install 'domaintune[extra]'`.

    Only a missing `module` itself is translated: an ImportError raised while importing an installed
    package is a real bug in that install and keeps its traceback.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        missing = getattr(exc, "name", None)
        if missing is not None and (module == missing or module.startswith(missing + ".")):
            raise MissingExtra(module, extra, purpose) from None
        raise
