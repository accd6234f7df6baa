"""Errors of `CompressedLinear`: input errors worded as `torch.nn.Linear` words them, and the
layer's own state (not loaded, inconsistent buffers).

Each is also a ``RuntimeError`` (what nn.Linear raises), so code written against nn.Linear keeps
catching them, and a ``ValueError``/``TypeError`` as the library's own errors are.
"""

from __future__ import annotations


class ShapeMismatchError(ValueError, RuntimeError):
    """The input's last dimension is not the layer's ``in_features`` (or the input is 0-D)."""


class DtypeMismatchError(TypeError, RuntimeError):
    """The input's dtype is not float32, float16 or bfloat16."""


class LayoutMismatchError(TypeError, RuntimeError):
    """The input is not a dense (strided) tensor: sparse, nested or opaque (MKL-DNN) layouts."""


class DeviceMismatchError(ValueError, RuntimeError):
    """The input is on another device than the layer."""


class LayerNotLoadedError(ValueError, RuntimeError):
    """A `CompressedLinear` whose buffers hold no layer yet: built by its constructor, or moved
    off the meta device with ``to_empty()``, and no state dict with its buffers loaded since."""


class CorruptLayerError(ValueError, RuntimeError):
    """The canonical tensors of a layer are inconsistent (a row pointer, column or code out of
    range, a wrong dtype or size), e.g. after an in-place edit of a buffer or in a direct call
    of the op: refused before any kernel reads them."""
