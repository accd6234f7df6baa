"""Names a library package re-exports from `workloads`, imported on their first access.

The library packages must not import `workloads` when they are imported (it builds on them), yet
a few workload names were first published from them and stay reachable there. `lazy_reexports`
gives a package the module-level ``__getattr__`` and ``__dir__`` (PEP 562) that serve them.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_reexports(
    package: str, names: Mapping[str, str], namespace: dict[str, Any]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package`` whose globals are ``namespace``: each of
    ``names`` (name -> module that defines it) is imported on first access and then kept in
    ``namespace``, so later lookups are plain attribute reads."""

    def __getattr__(name: str) -> Any:
        if name not in names:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(names[name]), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *names})

    return __getattr__, __dir__
