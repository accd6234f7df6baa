"""Compressed model files: named layers in a safetensors container, Huffman-coded, checksummed.

``save(path, layers, metadata)`` writes a dict of named `CompressedMatrix` layers; ``load(path or
bytes)`` reads it back exactly, or raises a `CompressedFileError` subclass naming the layer and
field at fault. No pickle, no code execution: a standard safetensors file whose tensors are the
streams of each layer and whose ``__metadata__`` holds a JSON header.

Format version 1
----------------
``__metadata__`` holds exactly two keys: ``deep_compression``, the JSON header text, and
``deep_compression_crc32``, the CRC32 of that text's UTF-8 bytes as 8 lowercase hex digits. The
header::

    {"format": "deep-compression", "format_version": 1, "library_version": "0.1.0",
     "metadata": <any JSON value the user passed, or null>,
     "layers": [{"name": "fc6", "shape": [rows, cols], "bits": 5, "index_bits": 5,
                 "codebook_size": 32, "nnz": 123, "entries": 130,
                 "z":     {"symbols": 130, "total_bits": 450, "segment_symbols": 1024, "max_code_length": 16},
                 "codes": {"symbols": 123, "total_bits": 560, "segment_symbols": 1024, "max_code_length": 16},
                 "crc32": {"codebook": 123456789, "row_ptr": ..., "z.words": ..., ...}}, ...]}

Layer ``i`` (position in ``layers``) owns eight tensors named ``"{i}.{field}"``:

=================  =====  =================================  ============================================
field              dtype  shape                              content
=================  =====  =================================  ============================================
``codebook``       F32    [codebook_size]                    the shared weights
``row_ptr``        I64    [rows + 1]                         entries before each row (fillers included)
``z.words``        U32    [ceil(z.total_bits / 32)]          Huffman-coded relative indices
``z.offsets``      U32    [ceil(z.symbols / z.segment...)]   segment start bit offsets
``z.lengths``      U8     [2**index_bits]                    code length of each z symbol
``codes.words``    U32    [ceil(codes.total_bits / 32)]      Huffman-coded codes of the real entries
``codes.offsets``  U32    [ceil(codes.symbols / ...)]        segment start bit offsets
``codes.lengths``  U8     [2**bits]                          code length of each codebook index
=================  =====  =================================  ============================================

Streams, bit order and segments are those of `compress.huffman`; the two streams of a layer are
those of `compress.relative_index_huffman` (fillers carry no code). ``crc32`` holds the CRC32 of each
tensor's stored (little-endian) bytes.

Loading checks, in order: the container (lengths, JSON), the header checksum, format and
version, every header field (type, range, consistency), the cap on entries (``max_entries``),
the tensor table against the header (its length first, then every entry, tiling the data
exactly: no size comes from an unchecked field before allocation), every tensor's checksum, then
decodes each stream and checks it against the header. Time is linear in the file's size and
memory linear in the file's size plus the decoded layers (docs/file_format.md).
"""

from __future__ import annotations

import itertools
import json
import math
import os
import zlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import safetensors
import safetensors.numpy

from compress._version import __version__
from compress.atomic_write import write_atomic
from compress.file_errors import (
    CompressedFileError,
    CorruptStreamError,
    InvalidHeaderError,
    LimitExceededError,
    TruncatedFileError,
    UnsupportedVersionError,
)
from compress.huffman import (
    DEFAULT_SEGMENT_SYMBOLS,
    MAX_CODE_LENGTH,
    MAX_SEGMENT_SYMBOLS,
    MAX_STREAM_BITS,
    HuffmanCode,
    HuffmanStream,
    huffman_decode,
)
from compress.matrix import MAX_BITS, CompressedMatrix
from compress.relative_index import MAX_INDEX_BITS, decode_relative
from compress.relative_index_huffman import HuffmanLayer, decode_huffman, encode_huffman, merge_streams

FORMAT_NAME = "deep-compression"
FORMAT_VERSION = 1
HEADER_KEY = "deep_compression"
HEADER_CRC_KEY = "deep_compression_crc32"
MAX_HEADER_BYTES = 100_000_000  # safetensors' own limit
DEFAULT_INDEX_BITS = 5
#: `load`'s default cap on the relative-index entries of a file (real ones and fillers, all layers):
#: decoding holds about 3 bytes per entry at its peak and the layers about 13 bytes per kept
#: weight. Files of real models stay far below it (VGG-16's FC layers: ~12 M entries).
DEFAULT_MAX_ENTRIES = 1 << 31

STREAMS = ("z", "codes")
FIELDS = (
    "codebook",
    "row_ptr",
    *(f"{s}.{part}" for s in STREAMS for part in ("words", "offsets", "lengths")),
)
_DTYPES = {"F32": np.dtype("<f4"), "I64": np.dtype("<i8"), "U32": np.dtype("<u4"), "U8": np.dtype("u1")}
_CONTAINER_DTYPE_SIZES = {  # every dtype safetensors knows, so that foreign files get a typed error
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2,
    "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8,
}  # fmt: skip
_LAYER_KEYS = {"name", "shape", "bits", "index_bits", "codebook_size", "nnz", "entries", *STREAMS, "crc32"}
_STREAM_KEYS = {"symbols", "total_bits", "segment_symbols", "max_code_length"}
_HEADER_KEYS = {"format", "format_version", "library_version", "metadata", "layers"}

T = TypeVar("T")


class LoadedLayers(dict):
    """The layers of a file by name (a dict), with the file's ``metadata`` and versions."""

    def __init__(self, layers: dict, metadata: Any, library_version: str, format_version: int) -> None:
        super().__init__(layers)
        self.metadata = metadata
        self.library_version = library_version
        self.format_version = format_version


# ---------------------------------------------------------------------------------------- save
def save_bytes(
    layers: Mapping[str, CompressedMatrix | HuffmanLayer],
    metadata: Any = None,
    *,
    index_bits: int | Mapping[str, int] = DEFAULT_INDEX_BITS,
    max_code_length: int = MAX_CODE_LENGTH,
    segment_symbols: int = DEFAULT_SEGMENT_SYMBOLS,
) -> bytes:
    """The file `save` writes, as bytes (see `save` for the arguments)."""
    if not isinstance(layers, Mapping):
        raise TypeError(f"layers must be a mapping of name -> CompressedMatrix, got {type(layers).__name__}")
    header_layers = []
    tensors = {}
    for i, (name, matrix) in enumerate(layers.items()):
        if not isinstance(name, str) or not name:
            raise TypeError(f"layer names must be non-empty strings, got {name!r}")
        if isinstance(matrix, HuffmanLayer):
            layer = matrix
            try:
                decode_huffman(layer)  # only what load reads back is written
            except ValueError as exc:
                raise ValueError(f"layer {name!r} is not a consistent HuffmanLayer: {exc}") from exc
        elif isinstance(matrix, CompressedMatrix):
            if isinstance(index_bits, Mapping) and name not in index_bits:
                raise ValueError(f"index_bits has no width for layer {name!r}")
            bits_of_layer = index_bits[name] if isinstance(index_bits, Mapping) else index_bits
            layer = encode_huffman(
                matrix, bits_of_layer, max_len=max_code_length, segment_symbols=segment_symbols
            )
        else:
            raise TypeError(
                f"layer {name!r} must be a CompressedMatrix or HuffmanLayer, got {type(matrix).__name__}"
            )
        arrays = {
            "codebook": layer.codebook,
            "row_ptr": layer.row_ptr.astype(np.int64),
            **{
                f"{s}.{part}": array
                for s, stream in (("z", layer.z), ("codes", layer.codes))
                for part, array in (
                    ("words", stream.words),
                    ("offsets", stream.segment_offsets),
                    ("lengths", stream.code.lengths),
                )
            },
        }
        arrays = {
            field: np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<")) for field, a in arrays.items()
        }
        header_layers.append(
            {
                "name": name,
                "shape": list(layer.shape),
                "bits": layer.bits,
                "index_bits": layer.index_bits,
                "codebook_size": int(layer.codebook.size),
                "nnz": layer.nnz,
                "entries": layer.entries,
                **{
                    s: {
                        "symbols": stream.num_symbols,
                        "total_bits": stream.total_bits,
                        "segment_symbols": stream.segment_symbols,
                        "max_code_length": stream.code.max_len,
                    }
                    for s, stream in (("z", layer.z), ("codes", layer.codes))
                },
                "crc32": {field: zlib.crc32(a) for field, a in arrays.items()},
            }
        )
        tensors.update({f"{i}.{field}": a for field, a in arrays.items()})
    header = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "library_version": __version__,
        "metadata": metadata,
        "layers": header_layers,
    }
    try:
        text = json.dumps(header, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise TypeError(f"metadata must be JSON-serializable (no NaN or inf): {exc}") from exc
    crc = f"{zlib.crc32(text.encode('utf-8')):08x}"
    return safetensors.numpy.save(tensors, metadata={HEADER_KEY: text, HEADER_CRC_KEY: crc})


def save(
    path: str | os.PathLike,
    layers: Mapping[str, CompressedMatrix],
    metadata: Any = None,
    *,
    index_bits: int | Mapping[str, int] = DEFAULT_INDEX_BITS,
    max_code_length: int = MAX_CODE_LENGTH,
    segment_symbols: int = DEFAULT_SEGMENT_SYMBOLS,
) -> int:
    """Write named layers (Huffman-coded) to ``path``; returns the file size in bytes.

    A layer is a `CompressedMatrix` (coded here) or a `HuffmanLayer` (written as it is coded,
    e.g. one that ``load(..., keep_huffman=True)`` returned; it is decoded once to check it).
    ``metadata`` is any JSON-serializable value, returned by `load` as ``.metadata``.
    ``index_bits`` (one value, or one per layer name) sets the relative-index width of each layer;
    with Huffman coding any width from 4 up costs almost the same. ``max_code_length`` and
    ``segment_symbols`` set the Huffman code limit and the segment size of every stream. The file
    is replaced atomically (`compress.atomic_write`): a crash leaves the old file or the new one.
    """
    data = save_bytes(
        layers,
        metadata,
        index_bits=index_bits,
        max_code_length=max_code_length,
        segment_symbols=segment_symbols,
    )
    return write_atomic(path, data)


# ---------------------------------------------------------------------------------------- load
def load(
    source: str | os.PathLike | bytes | bytearray | memoryview,
    *,
    keep_huffman: bool = False,
    max_entries: int | None = DEFAULT_MAX_ENTRIES,
) -> LoadedLayers:
    """Read a file written by `save` from a path or from its bytes, validating everything.

    Returns a `LoadedLayers` dict of name -> `CompressedMatrix` (or, with ``keep_huffman``, the
    `HuffmanLayer`s, validated by decoding them once, for consumers that decode the streams
    themselves). Any defect of the file raises a `CompressedFileError` subclass; a path that
    cannot be read raises the usual ``OSError``.

    Cost: time linear in the file's size, memory linear in the file's size plus the decoded
    layers, for every file (docs/file_format.md gives the measured constants). ``max_entries``
    (default `DEFAULT_MAX_ENTRIES`; None for no cap) caps the relative-index entries of the
    whole file, checked from the header before anything is decoded: past it, or when decoding
    runs out of memory, `LimitExceededError`.
    """
    if max_entries is not None and (isinstance(max_entries, bool) or not isinstance(max_entries, int)):
        raise TypeError(f"max_entries must be an int or None, got {max_entries!r}")
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    elif isinstance(source, (str, os.PathLike)):
        data = Path(source).read_bytes()
    else:
        raise TypeError(f"source must be a path or bytes, got {type(source).__name__}")
    strings, container, data_start = _parse_container(data)
    header = _parse_header(strings)
    entries = sum(layer["entries"] for layer in header["layers"])
    if max_entries is not None and entries > max_entries:
        raise LimitExceededError(
            f"the file holds {entries} relative-index entries, more than max_entries={max_entries}",
            field="entries",
        )
    expected = _expected_tensors(header)
    table = _tensor_table(container, len(data) - data_start, expected)
    _check_table(table, expected)
    for name, (_, _, layer_name, field, crc) in expected.items():
        begin, end = table[name][2]
        actual = zlib.crc32(memoryview(data)[data_start + begin : data_start + end])
        if actual != crc:
            raise CorruptStreamError(
                f"checksum mismatch (crc32 {actual:08x}, header says {crc:08x})",
                layer=layer_name,
                field=field,
            )
    try:
        arrays = safetensors.numpy.load(data)
    except (safetensors.SafetensorError, ValueError, TypeError) as exc:
        raise InvalidHeaderError(f"safetensors cannot read the container: {exc}") from exc
    del data
    layers = {}
    for i, layer_header in enumerate(header["layers"]):
        layer_arrays = {}
        for field in FIELDS:
            array = arrays.pop(f"{i}.{field}", None)
            dtype, shape = expected[f"{i}.{field}"][:2]
            if array is None or array.dtype != _DTYPES[dtype] or list(array.shape) != shape:
                raise InvalidHeaderError(
                    "safetensors returned a different tensor than its header describes",
                    layer=layer_header["name"],
                    field=field,
                )
            layer_arrays[field] = array
        try:
            layers[layer_header["name"]] = _decode_layer(layer_header, layer_arrays, keep_huffman)
        except MemoryError as exc:
            raise LimitExceededError(
                f"not enough memory to decode {layer_header['entries']} entries",
                layer=layer_header["name"],
                field="entries",
            ) from exc
    return LoadedLayers(layers, header["metadata"], header["library_version"], header["format_version"])


def read_metadata(source: str | os.PathLike | bytes | bytearray | memoryview) -> Any:
    """The ``metadata`` a file was saved with, from its checked header alone (from a path, only
    the header's bytes are read; no tensor is read or decoded)."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source[: 8 + MAX_HEADER_BYTES])
    elif isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as f:
            start = f.read(8)
            data = start + f.read(min(int.from_bytes(start, "little"), MAX_HEADER_BYTES + 1))
    else:
        raise TypeError(f"source must be a path or bytes, got {type(source).__name__}")
    return _parse_header(_parse_container(data)[0])["metadata"]


def _parse_container(data: bytes) -> tuple[dict[str, str], dict[str, Any], int]:
    """The safetensors header: (metadata strings, the other entries unchecked, start of the data)."""
    if len(data) < 8:
        raise TruncatedFileError(
            f"the file has {len(data)} bytes, fewer than the 8-byte safetensors header length",
            field="header_length",
        )
    header_length = int.from_bytes(data[:8], "little")
    if header_length > MAX_HEADER_BYTES:
        raise InvalidHeaderError(
            f"safetensors header length {header_length} exceeds {MAX_HEADER_BYTES} bytes",
            field="header_length",
        )
    if 8 + header_length > len(data):
        raise TruncatedFileError(
            f"the safetensors header needs {header_length} bytes but only {len(data) - 8} follow",
            field="header_length",
        )
    try:
        container = json.loads(data[8 : 8 + header_length].decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise InvalidHeaderError(f"the safetensors header is not valid JSON: {exc}", field="header") from exc
    if not isinstance(container, dict):
        raise InvalidHeaderError(
            f"the safetensors header must be a JSON object, got {type(container).__name__}", field="header"
        )
    strings = container.pop("__metadata__", None)
    if not isinstance(strings, dict) or not all(isinstance(v, str) for v in strings.values()):
        raise InvalidHeaderError("missing or not an object of strings", field="__metadata__")
    return strings, container, 8 + header_length


def _tensor_table(
    container: dict[str, Any], data_length: int, expected: Mapping[str, Any]
) -> dict[str, tuple[str, list[int], tuple[int, int]]]:
    """The container's tensor table, checked to tile the ``data_length`` data bytes exactly. The
    count comes first: a table longer than the header implies is not walked."""
    if len(container) > len(expected):
        extra = list(itertools.islice((name for name in container if name not in expected), 5))
        raise InvalidHeaderError(
            f"unexpected tensors {extra}: the container lists {len(container)}, the header implies "
            f"{len(expected)}",
            field="tensors",
        )
    table = {}
    for name, info in container.items():
        if (
            not isinstance(info, dict)
            or set(info) != {"dtype", "shape", "data_offsets"}
            or info["dtype"] not in _CONTAINER_DTYPE_SIZES
            or not _is_int_list(info["shape"])
            or not _is_int_list(info["data_offsets"], length=2)
            or min(info["shape"], default=0) < 0
            or not 0 <= info["data_offsets"][0] <= info["data_offsets"][1]
        ):
            raise InvalidHeaderError(f"malformed safetensors entry {info!r}"[:300], field=f"tensor {name}")
        begin, end = info["data_offsets"]
        nbytes = math.prod(info["shape"]) * _CONTAINER_DTYPE_SIZES[info["dtype"]]
        if end - begin != nbytes:
            raise InvalidHeaderError(
                f"data_offsets [{begin}, {end}] hold {end - begin} bytes, shape {info['shape']} of "
                f"{info['dtype']} needs {nbytes}",
                field=f"tensor {name}",
            )
        table[name] = (info["dtype"], info["shape"], (begin, end))
    spans = sorted(span for _, _, span in table.values())
    data_end = max((end for _, end in spans), default=0)
    if data_end > data_length:
        raise TruncatedFileError(
            f"the tensors end at data byte {data_end} but the file holds only {data_length} data bytes",
            field="data",
        )
    position = 0
    for begin, end in spans:
        if begin != position:
            raise InvalidHeaderError(
                f"the tensors do not tile the data section: a gap or overlap at byte {position}", field="data"
            )
        position = end
    if position != data_length:
        raise InvalidHeaderError(f"{data_length - position} bytes after the last tensor", field="data")
    return table


def _parse_header(strings: dict[str, str]) -> dict:
    if set(strings) != {HEADER_KEY, HEADER_CRC_KEY}:
        raise InvalidHeaderError(
            f"__metadata__ must hold exactly the keys {HEADER_KEY!r} and {HEADER_CRC_KEY!r}, "
            f"got {sorted(strings)}",
            field="__metadata__",
        )
    text = strings[HEADER_KEY]
    try:
        actual = zlib.crc32(text.encode("utf-8"))
    except UnicodeEncodeError as exc:  # lone surrogates from a \ud8xx escape
        raise InvalidHeaderError(f"the header is not valid Unicode: {exc}", field=HEADER_KEY) from exc
    if strings[HEADER_CRC_KEY] != f"{actual:08x}":
        raise CorruptStreamError(
            f"header checksum mismatch (crc32 {actual:08x}, stored {strings[HEADER_CRC_KEY]!r})",
            field=HEADER_CRC_KEY,
        )
    try:
        header = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise InvalidHeaderError(f"not valid JSON: {exc}", field=HEADER_KEY) from exc
    if not isinstance(header, dict):
        raise InvalidHeaderError(f"must be a JSON object, got {type(header).__name__}", field=HEADER_KEY)
    if header.get("format") != FORMAT_NAME:
        raise InvalidHeaderError(f"expected {FORMAT_NAME!r}, got {header.get('format')!r}", field="format")
    version = _int(header, "format_version", 0, 2**63)
    if version != FORMAT_VERSION:
        raise UnsupportedVersionError(
            f"format version {version} is not supported (this library reads version {FORMAT_VERSION})",
            field="format_version",
        )
    _exact_keys(header, _HEADER_KEYS, None, "")
    if not isinstance(header["library_version"], str):
        raise InvalidHeaderError("must be a string", field="library_version")
    layers = header["layers"]
    if not isinstance(layers, list):
        raise InvalidHeaderError(f"must be a list, got {type(layers).__name__}", field="layers")
    names = set()
    for i, layer in enumerate(layers):
        if not isinstance(layer, dict) or not isinstance(layer.get("name"), str) or not layer["name"]:
            raise InvalidHeaderError("must be an object with a non-empty string 'name'", field=f"layers[{i}]")
        name = layer["name"]
        if name in names:
            raise InvalidHeaderError("duplicate layer name", layer=name, field="name")
        names.add(name)
        _check_layer_header(layer)
    return header


def _check_layer_header(layer: dict) -> None:
    name = layer["name"]
    _exact_keys(layer, _LAYER_KEYS, name, "")
    shape = layer["shape"]
    if not _is_int_list(shape, length=2) or not (1 <= shape[0] < 2**62 and 1 <= shape[1] < 2**31):
        raise InvalidHeaderError(
            f"must be [rows, cols] with 1 <= rows < 2**62 and 1 <= cols < 2**31, got {shape!r}",
            layer=name,
            field="shape",
        )
    bits = _int(layer, "bits", 1, MAX_BITS, name)
    _int(layer, "index_bits", 1, MAX_INDEX_BITS, name)
    _int(layer, "codebook_size", 1, 2**bits, name)
    nnz = _int(layer, "nnz", 0, shape[0] * shape[1], name)
    entries = _int(layer, "entries", nnz, MAX_STREAM_BITS, name)
    for s in STREAMS:
        stream = layer[s]
        if not isinstance(stream, dict):
            raise InvalidHeaderError(f"must be an object, got {type(stream).__name__}", layer=name, field=s)
        _exact_keys(stream, _STREAM_KEYS, name, f"{s}.")
        symbols = _int(stream, "symbols", 0, MAX_STREAM_BITS, name, f"{s}.")
        if symbols != (entries if s == "z" else nnz):
            raise InvalidHeaderError(
                f"{symbols} symbols, but the layer has {'entries' if s == 'z' else 'nnz'}="
                f"{entries if s == 'z' else nnz}",
                layer=name,
                field=f"{s}.symbols",
            )
        _int(stream, "total_bits", 0, MAX_STREAM_BITS, name, f"{s}.")
        _int(stream, "segment_symbols", 1, MAX_SEGMENT_SYMBOLS, name, f"{s}.")
        _int(stream, "max_code_length", 1, MAX_CODE_LENGTH, name, f"{s}.")
    crcs = layer["crc32"]
    if not isinstance(crcs, dict):
        raise InvalidHeaderError(f"must be an object, got {type(crcs).__name__}", layer=name, field="crc32")
    _exact_keys(crcs, set(FIELDS), name, "crc32.")
    for field in FIELDS:
        _int(crcs, field, 0, 2**32 - 1, name, "crc32.")


def _expected_tensors(header: dict) -> dict[str, tuple[np.dtype, list[int], str, str, int]]:
    """Tensor name -> (dtype, shape, layer name, field, crc32), all derived from checked fields."""
    expected = {}
    for i, layer in enumerate(header["layers"]):
        rows = layer["shape"][0]
        shapes = {"codebook": ("F32", [layer["codebook_size"]]), "row_ptr": ("I64", [rows + 1])}
        for s, alphabet_bits in (("z", layer["index_bits"]), ("codes", layer["bits"])):
            stream = layer[s]
            shapes[f"{s}.words"] = ("U32", [-(-stream["total_bits"] // 32)])
            shapes[f"{s}.offsets"] = ("U32", [-(-stream["symbols"] // stream["segment_symbols"])])
            shapes[f"{s}.lengths"] = ("U8", [1 << alphabet_bits])
        for field, (dtype, shape) in shapes.items():
            expected[f"{i}.{field}"] = (dtype, shape, layer["name"], field, layer["crc32"][field])
    return expected


def _check_table(table: dict, expected: dict) -> None:
    for name, (dtype, shape, layer, field, _) in expected.items():
        if name not in table:
            raise InvalidHeaderError(f"tensor {name!r} is missing from the file", layer=layer, field=field)
        if table[name][:2] != (dtype, shape):
            raise InvalidHeaderError(
                f"tensor {name!r} is {table[name][0]} {table[name][1]}, the header implies {dtype} {shape}",
                layer=layer,
                field=field,
            )
    extra = sorted(set(table) - set(expected))
    if extra:
        raise InvalidHeaderError(f"unexpected tensors {extra[:5]}", field="tensors")


def _decode_layer(
    header: dict, arrays: dict[str, np.ndarray], keep_huffman: bool
) -> CompressedMatrix | HuffmanLayer:
    name = header["name"]

    def guard(field: str, build: Callable[[], T]) -> T:
        try:
            return build()
        except (ValueError, TypeError) as exc:
            if isinstance(exc, CompressedFileError):
                raise
            raise CorruptStreamError(str(exc), layer=name, field=field) from exc

    codebook = arrays["codebook"]
    if not np.all(np.isfinite(codebook)):
        raise CorruptStreamError("holds NaN or inf values", layer=name, field="codebook")
    row_ptr = arrays["row_ptr"]
    entries = header["entries"]
    # The range check comes first: np.diff of out-of-range int64 values can overflow.
    if row_ptr[0] != 0 or row_ptr[-1] != entries or row_ptr.min() < 0 or row_ptr.max() > entries:
        raise CorruptStreamError(
            f"row pointers must run from 0 to entries={entries} within that range, got first {row_ptr[0]}, "
            f"last {row_ptr[-1]}, range [{row_ptr.min()}, {row_ptr.max()}]",
            layer=name,
            field="row_ptr",
        )
    if np.any(np.diff(row_ptr) < 0):
        step = int(np.argmin(np.diff(row_ptr)))
        raise CorruptStreamError(
            f"row pointers must not decrease, got {row_ptr[step]} then {row_ptr[step + 1]} at row {step + 1}",
            layer=name,
            field="row_ptr",
        )
    streams = {}
    for s in STREAMS:
        info = header[s]
        code = guard(
            f"{s}.lengths",
            lambda s=s, info=info: HuffmanCode(arrays[f"{s}.lengths"], info["max_code_length"]),
        )
        streams[s] = guard(
            f"{s}.offsets",
            lambda s=s, info=info, code=code: HuffmanStream(
                code,
                arrays[f"{s}.words"],
                info["total_bits"],
                info["symbols"],
                info["segment_symbols"],
                arrays[f"{s}.offsets"],
            ),
        )
    beyond = np.flatnonzero(streams["codes"].code.lengths[header["codebook_size"] :])
    if beyond.size:
        raise CorruptStreamError(
            f"code {header['codebook_size'] + int(beyond[0])} is at or beyond codebook_size="
            f"{header['codebook_size']} but has a codeword",
            layer=name,
            field="codes.lengths",
        )
    z = guard("z.words", lambda: huffman_decode(streams["z"]))
    codes = guard("codes.words", lambda: huffman_decode(streams["codes"]))
    shape, bits, index_bits = tuple(header["shape"]), header["bits"], header["index_bits"]
    relative = guard(
        "codes.symbols", lambda: merge_streams(shape, bits, index_bits, codebook, row_ptr, z, codes)
    )
    matrix = guard("z.words", lambda: decode_relative(relative))
    if keep_huffman:
        return HuffmanLayer(shape, bits, index_bits, codebook, row_ptr, streams["z"], streams["codes"])
    return matrix


def _exact_keys(obj: dict, keys: set[str], layer: str | None, prefix: str) -> None:
    missing, extra = sorted(keys - set(obj)), sorted(set(obj) - keys)
    if missing:
        raise InvalidHeaderError("missing", layer=layer, field=prefix + missing[0])
    if extra:
        raise InvalidHeaderError("unknown field", layer=layer, field=prefix + extra[0])


def _int(obj: dict, key: str, low: int, high: int, layer: str | None = None, prefix: str = "") -> int:
    if key not in obj:
        raise InvalidHeaderError("missing", layer=layer, field=prefix + key)
    value = obj[key]
    if type(value) is not int or not low <= value <= high:
        raise InvalidHeaderError(
            f"must be an int in {low}..{high}, got {value!r}", layer=layer, field=prefix + key
        )
    return value


def _is_int_list(value: Any, length: int | None = None) -> bool:
    return (
        isinstance(value, list)
        and (length is None or len(value) == length)
        and all(type(v) is int for v in value)
    )
