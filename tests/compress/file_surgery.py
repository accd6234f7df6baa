"""Take a compressed file apart and put it back together with valid checksums.

Corruption tests use it to plant one defect behind correct checksums, so that the loader's
checks after the checksum stage are exercised too.
"""

from __future__ import annotations

import json
import zlib

import numpy as np
import safetensors.numpy

from compress.file_format import HEADER_CRC_KEY, HEADER_KEY


def unpack(data: bytes) -> tuple[dict, dict[str, np.ndarray]]:
    """The JSON header and the tensors of a valid file (tensors are writable copies)."""
    length = int.from_bytes(data[:8], "little")
    strings = json.loads(data[8 : 8 + length])["__metadata__"]
    tensors = {name: array.copy() for name, array in safetensors.numpy.load(data).items()}
    return json.loads(strings[HEADER_KEY]), tensors


def pack(header: dict, tensors: dict[str, np.ndarray], *, fix_crc: bool = True) -> bytes:
    """A file from a header and tensors; with ``fix_crc`` every checksum is recomputed."""
    if fix_crc:
        for i, layer in enumerate(header.get("layers", [])):
            if isinstance(layer, dict) and isinstance(layer.get("crc32"), dict):
                for field in list(layer["crc32"]):
                    name = f"{i}.{field}"
                    if name in tensors:
                        layer["crc32"][field] = zlib.crc32(np.ascontiguousarray(tensors[name]))
    text = json.dumps(header)
    strings = {HEADER_KEY: text, HEADER_CRC_KEY: f"{zlib.crc32(text.encode()):08x}"}
    return safetensors.numpy.save(tensors, metadata=strings)


def data_section(data: bytes) -> tuple[int, int]:
    """(start, end) byte range of the tensor data in a file."""
    return 8 + int.from_bytes(data[:8], "little"), len(data)
