"""The compiler tools of the installed Triton wheel and the architectures the cost model knows.

Triton's NVIDIA backend ships ``ptxas`` (which `triton.compile` runs to make the cubin) and
``nvdisasm`` (which turns the cubin into SASS). Missing tools raise `CompilerToolsMissing`, naming
the path that was searched.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from perf.cost.errors import CompilerToolsMissing, UnknownArchitecture

#: Compute capabilities (x10) the cost model compiles for: A100 (sm_80) and H100/H200 (sm_90).
ARCHS = (80, 90)


def check_arch(arch: int) -> int:
    """``arch`` if the cost model supports it, else `UnknownArchitecture` naming the known ones."""
    if isinstance(arch, bool) or not isinstance(arch, int) or arch not in ARCHS:
        known = ", ".join(f"{a} (sm_{a})" for a in ARCHS)
        raise UnknownArchitecture(f"unknown architecture {arch!r}; the cost model knows {known}")
    return arch


def triton_version() -> str:
    """The installed Triton's version; `CompilerToolsMissing` when Triton is not installed."""
    try:
        import triton
    except ImportError as exc:
        raise CompilerToolsMissing(f"Triton is not installed ({exc}); pip install triton") from exc
    return triton.__version__


def tool_dir() -> Path:
    """The folder of the CUDA tools inside the Triton wheel."""
    triton_version()
    import triton

    return Path(triton.__file__).parent / "backends" / "nvidia" / "bin"


def find_tool(name: str) -> str:
    """The path of ``name`` (``nvdisasm``, ``ptxas``) in the Triton wheel (or on PATH as a fallback);
    `CompilerToolsMissing` names both places when neither has it."""
    path = tool_dir() / name
    if path.is_file() and os.access(path, os.X_OK):
        return str(path)
    on_path = shutil.which(name)
    if on_path:
        return on_path
    raise CompilerToolsMissing(
        f"{name} not found: not in the Triton wheel ({path}) nor on PATH; the cost model needs the "
        "NVIDIA backend's tools that Triton wheels for Linux x86-64 ship"
    )


def missing_tools() -> str | None:
    """Why the compiled-code cost cannot run here, or None when Triton and its tools are present."""
    try:
        for name in ("ptxas", "nvdisasm"):
            find_tool(name)
    except CompilerToolsMissing as exc:
        return str(exc)
    return None
