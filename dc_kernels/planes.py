"""Bit planes: how the packed forms store a stream of small unsigned integers (codes, or the
relative-index entries of the CPU sparse form) so that a SIMD kernel unpacks 16 of them in a
few instructions.

A stream of ``width``-bit values (1..16 bits) is split into *planes* of 8, 4 and 1 bits, widest
first (5 bits = a 4-bit plane for the low bits and a 1-bit plane for the high bit; 10 bits = 8 +
1 + 1): plane ``p`` stores bits ``shift_p .. shift_p + width_p`` of every value, little-endian within
each byte: value ``i`` at bit ``i * width_p`` of byte and bit planes; in a nibble plane each group
of 16 values takes 8 bytes read as one 64-bit word, value ``j`` of the group in nibble
``(j % 2) * 8 + j // 2`` of it, so that after broadcasting the word, 32-bit lane ``j`` finds its
value in its own half of it, at bit ``4 * (j // 2)``. Unpacking 16 values then costs one
widening load for a byte plane, one broadcast and one variable shift for a nibble plane and one
mask register for a bit plane, and each value costs exactly ``width`` bits.

The planes lie one after another in one uint8 array, each starting at a multiple of
`PLANE_ALIGN` bytes, followed by `PLANE_ALIGN` zero bytes so that a kernel may load 16 bytes at
any value of the stream without reading past the array. The stream's length is a multiple of
`GROUP` values (kernels decode whole groups). The C kernels (``dc_kernels/cpu/planes.h``) and the
Triton kernels compute the same plane offsets from (length, width) with `plane_offsets`' rule.
"""

from __future__ import annotations

import numpy as np

PLANE_WIDTHS = (8, 4, 1)
MAX_WIDTH = 16
GROUP = 16  # values per SIMD step: streams are padded to a multiple of it
PLANE_ALIGN = 64  # bytes


def plane_widths(width: int) -> tuple[int, ...]:
    """The plane widths of a ``width``-bit stream, widest (lowest bits) first: 5 -> (4, 1)."""
    if isinstance(width, bool) or not isinstance(width, int) or not 1 <= width <= MAX_WIDTH:
        raise ValueError(f"a plane stream's width must be an int in 1..{MAX_WIDTH}, got {width!r}")
    out = []
    for w in PLANE_WIDTHS:
        while width >= w:
            out.append(w)
            width -= w
    return tuple(out)


def _align(n: int) -> int:
    return -(-n // PLANE_ALIGN) * PLANE_ALIGN


def plane_offsets(length: int, width: int) -> tuple[tuple[int, int, int], ...]:
    """(byte offset, width, shift) of each plane of a stream of ``length`` values."""
    out, offset, shift = [], 0, 0
    for w in plane_widths(width):
        out.append((offset, w, shift))
        offset += _align(length * w // 8)
        shift += w
    return tuple(out)


def planes_bytes(length: int, width: int) -> int:
    """Bytes of the packed stream, alignment and the zero tail included."""
    return sum(_align(length * w // 8) for w in plane_widths(width)) + PLANE_ALIGN


def check_length(length: int) -> int:
    if isinstance(length, bool) or not isinstance(length, (int, np.integer)) or length < 0 or length % GROUP:
        raise ValueError(f"a plane stream's length must be a multiple of {GROUP} >= 0, got {length!r}")
    return int(length)


# Nibble planes: the value stored at nibble p of a group's 64-bit word (see the module docstring).
_NIBBLE_ORDER = np.array([*range(0, GROUP, 2), *range(1, GROUP, 2)])


def _check_slice(length: int, start: int, count: int) -> None:
    if start % GROUP or start < 0 or count < 0 or start + count > length:
        raise ValueError(
            f"values {start}..{start + count} do not start a group of {GROUP} of a stream of {length}"
        )


def write_planes(out: np.ndarray, values: np.ndarray, width: int, length: int, start: int = 0) -> None:
    """Write ``values`` (1-D, each < 2**width) as values ``start ..`` (start a multiple of
    `GROUP`; the count too unless it ends the stream) of the ``length``-value stream whose planes
    are ``out`` (see `empty_planes`)."""
    values = np.asarray(values).reshape(-1)
    count = values.size
    _check_slice(length, start, count)
    if count and (values.min() < 0 or values.max() >= 1 << width):
        raise ValueError(f"values must lie in 0..{(1 << width) - 1} for width {width}")
    padded = -(-count // GROUP) * GROUP
    v = np.zeros(padded, dtype=np.uint32)
    v[:count] = values
    for offset, w, shift in plane_offsets(length, width):
        part = (v >> np.uint32(shift)) & np.uint32((1 << w) - 1)
        if w == 4:
            part = part.reshape(-1, GROUP)[:, _NIBBLE_ORDER]
        per_byte = 8 // w
        lanes = part.reshape(-1, per_byte) << (np.arange(per_byte, dtype=np.uint32) * w)
        first = offset + start * w // 8
        out[first : first + padded * w // 8] = lanes.sum(axis=1, dtype=np.uint32).astype(np.uint8)


def read_planes(
    planes: np.ndarray, width: int, length: int, start: int = 0, count: int | None = None
) -> np.ndarray:
    """Values ``start .. start + count`` (int64; all by default) of the ``length``-value stream
    in ``planes``; ValueError if ``planes`` is not the size such a stream takes."""
    length = check_length(length)
    count = length - start if count is None else count
    _check_slice(length, start, count)
    planes = np.asarray(planes)
    if planes.dtype != np.uint8 or planes.ndim != 1 or planes.size != planes_bytes(length, width):
        raise ValueError(
            f"a {width}-bit stream of {length} values takes {planes_bytes(length, width)} uint8 bytes, "
            f"got {planes.dtype} of shape {planes.shape}"
        )
    padded = -(-count // GROUP) * GROUP
    values = np.zeros(padded, dtype=np.int64)
    for offset, w, shift in plane_offsets(length, width):
        per_byte = 8 // w
        first = offset + start * w // 8
        raw = planes[first : first + padded * w // 8].astype(np.int64)
        lanes = (raw[:, None] >> (np.arange(per_byte) * w)) & ((1 << w) - 1)
        if w == 4:
            unordered = np.empty((padded // GROUP, GROUP), dtype=np.int64)
            unordered[:, _NIBBLE_ORDER] = lanes.reshape(-1, GROUP)
            lanes = unordered
        values |= lanes.reshape(-1) << shift
    return values[:count]


def empty_planes(length: int, width: int) -> np.ndarray:
    """Zeroed planes for a ``width``-bit stream of ``length`` values (a multiple of `GROUP`)."""
    return np.zeros(planes_bytes(check_length(length), width), dtype=np.uint8)


def pack_planes(values: np.ndarray, width: int) -> np.ndarray:
    """The planes of a whole stream ``values`` (1-D, each < 2**width, length a multiple of `GROUP`)."""
    values = np.asarray(values)
    if values.ndim != 1:
        raise ValueError(f"values must be 1-D, got shape {values.shape}")
    out = empty_planes(values.size, width)
    write_planes(out, values, width, values.size)
    return out
