"""Typed errors of the compression pipeline.

Every error is a ``ValueError`` (``UnsupportedModuleError`` is also a ``TypeError``), so callers
that catch the built-in types keep working; messages name the layer and the offending values.
"""

from __future__ import annotations


class CompressionError(ValueError):
    """Base class of the pipeline's errors."""


class NonFiniteWeightError(CompressionError):
    """A layer's weights hold NaN or inf."""


class EmptyLayerError(CompressionError):
    """A layer has no weights, or pruning would keep none of them."""


class UnsupportedModuleError(CompressionError, TypeError):
    """A module selected for compression is of a type the pipeline cannot compress."""


class ConfigError(CompressionError):
    """An invalid compression setting (density, bits, index bits, init, pattern, file)."""


class CalibrationError(CompressionError):
    """Calibration inputs that cannot calibrate a layer: an empty set, NaN or inf, a batch the
    model refuses, a layer they never reach with any data, a file that is not a calibration file."""


class SingularHessianError(CalibrationError):
    """A layer's input Hessian stays singular even with extra damping (e.g. every input zero)."""
