"""Package exports that load on first use.

The ``factory`` command imports every part's CLI module, and the edge agent imports the
command: a package whose ``__init__`` imported its heavy modules (FastAPI, psycopg, numpy)
would load them on a Raspberry Pi. Such packages name their exports here instead.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(package: str, homes: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` that imports ``name`` from ``homes[name]`` when first asked.

    The value is then stored on the package, so it also wins over a submodule of the same
    name (``dashboards.export`` the function, not the module).
    """

    def load(name: str) -> Any:
        home = homes.get(name)
        if home is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(home), name)
        setattr(sys.modules[package], name, value)
        return value

    return load
