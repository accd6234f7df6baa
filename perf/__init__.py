"""Benchmarks, the hardware comparison report and the `dcomp` command line."""
