"""The cost model's errors: each names what is missing or wrong."""

from __future__ import annotations


class CompilerToolsMissing(FileNotFoundError):
    """Triton, or a CUDA tool its wheel ships (ptxas, nvdisasm), is not available."""


class UnknownArchitecture(ValueError):
    """An architecture the cost model has no figures or compiler target for."""


class UndispatchedConfiguration(ValueError):
    """A kernel configuration that the dispatcher never launches."""


class ListingError(ValueError):
    """Assembly text (SASS or PTX) that the parser cannot make sense of."""
