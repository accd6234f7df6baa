"""Valid files built to be as costly as the format allows, and container-header bombs.

Each builder takes a ``scale`` (file size grows about linearly with it) and returns the file's
bytes, with the layers it must load as for a valid file (built once per scale and kept). The
load-cost tests measure time and peak memory against the file's size; the fuzzer mutates them.
"""

from __future__ import annotations

import functools
import json

import numpy as np

import compress
from compress import CompressedMatrix, RelativeIndexLayer, encode_huffman
from compress.huffman import MAX_SEGMENT_SYMBOLS
from tests.compress.file_surgery import pack, unpack

Layers = dict[str, CompressedMatrix]


@functools.cache
def filler_stream(scale: int) -> tuple[bytes, Layers]:
    """One kept weight after ``2**17 * scale`` fillers of 1 bit (index_bits=1: a filler advances
    one column): ~16 KiB per scale of stream, 2**17 entries each."""
    fillers = (1 << 17) * scale
    matrix = CompressedMatrix((1, fillers + 1), [0.5], [0, 1], [fillers], [0], 1)
    layers = {"fillers": matrix}
    return compress.save_bytes(layers, index_bits=1), layers


@functools.cache
def all_filler_rows(scale: int) -> tuple[bytes, Layers]:
    """Rows of nothing but fillers up to in_features, which the encoder never writes (one real
    weight in row 0 keeps the codes stream non-empty)."""
    rows, cols, index_bits = 64 * scale, 3 * 2048, 2
    escape = (1 << index_bits) - 1
    per_row = cols // escape
    z = np.full(rows * per_row, escape, dtype=np.uint8)
    z[0] = 0
    codes = np.zeros(z.size, dtype=np.uint8)
    row_ptr = np.arange(rows + 1, dtype=np.int64) * per_row
    relative = RelativeIndexLayer((rows, cols), 1, index_bits, np.array([2.0], np.float32), row_ptr, z, codes)
    layer = encode_huffman(relative)
    expected = CompressedMatrix((rows, cols), [2.0], np.r_[0, np.ones(rows, np.int64)], [0], [0], 1)
    return compress.save_bytes({"filler rows": layer}), {"filler rows": expected}


@functools.cache
def maximum_segments(scale: int) -> tuple[bytes, Layers]:
    """``4 * scale`` layers, each two streams of one segment of `MAX_SEGMENT_SYMBOLS` 1-bit
    symbols: the longest sequential decode the format allows per bit."""
    rng = np.random.default_rng(scale)
    n = MAX_SEGMENT_SYMBOLS
    layers = {}
    for i in range(4 * scale):
        gaps = rng.random(n) < 0.3  # z in {0, 1}: two symbols of 1 bit each
        columns = np.cumsum(1 + gaps) - 1
        codes = rng.integers(0, 2, n)
        layers[f"segment {i}"] = CompressedMatrix(
            (1, int(columns[-1]) + 1), [-1.0, 1.0], [0, n], columns, codes, 1
        )
    return compress.save_bytes(layers, index_bits=2, segment_symbols=n), layers


@functools.cache
def many_layers(scale: int) -> tuple[bytes, Layers]:
    """``30 * scale`` tiny layers: the per-layer work of the header and the decoders."""
    rng = np.random.default_rng(scale)
    layers = {}
    for i in range(30 * scale):
        dense = rng.random((3, 5)) < 0.5
        layers[f"l{i}"] = CompressedMatrix.from_dense(dense, rng.integers(0, 2, (3, 5)), [0.5, -0.5])
    return compress.save_bytes(layers, index_bits=2), layers


HOSTILE_VALID = {
    "filler stream": filler_stream,
    "all-filler rows": all_filler_rows,
    "maximum segments": maximum_segments,
    "many layers": many_layers,
}


# ------------------------------------------------------------------------- container bombs
def _with_container(data: bytes, edit) -> bytes:
    """``data`` with its safetensors header JSON edited by ``edit(container) -> text``."""
    length = int.from_bytes(data[:8], "little")
    text = edit(json.loads(data[8 : 8 + length])).encode()
    return len(text).to_bytes(8, "little") + text + data[8 + length :]


def _small_file() -> bytes:
    header, tensors = unpack(compress.save_bytes({"fc": compress.random_compressed_matrix(4, 6, 0.5, 2)}))
    return pack(header, tensors)


def many_tensor_entries(scale: int) -> bytes:
    """A valid file whose container lists ``5_000 * scale`` more (empty) tensors."""

    def edit(container):
        extra = {
            f"x{i}": {"dtype": "U8", "shape": [0], "data_offsets": [0, 0]} for i in range(5_000 * scale)
        }
        return json.dumps({**container, **extra})

    return _with_container(_small_file(), edit)


def nested_lists(scale: int) -> bytes:
    """A shape nested ``100_000 * scale`` lists deep."""
    depth = 100_000 * scale

    def edit(container):
        name = next(k for k in container if k != "__metadata__")
        text = json.dumps({**container, name: "SHAPE"})
        return text.replace('"SHAPE"', "[" * depth + "]" * depth)

    return _with_container(_small_file(), edit)


def flat_list(scale: int) -> bytes:
    """A shape of ``50_000 * scale`` empty lists (the costliest JSON per byte to parse)."""

    def edit(container):
        name = next(k for k in container if k != "__metadata__")
        text = json.dumps({**container, name: "SHAPE"})
        return text.replace('"SHAPE"', "[" + ",".join(["[]"] * (50_000 * scale)) + "]")

    return _with_container(_small_file(), edit)


def huge_number(scale: int) -> bytes:
    """A data offset of ``100_000 * scale`` digits."""

    def edit(container):
        name = next(k for k in container if k != "__metadata__")
        container[name]["data_offsets"] = "NUMBER"
        return json.dumps(container).replace('"NUMBER"', "[0, " + "9" * (100_000 * scale) + "]")

    return _with_container(_small_file(), edit)


BOMBS = {
    "many tensor entries": many_tensor_entries,
    "nested lists": nested_lists,
    "flat list": flat_list,
    "huge number": huge_number,
}
