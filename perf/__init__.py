"""Benchmarks, the hardware comparison report and the `dcomp` command line."""

from compress._version import __version__

__all__ = ["__version__"]
