"""Names a package exposes but imports only on their first access (PEP 562).

A package lists such names with the module that defines each and gets its module-level
``__getattr__`` and ``__dir__`` from `lazy_exports`. `compress` and `eie_model` use it for the
workload names they first published, which now live in `workloads`: that package builds on them,
so they must not import it when they are imported.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(
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
