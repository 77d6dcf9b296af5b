"""A module imported on first use: ``rules = lazy("beyondbp.rules")`` binds a stand-in whose first
attribute access imports the module. The command line holds torch-importing modules this way,
so that ``beyondbp --help`` and usage errors answer without importing torch."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any


class LazyModule:
    """Stands in for the module ``name`` and imports it when an attribute is first read."""

    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def _module(self) -> ModuleType:
        return importlib.import_module(self._name)

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._module(), attr)

    def __repr__(self) -> str:
        return f"<lazy module {self._name!r}>"


def lazy(name: str) -> Any:
    """A stand-in for the module ``name`` (see :class:`LazyModule`)."""
    return LazyModule(name)
