"""Stage 3 of Deep Compression: the relative-index streams of a layer, Huffman-coded separately.

A `HuffmanLayer` holds the paper's relative-index format (`compress.relative_index`) with its two
streams Huffman-coded independently, as the paper does, each with its own canonical code:

* ``z``: the relative index of every entry, fillers included (alphabet ``2**index_bits``);
* ``codes``: the codebook index of every real entry (alphabet ``2**bits``). Fillers hold no
  weight, and the decoder knows them from ``z``, so unlike the fixed-width format they get no code.

``row_ptr`` counts entries of the ``z`` stream (fillers included), as in `RelativeIndexLayer`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from compress.huffman import (
    DEFAULT_SEGMENT_SYMBOLS,
    MAX_CODE_LENGTH,
    HuffmanStream,
    huffman_decode,
    huffman_encode,
)
from compress.matrix import CompressedMatrix, check_bits
from compress.relative_index import (
    RelativeIndexLayer,
    check_index_bits,
    decode_relative,
    encode_relative,
    pointer_bits,
)


@dataclass(frozen=True, eq=False)
class HuffmanLayer:
    """A layer in the relative-index format with Huffman-coded ``z`` and ``codes`` streams."""

    shape: tuple[int, int]
    bits: int
    index_bits: int
    codebook: np.ndarray  # float32[k]
    row_ptr: np.ndarray  # int64[rows + 1], into the z entries (fillers included)
    z: HuffmanStream  # alphabet 2**index_bits, one symbol per entry
    codes: HuffmanStream  # alphabet 2**bits, one symbol per real (non-filler) entry

    @property
    def entries(self) -> int:
        return self.z.num_symbols

    @property
    def nnz(self) -> int:
        return self.codes.num_symbols

    def bit_counts(self) -> dict[str, int]:
        """Exact storage in bits, with the keys of `RelativeIndexLayer.bit_counts`; each stream
        includes its code-length table, segment offsets and word padding."""
        return {
            "code_bits": self.codes.total_bits_stored(),
            "index_bits": self.z.total_bits_stored(),
            "codebook_bits": int(self.codebook.size) * 32,
            "row_ptr_bits": (self.shape[0] + 1) * pointer_bits(self.entries),
        }

    def total_bits(self) -> int:
        return sum(self.bit_counts().values())


def encode_huffman(
    layer: CompressedMatrix | RelativeIndexLayer,
    index_bits: int | None = None,
    *,
    max_len: int = MAX_CODE_LENGTH,
    segment_symbols: int = DEFAULT_SEGMENT_SYMBOLS,
) -> HuffmanLayer:
    """Huffman-code a layer's relative-index streams (``index_bits`` is needed for a matrix)."""
    if isinstance(layer, CompressedMatrix):
        if index_bits is None:
            raise TypeError("index_bits is required to encode a CompressedMatrix")
        layer = encode_relative(layer, index_bits)
    elif not isinstance(layer, RelativeIndexLayer):
        raise TypeError(f"layer must be a CompressedMatrix or RelativeIndexLayer, got {type(layer).__name__}")
    elif index_bits is not None and index_bits != layer.index_bits:
        raise ValueError(f"index_bits={index_bits} but the layer is encoded with {layer.index_bits}")
    escape = (1 << layer.index_bits) - 1
    real_codes = layer.codes[layer.z != escape]
    z = huffman_encode(layer.z, 1 << layer.index_bits, max_len=max_len, segment_symbols=segment_symbols)
    codes = huffman_encode(real_codes, 1 << layer.bits, max_len=max_len, segment_symbols=segment_symbols)
    return HuffmanLayer(
        layer.shape, layer.bits, layer.index_bits, layer.codebook.copy(), layer.row_ptr.copy(), z, codes
    )


def decode_huffman(layer: HuffmanLayer) -> CompressedMatrix:
    """Decode to the canonical form; raises ValueError on inconsistent streams."""
    bits = check_bits(layer.bits)
    index_bits = check_index_bits(layer.index_bits)
    if layer.z.code.alphabet_size != 1 << index_bits or layer.codes.code.alphabet_size != 1 << bits:
        raise ValueError(
            f"code alphabets ({layer.z.code.alphabet_size} for z, "
            f"{layer.codes.code.alphabet_size} for codes) "
            f"do not match index_bits={index_bits} and bits={bits}"
        )
    return decode_relative(
        merge_streams(
            layer.shape,
            bits,
            index_bits,
            layer.codebook,
            layer.row_ptr,
            huffman_decode(layer.z),
            huffman_decode(layer.codes),
        )
    )


def merge_streams(
    shape: tuple[int, int],
    bits: int,
    index_bits: int,
    codebook: np.ndarray,
    row_ptr: np.ndarray,
    z: np.ndarray,
    codes: np.ndarray,
) -> RelativeIndexLayer:
    """The relative-index layer of a decoded ``z`` stream and the codes of its real entries
    (fillers get code 0); raises ValueError when the codes do not match the real entries."""
    real = z != (1 << index_bits) - 1
    real_count = int(np.count_nonzero(real))
    if real_count != codes.size:
        raise ValueError(f"the z stream has {real_count} real entries but the codes stream has {codes.size}")
    entry_codes = np.zeros(z.size, dtype=np.uint8)
    entry_codes[real] = codes
    return RelativeIndexLayer(shape, bits, index_bits, codebook, row_ptr, z, entry_codes)
