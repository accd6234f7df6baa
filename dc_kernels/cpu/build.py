"""Build and load the CPU kernels (the C files beside this file: `sparse_linear.c` for the sparse
form, `dense_codes.c` for the dense-codes form, `pool.c` the thread pool they share, `planes.h` their
bit-plane decoders and `layers.h` the layer descriptors their entry points take) on first use, as
one shared library cached on disk.

The kernels are plain C (no Python or PyTorch headers), so one compiler call takes about a
second; the shared library is loaded with `ctypes`, whose calls release the GIL (short calls of
the direct route use a second handle that keeps it, `_declare`). Builds are
cached under ``$DC_KERNELS_CACHE`` (default ``~/.cache/dc_kernels``), keyed by the sources, the
compiler, its flags and the CPU (the build uses ``-march=native``), and written atomically so
that concurrent processes never load a half-written file.

The cache only serves code this user wrote: its directories are created private (mode 0700) and
refused when another user owns them or when group or others may write to them, and a cached
library that is not a regular file of this user's, or that does not load (empty, truncated,
missing a kernel), is built again. When the cache cannot be used (read-only or not a directory,
as with a read-only home in a container, or unsafe), the kernels are built in a private
temporary directory for this process instead, with one warning naming the problem.

When no C compiler works the loader returns None and `CompressedLinear` falls back to PyTorch's
sparse CSR kernels (one warning). ``DC_KERNELS_NO_BUILD=1`` forces that fallback.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import stat
import subprocess
import tempfile
import threading
import warnings
from importlib import resources
from pathlib import Path

# Compiled into one library, in this order; HEADERS are included by them.
SOURCES = ("pool.c", "sparse_linear.c", "dense_codes.c")
HEADERS = ("pool.h", "planes.h", "layers.h")
# Tried in order: the fastest flags first (OpenMP: the kernels' threads are PyTorch's, `pool.c`),
# then builds for compilers without OpenMP, -march=native or OpenMP's SIMD pragmas (the portable
# loop is then vectorized as the compiler sees fit).
FLAG_SETS = (
    ("-O3", "-march=native", "-fopenmp"),
    ("-O3", "-march=native", "-fopenmp-simd"),
    ("-O3", "-fopenmp-simd"),
    ("-O3",),
)
COMMON_FLAGS = ("-std=c11", "-shared", "-fPIC", "-pthread")

_lock = threading.Lock()
_library: ctypes.CDLL | None = None
_attempted = False
_failure: str | None = None
_notice: str | None = None  # why the kernels were built outside the cache, when they were


class BuildError(RuntimeError):
    """The compiler rejected the source with these flags (its message)."""


def cache_dir() -> Path:
    return _cache_root() / "cpu"


def _cache_root() -> Path:
    return Path(os.environ.get("DC_KERNELS_CACHE", "~/.cache/dc_kernels")).expanduser()


def _private_cache_dir() -> Path:
    """`cache_dir()`, created private if missing; OSError naming the problem when it cannot be
    created or another user could have put code in it."""
    for directory in (_cache_root(), cache_dir()):
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = os.stat(directory)
        if not stat.S_ISDIR(info.st_mode):
            raise NotADirectoryError(f"{directory} is not a directory")
        if hasattr(os, "getuid") and info.st_uid != os.getuid():
            raise PermissionError(f"{directory} belongs to user id {info.st_uid}, not to this user")
        if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise PermissionError(
                f"{directory} is writable by group or others (mode {info.st_mode & 0o777:o})"
            )
    return cache_dir()


def _own_file(path: Path) -> bool:
    """Whether ``path`` is a regular file (not a link) of this user's that only it may write."""
    try:
        info = os.lstat(path)
    except OSError:
        return False
    mine = not hasattr(os, "getuid") or info.st_uid == os.getuid()
    return stat.S_ISREG(info.st_mode) and mine and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


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


def _build(compiler: str, sources: dict[str, str], flags: tuple[str, ...], target: Path) -> None:
    """Compile ``sources`` (file name -> text) into ``target`` atomically (`compile_into`)."""

    def command(folder: Path, out: Path) -> list[str]:
        return [compiler, *flags, *COMMON_FLAGS, *(str(folder / name) for name in SOURCES), "-o", str(out)]

    compile_into(sources, command, target)


def compile_into(sources: dict[str, str], command, target: Path) -> None:
    """Write ``sources`` (file name -> text) into a private folder beside ``target``, run
    ``command(folder, out)`` there and move ``out`` to ``target`` atomically; `BuildError` with the
    compiler's message on failure, OSError when the directory cannot be written."""
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        folder = Path(tmp)
        for name, text in sources.items():
            (folder / name).write_text(text)
        out = folder / target.name
        result = subprocess.run(command(folder, out), capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise BuildError((result.stderr or result.stdout).strip()[-2000:])
        os.chmod(out, 0o755)
        os.replace(out, target)


class SparseLayer(ctypes.Structure):
    """``dc_sparse_layer_t`` of ``layers.h``: one layer of the sparse form, for its kernels."""

    _fields_ = [
        ("rows", ctypes.c_int64),
        ("cols", ctypes.c_int64),
        ("entry_ptr", ctypes.c_void_p),
        ("planes", ctypes.c_void_p),
        ("length", ctypes.c_int64),
        ("bits", ctypes.c_int32),
        ("index_bits", ctypes.c_int32),
        ("codebook", ctypes.c_void_p),
        ("k", ctypes.c_int64),
    ]


class CodesLayer(ctypes.Structure):
    """``dc_codes_layer_t`` of ``layers.h``: one layer of the dense-codes form, for its kernels."""

    _fields_ = [
        ("rows", ctypes.c_int64),
        ("cols", ctypes.c_int64),
        ("stride", ctypes.c_int64),
        ("planes", ctypes.c_void_p),
        ("length", ctypes.c_int64),
        ("width", ctypes.c_int32),
        ("unused", ctypes.c_int32),
        ("codebook", ctypes.c_void_p),
        ("k", ctypes.c_int64),
    ]


def _declare(lib: ctypes.CDLL) -> ctypes.CDLL:
    """``lib`` with its entry points' signatures, and as ``lib.holding_gil`` the same library
    loaded again through `ctypes.PyDLL`, whose calls keep the GIL: for calls of a few tens of
    microseconds, where releasing and retaking it costs a noticeable share (about 1 us)."""
    _sign(lib)
    lib.holding_gil = _sign(ctypes.PyDLL(lib._name))
    return lib


def _sign(lib: ctypes.CDLL) -> ctypes.CDLL:
    i64, ptr, cint = ctypes.c_int64, ctypes.c_void_p, ctypes.c_int
    sparse, codes = ctypes.POINTER(SparseLayer), ctypes.POINTER(CodesLayer)
    signatures = {
        # layer, batch, x, bias, y, threads -> 0, or -1 when out of memory
        "dc_sparse_linear": ([sparse, i64, ptr, ptr, ptr, cint], cint),
        # layer, row0, rows, out, threads
        "dc_sparse_decode": ([sparse, i64, i64, ptr, cint], None),
        # layer, batch, x, bias, y, threads -> 0
        "dc_codes_linear": ([codes, i64, ptr, ptr, ptr, cint], cint),
        # layer, row0, rows, out, threads
        "dc_codes_decode": ([codes, i64, i64, ptr, cint], None),
        # in_features -> the most rows of x dc_codes_linear runs (decode + GEMM beyond)
        "dc_codes_kernel_max_batch": ([i64], i64),
        "dc_vector_bits": ([], cint),
    }
    for name, (argtypes, restype) in signatures.items():
        fn = getattr(lib, name)
        fn.argtypes = argtypes
        fn.restype = restype
    return lib


def _load() -> ctypes.CDLL | None:
    global _failure, _notice
    if os.environ.get("DC_KERNELS_NO_BUILD", "0") == "1":
        _failure = "DC_KERNELS_NO_BUILD=1"
        return None
    compiler = _compiler()
    if compiler is None:
        _failure = "no C compiler found (set CC, or install gcc or clang)"
        return None
    folder = resources.files("dc_kernels.cpu")
    sources = {name: folder.joinpath(name).read_text() for name in (*SOURCES, *HEADERS)}
    errors: list[str] = []
    try:
        return _load_from(compiler, sources, _private_cache_dir(), errors)
    except OSError as exc:  # the cache cannot be used at all: build for this process only
        problem = f"the kernel cache {cache_dir()} cannot be used ({exc})"
    with tempfile.TemporaryDirectory(prefix="dc_kernels-", ignore_cleanup_errors=True) as private:
        library = _load_from(compiler, sources, Path(private), errors)  # loaded: the file may go
    if library is not None:
        _notice = f"{problem}; the CPU kernels were built in a temporary directory instead"
        return library
    _failure = f"{problem}, and the C kernels did not build:\n" + "\n".join(errors)
    return None


def _load_from(
    compiler: str, sources: dict[str, str], directory: Path, errors: list[str]
) -> ctypes.CDLL | None:
    """The kernels of the first flag set that builds and loads in ``directory`` (reusing a good
    cached build, rebuilding a bad one); None with ``errors`` filled when none does."""
    global _failure
    for flags in FLAG_SETS:
        parts = [f"{name}\0{text}" for name, text in sources.items()]
        key = hashlib.sha256("\0".join([*parts, compiler, *flags, _cpu_identity()]).encode()).hexdigest()
        target = directory / f"dc_kernels-{key[:20]}{_suffix()}"
        if _own_file(target):
            try:
                return _declare(ctypes.CDLL(str(target)))
            except (OSError, AttributeError):
                pass  # empty, truncated or foreign: built again below
        try:
            _build(compiler, sources, flags, target)
            return _declare(ctypes.CDLL(str(target)))
        except BuildError as exc:
            errors.append(f"{' '.join(flags)}: {exc}")
        except (OSError, AttributeError) as exc:
            if not directory.is_dir() or not os.access(directory, os.W_OK):
                raise  # the directory itself is the problem: let the caller build elsewhere
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
            elif _notice is not None:
                warnings.warn(
                    f"dc_kernels: {_notice} (set DC_KERNELS_CACHE to a private, writable directory to cache "
                    "them)",
                    RuntimeWarning,
                    stacklevel=2,
                )
    return _library


def failure() -> str | None:
    """Why `library()` returned None (None while it has not been tried or when it works)."""
    return _failure


def vector_bits() -> int:
    """512 when the loaded kernels use AVX-512, 256 for AVX2, 0 for the portable C loops, -1 when not
    built."""
    lib = library()
    return -1 if lib is None else int(lib.dc_vector_bits())
