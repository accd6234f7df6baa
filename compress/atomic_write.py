"""Replace a file so that readers see its old bytes or its new ones, never a mix.

`write_atomic` writes to a temporary file that it creates exclusively (``mkstemp``: a name no
one else can take, opened without following links) in the target's directory, flushes it to
disk, renames it over the target in one step and flushes the directory. On any error the
temporary file is removed and the target is left as it was. A link planted at the target is
replaced, not followed. Two writers of one path each write their own temporary file: the last
rename wins, and the file always holds one writer's complete bytes.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def write_atomic(path: str | os.PathLike, data: bytes) -> int:
    """Replace ``path`` by ``data`` atomically and durably; returns the bytes written. The new
    file gets the mode a plain ``open(path, "wb")`` would give it (the old file's, else the
    umask's)."""
    path = Path(path)
    directory = path.parent
    mode = _mode_for(path)
    handle, temporary = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
            if hasattr(os, "fchmod"):
                os.fchmod(f.fileno(), mode)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    fsync_directory(directory)
    return len(data)


def fsync_directory(directory: str | os.PathLike) -> None:
    """Flush a directory's entries (a rename in it) to disk, where the platform allows it."""
    with contextlib.suppress(OSError):  # Windows cannot open directories; some filesystems refuse
        handle = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(handle)
        finally:
            os.close(handle)


def _mode_for(path: Path) -> int:
    try:
        return path.stat().st_mode & 0o777
    except OSError:
        return 0o666 & ~_umask()


def _umask() -> int:
    try:  # Linux reports it without changing it (os.umask would, briefly, for every thread)
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    umask = os.umask(0o022)
    os.umask(umask)
    return umask
