"""Errors of `CompressedLinear`, worded as `torch.nn.Linear` words them.

Each is also a ``RuntimeError`` (what nn.Linear raises), so code written against nn.Linear keeps
catching them, and a ``ValueError``/``TypeError`` as the library's own errors are.
"""

from __future__ import annotations


class ShapeMismatchError(ValueError, RuntimeError):
    """The input's last dimension is not the layer's ``in_features`` (or the input is 0-D)."""


class DtypeMismatchError(TypeError, RuntimeError):
    """The input's dtype is not float32, float16 or bfloat16."""


class DeviceMismatchError(ValueError, RuntimeError):
    """The input is on another device than the layer."""
