"""Errors of the compressed file format: one hierarchy rooted at `CompressedFileError`.

Every defect found while loading a file raises a subclass of `CompressedFileError` (itself a
``ValueError``) whose message names the layer and the field at fault; the same names are kept
in the ``layer`` and ``field`` attributes (``None`` when the defect is not in one layer).
"""

from __future__ import annotations


class CompressedFileError(ValueError):
    """A compressed file that cannot be loaded exactly."""

    def __init__(self, message: str, *, layer: str | None = None, field: str | None = None) -> None:
        where = []
        if layer is not None:
            where.append(f"layer {layer!r}")
        if field is not None:
            where.append(f"field {field!r}")
        super().__init__(f"{', '.join(where)}: {message}" if where else message)
        self.layer = layer
        self.field = field


class TruncatedFileError(CompressedFileError):
    """The file ends before the data its header describes."""


class InvalidHeaderError(CompressedFileError):
    """A header field is missing, of the wrong type, out of range or inconsistent with another,
    or the safetensors container around it is malformed."""


class UnsupportedVersionError(CompressedFileError):
    """The file was written in a format version this library cannot read."""


class CorruptStreamError(CompressedFileError):
    """A stored tensor fails its checksum or does not decode to what the header describes."""


class LimitExceededError(CompressedFileError):
    """The file is well formed but decoding it would exceed a limit the caller set (``max_entries``
    of `compress.load`) or the memory available."""
