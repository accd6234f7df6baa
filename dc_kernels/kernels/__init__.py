"""Triton kernels, one file per kernel family; imported only when a kernel is launched."""
