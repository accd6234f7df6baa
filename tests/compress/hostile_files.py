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

Layers = dict[str, CompressedMatrix]


@functools.cache
def filler_stream(fillers: int) -> tuple[bytes, Layers]:
    """One kept weight after ``fillers`` fillers of 1 bit (index_bits=1: a filler advances one
    column): a byte of file per 8 entries."""
    matrix = CompressedMatrix((1, fillers + 1), [0.5], [0, 1], [fillers], [0], 1)
    layers = {"fillers": matrix}
    return compress.save_bytes(layers, index_bits=1), layers


@functools.cache
def all_filler_rows(rows: int, cols: int, index_bits: int = 2) -> tuple[bytes, Layers]:
    """Rows of nothing but fillers up to in_features, which the encoder never writes (one real
    weight in row 0 keeps the codes stream non-empty)."""
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
def maximum_segments(count: int, symbols: int = MAX_SEGMENT_SYMBOLS) -> tuple[bytes, Layers]:
    """``count`` layers, each two streams of ``symbols`` 1-bit symbols in one segment of the
    largest size the format allows: the longest sequential decode per bit."""
    rng = np.random.default_rng(count)
    layers = {}
    for i in range(count):
        gaps = rng.random(symbols) < 0.3  # z in {0, 1}: two symbols of 1 bit each
        columns = np.cumsum(1 + gaps) - 1
        codes = rng.integers(0, 2, symbols)
        shape = (1, int(columns[-1]) + 1)
        layers[f"segment {i}"] = CompressedMatrix(shape, [-1.0, 1.0], [0, symbols], columns, codes, 1)
    return compress.save_bytes(layers, index_bits=2, segment_symbols=MAX_SEGMENT_SYMBOLS), layers


@functools.cache
def many_layers(count: int) -> tuple[bytes, Layers]:
    """``count`` tiny layers: the per-layer work of the header and the decoders."""
    rng = np.random.default_rng(count)
    layers = {}
    for i in range(count):
        dense = rng.random((3, 5)) < 0.5
        layers[f"l{i}"] = CompressedMatrix.from_dense(dense, rng.integers(0, 2, (3, 5)), [0.5, -0.5])
    return compress.save_bytes(layers, index_bits=2), layers


#: name -> (scale -> (file, layers)): about 16 to 90 KiB of file per scale.
HOSTILE_VALID = {
    "filler stream": lambda scale: filler_stream((1 << 17) * scale),
    "all-filler rows": lambda scale: all_filler_rows(64 * scale, 3 * 2048),
    "maximum segments": lambda scale: maximum_segments(4 * scale),
    "many layers": lambda scale: many_layers(30 * scale),
}


# ------------------------------------------------------------------------- container bombs
def _with_container(data: bytes, edit) -> bytes:
    """``data`` with its safetensors header JSON edited by ``edit(container) -> text``."""
    length = int.from_bytes(data[:8], "little")
    text = edit(json.loads(data[8 : 8 + length])).encode()
    return len(text).to_bytes(8, "little") + text + data[8 + length :]


def many_tensor_entries(data: bytes, count: int) -> bytes:
    """``data`` whose container lists ``count`` more (empty) tensors."""

    def edit(container):
        extra = {f"x{i}": {"dtype": "U8", "shape": [0], "data_offsets": [0, 0]} for i in range(count)}
        return json.dumps({**container, **extra})

    return _with_container(data, edit)


def _replace_value(data: bytes, field: str, text: str) -> bytes:
    """``data`` with the ``field`` of its first tensor's entry replaced by raw JSON ``text``."""

    def edit(container):
        name = min(k for k in container if k != "__metadata__")
        container[name][field] = "PLACEHOLDER"
        return json.dumps(container).replace('"PLACEHOLDER"', text)

    return _with_container(data, edit)


def nested_lists(data: bytes, depth: int) -> bytes:
    """A shape nested ``depth`` lists deep."""
    return _replace_value(data, "shape", "[" * depth + "]" * depth)


def flat_list(data: bytes, count: int) -> bytes:
    """A shape of ``count`` empty lists (about the costliest JSON per byte to parse)."""
    return _replace_value(data, "shape", "[" + ",".join(["[]"] * count) + "]")


def huge_number(data: bytes, digits: int) -> bytes:
    """A data offset of ``digits`` digits."""
    return _replace_value(data, "data_offsets", "[0, " + "9" * digits + "]")


def _small_file() -> bytes:
    return compress.save_bytes({"fc": compress.random_compressed_matrix(4, 6, 0.5, 2)})


#: name -> (scale -> a file whose container is a bomb).
BOMBS = {
    "many tensor entries": lambda scale: many_tensor_entries(_small_file(), 5_000 * scale),
    "nested lists": lambda scale: nested_lists(_small_file(), 100_000 * scale),
    "flat list": lambda scale: flat_list(_small_file(), 50_000 * scale),
    "huge number": lambda scale: huge_number(_small_file(), 100_000 * scale),
}
