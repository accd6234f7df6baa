"""Offline Deep Compression: pruning, weight sharing, Huffman coding, size accounting, files.

``random_compressed_matrix``, ``LayerSpec``, ``PAPER_LAYERS``, ``LLM_LAYERS`` and ``get_layer``
live in the `workloads` package (`workloads.synthetic`, `workloads.paper_layers`); they stay
importable from here and are imported from there on first access.
"""

from compress._lazy import lazy_exports
from compress._version import __version__
from compress.calibrated_layer import CalibratedLayer, compress_calibrated_layer
from compress.calibration import CalibrationResult, LayerReport, calibrated_compress
from compress.calibration_data import CalibrationSet, load_calibration, save_calibration
from compress.compressor import Compressor
from compress.config import DeepCompressionConfig, LayerConfig
from compress.errors import (
    CalibrationError,
    CompressionError,
    ConfigError,
    EmptyLayerError,
    NonFiniteWeightError,
    SingularHessianError,
    UnsupportedModuleError,
)
from compress.file_errors import (
    CompressedFileError,
    CorruptStreamError,
    InvalidHeaderError,
    LimitExceededError,
    TruncatedFileError,
    UnsupportedVersionError,
)
from compress.file_format import DEFAULT_MAX_ENTRIES, LoadedLayers, load, read_metadata, save, save_bytes
from compress.huffman import HuffmanCode, HuffmanStream, huffman_decode, huffman_encode
from compress.kmeans import KMeansResult, kmeans_1d
from compress.matrix import CompressedMatrix, nearest_centroid
from compress.one_shot import compress_matrix
from compress.relative_index import RelativeIndexLayer, decode_relative, encode_relative
from compress.relative_index_huffman import HuffmanLayer, decode_huffman, encode_huffman
from compress.size import layer_size, size_table

#: Workload names re-exported from `workloads` (see the module docstring).
_WORKLOAD_NAMES = {
    "LLM_LAYERS": "workloads.paper_layers",
    "PAPER_LAYERS": "workloads.paper_layers",
    "LayerSpec": "workloads.paper_layers",
    "get_layer": "workloads.paper_layers",
    "random_compressed_matrix": "workloads.synthetic",
}
__getattr__, __dir__ = lazy_exports(__name__, _WORKLOAD_NAMES, globals())

__all__ = [
    "DEFAULT_MAX_ENTRIES",
    "LLM_LAYERS",
    "PAPER_LAYERS",
    "CalibratedLayer",
    "CalibrationError",
    "CalibrationResult",
    "CalibrationSet",
    "CompressedFileError",
    "CompressedMatrix",
    "CompressionError",
    "Compressor",
    "ConfigError",
    "CorruptStreamError",
    "DeepCompressionConfig",
    "EmptyLayerError",
    "HuffmanCode",
    "HuffmanLayer",
    "HuffmanStream",
    "InvalidHeaderError",
    "KMeansResult",
    "LayerConfig",
    "LayerReport",
    "LayerSpec",
    "LimitExceededError",
    "LoadedLayers",
    "NonFiniteWeightError",
    "RelativeIndexLayer",
    "SingularHessianError",
    "TruncatedFileError",
    "UnsupportedModuleError",
    "UnsupportedVersionError",
    "__version__",
    "calibrated_compress",
    "compress_calibrated_layer",
    "compress_matrix",
    "decode_huffman",
    "decode_relative",
    "encode_huffman",
    "encode_relative",
    "get_layer",
    "huffman_decode",
    "huffman_encode",
    "kmeans_1d",
    "layer_size",
    "load",
    "load_calibration",
    "nearest_centroid",
    "random_compressed_matrix",
    "read_metadata",
    "save",
    "save_bytes",
    "save_calibration",
    "size_table",
]
