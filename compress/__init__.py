"""Offline Deep Compression: pruning, weight sharing, Huffman coding, size accounting, files."""

from compress.matrix import CompressedMatrix, nearest_centroid
from compress.paper_layers import LLM_LAYERS, PAPER_LAYERS, LayerSpec, get_layer
from compress.relative_index import RelativeIndexLayer, decode_relative, encode_relative
from compress.synthetic import random_compressed_matrix

__version__ = "0.1.0"

__all__ = [
    "LLM_LAYERS",
    "PAPER_LAYERS",
    "CompressedMatrix",
    "LayerSpec",
    "RelativeIndexLayer",
    "__version__",
    "decode_relative",
    "encode_relative",
    "get_layer",
    "nearest_centroid",
    "random_compressed_matrix",
]
