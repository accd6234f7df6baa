"""Offline Deep Compression: pruning, weight sharing, Huffman coding, size accounting, files."""

from compress.config import DeepCompressionConfig, LayerConfig
from compress.errors import (
    CompressionError,
    ConfigError,
    EmptyLayerError,
    NonFiniteWeightError,
    UnsupportedModuleError,
)
from compress.kmeans import KMeansResult, kmeans_1d
from compress.matrix import CompressedMatrix, nearest_centroid
from compress.one_shot import compress_matrix
from compress.paper_layers import LLM_LAYERS, PAPER_LAYERS, LayerSpec, get_layer
from compress.relative_index import RelativeIndexLayer, decode_relative, encode_relative
from compress.size import layer_size, size_table
from compress.synthetic import random_compressed_matrix

__version__ = "0.1.0"

__all__ = [
    "LLM_LAYERS",
    "PAPER_LAYERS",
    "CompressedMatrix",
    "CompressionError",
    "ConfigError",
    "DeepCompressionConfig",
    "EmptyLayerError",
    "KMeansResult",
    "LayerConfig",
    "LayerSpec",
    "NonFiniteWeightError",
    "RelativeIndexLayer",
    "UnsupportedModuleError",
    "__version__",
    "compress_matrix",
    "decode_relative",
    "encode_relative",
    "get_layer",
    "kmeans_1d",
    "layer_size",
    "nearest_centroid",
    "random_compressed_matrix",
    "size_table",
]
