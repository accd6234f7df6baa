"""The direct route's call in C++ (``native_route.cpp``): a Python extension built on first use
against the PyTorch this process runs, cached beside the C kernels (`dc_kernels.cpu.build`).

It does in C++ what `dc_kernels.cpu.batches.DirectRoute` does in Python for the calls that run a
form's kernel (its checks, the output tensor, the call of the C entry point); every other call,
and every process where it cannot be built (no C++ compiler, no PyTorch headers, not Linux,
``DC_KERNELS_NO_BUILD=1``), keeps the Python route, with the same results. A build takes about
10 seconds, once per PyTorch version, Python and compiler.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.machinery
import importlib.util
import os
import shutil
import sys
import sysconfig
from importlib import resources
from pathlib import Path
from types import ModuleType

import torch

from dc_kernels.cpu import build

SOURCE = "native_route.cpp"
MODULE = "_dc_native_route"
_failure: str | None = None


def _compiler() -> str | None:
    for candidate in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if candidate and shutil.which(candidate):
            return shutil.which(candidate)
    return None


def _command(compiler: str, source: Path, target: Path) -> list[str]:
    torch_dir = Path(torch.__file__).parent
    abi = int(torch.compiled_with_cxx11_abi())
    return [
        compiler, "-O2", "-std=c++17", "-shared", "-fPIC", "-w", f"-D_GLIBCXX_USE_CXX11_ABI={abi}",
        f"-I{torch_dir / 'include'}", f"-I{torch_dir / 'include' / 'torch' / 'csrc' / 'api' / 'include'}",
        f"-I{sysconfig.get_paths()['include']}", str(source), "-o", str(target),
        f"-L{torch_dir / 'lib'}", "-ltorch", "-ltorch_cpu", "-lc10", "-ltorch_python",
        f"-Wl,-rpath,{torch_dir / 'lib'}",
    ]  # fmt: skip


def _import(path: Path) -> ModuleType:
    loader = importlib.machinery.ExtensionFileLoader(MODULE, str(path))
    spec = importlib.util.spec_from_file_location(MODULE, path, loader=loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def _build_and_import(compiler: str, text: str, directory: Path) -> ModuleType:
    key = hashlib.sha256(
        "\0".join(
            [text, compiler, torch.__version__, sys.version, str(torch.compiled_with_cxx11_abi())]
        ).encode()
    ).hexdigest()
    target = directory / f"{MODULE}-{key[:20]}{importlib.machinery.EXTENSION_SUFFIXES[0]}"
    if build._own_file(target):
        try:
            return _import(target)
        except ImportError:
            pass  # empty, truncated or foreign: built again below
    build.compile_into({SOURCE: text}, lambda folder, out: _command(compiler, folder / SOURCE, out), target)
    return _import(target)


@functools.cache
def module() -> ModuleType | None:
    """The built extension (its ``linear``, `native_route.cpp`), or None where it cannot be built
    or loaded: the Python route serves then."""
    global _failure
    compiler = _compiler()
    if os.environ.get("DC_KERNELS_NO_BUILD", "0") == "1":
        _failure = "DC_KERNELS_NO_BUILD=1"
    elif not sys.platform.startswith("linux"):
        _failure = f"built on Linux only, not {sys.platform}"
    elif compiler is None:
        _failure = "no C++ compiler found (set CXX, or install g++ or clang++)"
    elif build.library() is None:
        _failure = "the C kernels are unavailable"
    else:
        text = resources.files("dc_kernels.cpu").joinpath(SOURCE).read_text()
        try:
            return _build_and_import(compiler, text, build._private_cache_dir())
        except (OSError, ImportError, build.BuildError) as exc:
            _failure = f"{type(exc).__name__}: {str(exc).splitlines()[-1] if str(exc) else ''}"
    return None


def failure() -> str | None:
    """Why `module()` returned None (None while it has not been tried or when it works)."""
    return _failure
