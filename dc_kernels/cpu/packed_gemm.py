"""MKL's packed GEMM (``cblas_sgemm_pack`` / ``cblas_sgemm_compute``) from the MKL that PyTorch's
own library carries, for the decode + GEMM path of `dc_kernels.cpu.batches`: x packed once per
pass and every decoded block of rows multiplied with it, where each ``torch.addmm`` packs x again.

A dense GEMM at batch 256 on one core runs at the FMA units' peak, so what the path adds beyond
it is the whole gap to nn.Linear: with x packed once, the blocks can be small enough to be
decoded into L2 and read back from it (decoding a 4096 x 4096 layer of 4-bit codes took 1.4 ms in
1 MB blocks, 2.8-6 ms in 8-16 MB blocks), where with ``torch.addmm`` small blocks lost more to
packing x than they saved.

Available where PyTorch was built with MKL and its library exports the CBLAS entry points (x86
builds); `load` returns None elsewhere, and after a self-test product that disagrees with
``torch.mm``, and the path keeps ``torch.addmm``.
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys

import torch

# CBLAS enumerations (mkl_cblas.h).
_ROW_MAJOR, _NO_TRANS, _TRANS, _PACKED, _A_MATRIX = 101, 111, 112, 151, 161


class PackedGemm:
    """The two entry points, declared for MKL's 32-bit integers (the LP64 interface PyTorch links)."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        i, f, p = ctypes.c_int, ctypes.c_float, ctypes.c_void_p
        self._size = lib.cblas_sgemm_pack_get_size
        self._size.restype, self._size.argtypes = ctypes.c_size_t, [i, i, i, i]
        self._pack = lib.cblas_sgemm_pack
        self._pack.restype, self._pack.argtypes = None, [i, i, i, i, i, i, f, p, i, p]
        self._compute = lib.cblas_sgemm_compute
        self._compute.restype, self._compute.argtypes = None, [i, i, i, i, i, i, p, i, p, i, f, p, i]

    def pack(self, x: torch.Tensor, block_rows: int) -> PackedX:
        """x (n, k), contiguous float32 in host memory, packed as the left operand of products
        with blocks of up to ``block_rows`` rows."""
        n, k = x.shape
        buffer = torch.empty((self._size(_A_MATRIX, n, block_rows, k) + 63) // 4, dtype=torch.float32)
        self._pack(
            _ROW_MAJOR, _A_MATRIX, _NO_TRANS, n, block_rows, k, 1.0, x.data_ptr(), k, buffer.data_ptr()
        )
        return PackedX(self, buffer, n, k, block_rows)


class PackedX:
    """x packed once (`PackedGemm.pack`); `multiply` computes x @ block.T into out."""

    __slots__ = ("block_rows", "buffer", "gemm", "k", "n")

    def __init__(self, gemm: PackedGemm, buffer: torch.Tensor, n: int, k: int, block_rows: int) -> None:
        self.gemm, self.buffer, self.n, self.k, self.block_rows = gemm, buffer, n, k, block_rows

    def multiply(self, block: torch.Tensor, out: torch.Tensor, accumulate: bool) -> None:
        """out = x @ block.T (+ out where ``accumulate``): block (r, k) contiguous float32, r up to
        the packing's ``block_rows``; out (n, r) float32 with unit column stride (a column slice
        of a contiguous matrix)."""
        r = block.shape[0]
        torch._check(
            r <= self.block_rows
            and block.shape[1] == self.k
            and out.shape == (self.n, r)
            and out.stride(1) == 1,
            lambda: (
                f"block {tuple(block.shape)} / out {tuple(out.shape)} do not fit x ({self.n}, {self.k}) "
                f"packed for blocks of up to {self.block_rows} rows"
            ),
        )
        self.gemm._compute(
            _ROW_MAJOR, _PACKED, _TRANS, self.n, r, self.k, self.buffer.data_ptr(), self.k,
            block.data_ptr(), self.k, 1.0 if accumulate else 0.0, out.data_ptr(), out.stride(0),
        )  # fmt: skip


def _library_path() -> str | None:
    if sys.platform != "linux" or not torch.backends.mkl.is_available():
        return None
    path = os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch_cpu.so")
    return path if os.path.exists(path) else None


def _agrees(gemm: PackedGemm) -> bool:
    """One small product (odd sizes, a column slice of out, accumulated) against torch.mm."""
    gen = torch.Generator().manual_seed(0)
    x, w = torch.randn(5, 19, generator=gen), torch.randn(7, 19, generator=gen)
    out = torch.ones(5, 9)
    gemm.pack(x, 7).multiply(w, out[:, 1:8], accumulate=True)
    expected = torch.ones(5, 9)
    expected[:, 1:8] += x @ w.T
    return torch.allclose(out, expected, rtol=1e-5, atol=1e-5)


@functools.cache
def load() -> PackedGemm | None:
    """MKL's packed GEMM from PyTorch's library, or None where it is missing or disagrees."""
    path = _library_path()
    if path is None:
        return None
    try:
        gemm = PackedGemm(ctypes.CDLL(path))
        return gemm if _agrees(gemm) else None
    except (OSError, AttributeError):
        return None
