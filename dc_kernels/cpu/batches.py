"""How both CPU forms run a batch: in chunks of bounded memory, by their own kernel or by decoding
blocks of rows and multiplying them with a dense GEMM (the sparse form's `dc_kernels.cpu.launch`
and the dense-codes form's `dc_kernels.dense_codes.cpu` each hand `linear_by_chunks` a `Kernels`).
"""

from __future__ import annotations

from typing import Protocol

import torch

# Rows of x per pass of the kernels: their float32 copy and output take at most about this many
# bytes (16 MB: 512 rows of a 4096 x 4096 layer, plenty to amortize a pass).
CHUNK_BYTES = 16 << 20
# Decoded rows per GEMM of the decode + GEMM path: a block of about the size of a core's L2 cache.
DECODE_BLOCK_BYTES = 2 << 20


class Kernels(Protocol):
    """A form's kernels over one layer (out_features x in_features): the calls to make, each a
    function and its arguments (so that `linear_by_chunks`, a backend's ``run``, makes them
    itself: three frames of the library from the module's forward to a kernel)."""

    out_features: int
    in_features: int

    def dense(self, batch: int) -> bool:
        """Whether a batch of this many rows runs decode + GEMM rather than the form's kernel."""

    def direct_calls(self, x: torch.Tensor, out: torch.Tensor, bias: torch.Tensor | None) -> list[tuple]:
        """The calls computing out = x W^T + bias; x (n, in_features) and out (n, out_features)
        contiguous float32. (They may hold tensors the call needs alive.)"""

    def decode_call(self, first: int, block: torch.Tensor) -> tuple:
        """The call decoding rows first .. first + len(block) of W into ``block`` (float32)."""


class CpuState(Protocol):
    """What a CPU form's backend state gives `linear_by_chunks`."""

    def kernels(self, path: str | None = None) -> Kernels:
        """The form's kernels; ``path`` forces one of its paths (benchmarks)."""


def linear_by_chunks(
    x2d: torch.Tensor, state: CpuState, bias: torch.Tensor | None = None, path: str | None = None
) -> torch.Tensor:
    """y = x2d W^T + bias (x2d CPU, float32/float16/bfloat16, any strides; y in its dtype), by the
    form's kernel or by blocks of decoded rows and a dense GEMM: never the whole dense weight,
    each block multiplied while it is in cache. The backend ``run`` of both CPU forms.

    Rows of x2d go through in chunks of at most `CHUNK_BYTES` of float32 input and output, so the
    memory beside x2d and y stays bounded whatever the batch (one conversion of each chunk, never
    a float32 copy of the whole input)."""
    kernels = state.kernels(path)
    rows, cols = kernels.out_features, kernels.in_features
    batch = x2d.shape[0]
    y = torch.empty((batch, rows), dtype=x2d.dtype)
    if batch == 0:
        return y
    dense = kernels.dense(batch)
    bias_f = None if bias is None else bias.float().contiguous()
    step = max(1, CHUNK_BYTES // (4 * (cols + rows)))
    n_max = min(step, batch)
    # float32 output: the chunks are written into y; else into a float32 buffer, then converted.
    buffer = None if y.dtype == torch.float32 else torch.empty((n_max, rows), dtype=torch.float32)
    if dense:
        block_rows = max(1, min(rows, DECODE_BLOCK_BYTES // (4 * cols)))
        block_buffer = torch.empty(block_rows * cols, dtype=torch.float32)
        y_t_buffer = torch.empty((rows, n_max), dtype=torch.float32)
    for b0 in range(0, batch, step):
        xs = x2d[b0 : b0 + step]
        n = xs.shape[0]
        out = y[b0 : b0 + n] if buffer is None else buffer[:n]
        xf = xs if xs.dtype == torch.float32 and xs.is_contiguous() else xs.float().contiguous()
        if dense:
            y_t = y_t_buffer if n == y_t_buffer.shape[1] else torch.empty((rows, n), dtype=torch.float32)
            for r0 in range(0, rows, block_rows):
                block = block_buffer[: min(block_rows, rows - r0) * cols].view(-1, cols)
                fn, args = kernels.decode_call(r0, block)
                fn(*args)
                torch.mm(block, xf.t(), out=y_t[r0 : r0 + block.shape[0]])
            out.copy_(y_t.t())
            if bias_f is not None:
                out.add_(bias_f)
        else:
            for fn, args, *_alive in kernels.direct_calls(xf, out, bias_f):
                fn(*args)
        if buffer is not None:
            y[b0 : b0 + n].copy_(out)
    return y
