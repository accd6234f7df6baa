"""Build and load the CPU kernels (`sparse_linear.c` beside this file) on first use, cached on disk.

The kernels are plain C (no Python or PyTorch headers), so one compiler call takes well under a
second; the shared library is loaded with `ctypes`, whose calls release the GIL. Builds are
cached under ``$DC_KERNELS_CACHE`` (default ``~/.cache/dc_kernels``), keyed by the source, the
compiler, its flags and the CPU (the build uses ``-march=native``), and written atomically so
that concurrent processes never load a half-written file.

When no C compiler works the loader returns None and `CompressedLinear` falls back to PyTorch's
sparse CSR kernels (one warning). ``DC_KERNELS_NO_BUILD=1`` forces that fallback.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import warnings
from importlib import resources
from pathlib import Path

SOURCE = "sparse_linear.c"
# Tried in order: the fastest flags first, then builds for compilers without -march=native or
# OpenMP's SIMD pragmas (the portable loop is then vectorized as the compiler sees fit).
FLAG_SETS = (
    ("-O3", "-march=native", "-fopenmp-simd"),
    ("-O3", "-fopenmp-simd"),
    ("-O3",),
)
COMMON_FLAGS = ("-std=c11", "-shared", "-fPIC", "-pthread")

_lock = threading.Lock()
_library: ctypes.CDLL | None = None
_attempted = False
_failure: str | None = None


def cache_dir() -> Path:
    return Path(os.environ.get("DC_KERNELS_CACHE", "~/.cache/dc_kernels")).expanduser() / "cpu"


def _compiler() -> str | None:
    for candidate in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if candidate and shutil.which(candidate):
            return shutil.which(candidate)
    return None


def _cpu_identity() -> str:
    """What -march=native depends on: the CPU model and feature flags where the OS tells them."""
    try:
        with open("/proc/cpuinfo") as f:
            lines = [ln for ln in f if ln.startswith(("model name", "flags", "Features", "CPU part"))]
        return "".join(sorted(set(lines)))
    except OSError:
        return platform.processor() + platform.machine()


def _build(compiler: str, source: str, flags: tuple[str, ...], target: Path) -> str | None:
    """Compile into ``target`` atomically; the compiler's message on failure, else None."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        src = Path(tmp) / SOURCE
        src.write_text(source)
        out = Path(tmp) / target.name
        result = subprocess.run(
            [compiler, *flags, *COMMON_FLAGS, str(src), "-o", str(out)],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            return (result.stderr or result.stdout).strip()[-2000:]
        os.replace(out, target)
    return None


def _declare(lib: ctypes.CDLL) -> ctypes.CDLL:
    i64, ptr, cint = ctypes.c_int64, ctypes.c_void_p, ctypes.c_int
    signatures = {
        # rows, row_ptr, col, col_bits, codes, codebook, k, x, bias, y, threads
        "dc_gemv": [i64, ptr, ptr, cint, ptr, ptr, i64, ptr, ptr, ptr, cint],
        # rows, batch, bp, row_ptr, col, col_bits, codes, codebook, k, xt, bias, y, threads
        "dc_gemm": [i64, i64, i64, ptr, ptr, cint, ptr, ptr, i64, ptr, ptr, ptr, cint],
        # rows, cols, row_ptr, col, col_bits, codes, codebook, k, out, threads
        "dc_decode": [i64, i64, ptr, ptr, cint, ptr, ptr, i64, ptr, cint],
        "dc_vector_bits": [],
        "dc_batch_tile": [],
    }
    for name, argtypes in signatures.items():
        fn = getattr(lib, name)
        fn.argtypes = argtypes
        fn.restype = cint if name in ("dc_vector_bits", "dc_batch_tile") else None
    return lib


def _load() -> ctypes.CDLL | None:
    global _failure
    if os.environ.get("DC_KERNELS_NO_BUILD", "0") == "1":
        _failure = "DC_KERNELS_NO_BUILD=1"
        return None
    compiler = _compiler()
    if compiler is None:
        _failure = "no C compiler found (set CC, or install gcc or clang)"
        return None
    source = resources.files("dc_kernels.cpu").joinpath(SOURCE).read_text()
    errors = []
    for flags in FLAG_SETS:
        key = hashlib.sha256("\0".join([source, compiler, *flags, _cpu_identity()]).encode()).hexdigest()
        target = cache_dir() / f"sparse_linear-{key[:20]}{_suffix()}"
        if not target.exists():
            error = _build(compiler, source, flags, target)
            if error is not None:
                errors.append(f"{' '.join(flags)}: {error}")
                continue
        try:
            return _declare(ctypes.CDLL(str(target)))
        except OSError as exc:
            errors.append(f"{' '.join(flags)}: {exc}")
    _failure = "the C kernels did not build:\n" + "\n".join(errors)
    return None


def _suffix() -> str:
    return ".dylib" if platform.system() == "Darwin" else ".dll" if os.name == "nt" else ".so"


def library() -> ctypes.CDLL | None:
    """The loaded kernels, building them on the first call; None (after one warning) when they
    cannot be built, see `failure()`."""
    global _library, _attempted
    if _attempted:
        return _library
    with _lock:
        if not _attempted:
            _library = _load()
            _attempted = True
            if _library is None:
                warnings.warn(
                    f"dc_kernels: the compiled CPU kernels are unavailable ({_failure.splitlines()[0]}); "
                    "CompressedLinear's 'cpu' backend uses torch sparse CSR instead",
                    RuntimeWarning,
                    stacklevel=2,
                )
    return _library


def failure() -> str | None:
    """Why `library()` returned None (None while it has not been tried or when it works)."""
    return _failure


def vector_bits() -> int:
    """512 when the loaded kernels use AVX-512, 0 for the portable C loop, -1 when not built."""
    lib = library()
    return -1 if lib is None else int(lib.dc_vector_bits())
