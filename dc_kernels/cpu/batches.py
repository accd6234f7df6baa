"""How both CPU forms run a batch: in chunks of bounded memory, by their own kernel or by decoding
blocks of rows and multiplying them with a dense GEMM (the sparse form's `dc_kernels.cpu.launch`
and the dense-codes form's `dc_kernels.dense_codes.cpu` each hand `linear_by_chunks` a `Kernels`);
and the direct route (`DirectRoute`) by which `CompressedLinear.forward` calls a form's kernels
without the op when a call needs nothing else.
"""

from __future__ import annotations

import ctypes
import threading
from typing import ClassVar, Protocol

import torch

from dc_kernels.checks import nan_where_x_is_not_finite
from dc_kernels.cpu import build, native, packed_gemm

# Rows of x per pass of the kernels: their float32 copy and output take at most about this many
# bytes (16 MB: 512 rows of a 4096 x 4096 layer, plenty to amortize a pass).
CHUNK_BYTES = 16 << 20
# Decoded rows per GEMM of the decode + GEMM path by torch.addmm (weights of one such block,
# contiguous float32 batches beyond `PACKED_X_BYTES`, builds without MKL), in bytes of float32: at least
# `DECODE_BLOCK_BYTES`, as many as x's pass has bytes up to twice that. Each GEMM packs x afresh,
# so fewer, larger blocks pay: on 4096 x 4096 dense codes (1 thread) decode + GEMM ran at 0.75-0.87x
# of nn.Linear from batch 48 to 1024 with 2 MB blocks, 0.86-1.15x with 8 MB (interleaved medians,
# the product then computed transposed and copied back); at batch 1024 (16 MB of x) 16 MB blocks
# ran at 0.96x of one whole addmm where 8 MB ran at 0.92x, at batch 256 both at 0.87-0.88x, and a
# whole 64 MB block lost (0.79x at batch 1024: its decode runs out of cache).
DECODE_BLOCK_BYTES = 8 << 20
# With MKL's packed GEMM (`dc_kernels.cpu.packed_gemm`), x packed once per pass of at most
# `PACKED_X_BYTES` and blocks of `PACKED_BLOCK_BYTES` per thread, decoded into L2 and multiplied
# from it: on 4096 x 4096 dense codes (density 0.8, 1 thread, interleaved medians) 0.93-0.94x of
# nn.Linear at batch 64 (addmm blocks: 0.77x), 0.98x at 128 (0.88x), 0.92-0.94x at 256 (0.83-0.87x)
# and 0.92x at 512 (0.85-0.87x) with 2 MB blocks; 1 and 4 MB blocks were 1-3% slower. With more
# threads each product is shared among them, and small shares lost: with 2 threads, 2 MB blocks
# ran at 0.78-0.82x of nn.Linear at batch 128-256, 4 MB at 0.84-0.95x, 8 MB at 0.93-0.96x (batch
# 128-384; 16 MB 0.92-0.98x), so from 2 threads on a block holds `PACKED_BLOCK_BYTES_PER_THREAD`
# per thread.
PACKED_X_BYTES = 8 << 20
PACKED_BLOCK_BYTES = 2 << 20
PACKED_BLOCK_BYTES_PER_THREAD = 4 << 20
# Decoded blocks of up to this many bytes go into a buffer each thread keeps between calls: a fresh
# one cost its pages again whenever the allocator had handed them back (on 384 x 384 dense codes
# at batch 64, 113-126 us for nn.Linear, decode + GEMM 128-136 us into a kept buffer and 134-147 us
# into a fresh one, up to 162 us depending on the order of allocations; 1 thread, interleaved).
KEPT_BLOCK_BYTES = 4 << 20
_kept = threading.local()
_FLOAT32, _STRIDED, _empty, _get_num_threads = (
    torch.float32,
    torch.strided,
    torch.empty,
    torch.get_num_threads,
)
# Multiply-adds up to which a direct call keeps the GIL (tens of microseconds of kernel): keeping
# it saved 1-1.5 us of a 384 x 384 layer's 19-21 us call at batch 1 (1 thread, interleaved).
QUICK_WORK = 1 << 20


class Kernels(Protocol):
    """A form's kernels over one layer (out_features x in_features): the calls to make, each a
    function and its arguments (so that `linear_by_chunks`, a backend's ``run``, makes them
    itself: three frames of the library from the module's forward to a kernel)."""

    out_features: int
    in_features: int

    def dense(self, batch: int, path: str | None = None) -> bool:
        """Whether a batch of this many rows runs decode + GEMM rather than the form's kernel;
        ``path`` (benchmarks) forces ``"dense"`` (decode + GEMM) or the kernel where both exist."""

    def linear_call(self, x: torch.Tensor, out: torch.Tensor, bias: torch.Tensor | None) -> tuple:
        """The call computing out = x W^T + bias; x (n, in_features) and out (n, out_features)
        contiguous float32, bias contiguous float32 or None. The call returns a true value when
        it ran out of memory."""

    def decode_call(self, first: int, block: torch.Tensor) -> tuple:
        """The call decoding rows first .. first + len(block) of W into ``block`` (float32)."""


class CpuState(Protocol):
    """What a CPU form's backend state gives `linear_by_chunks`: its kernels, built once."""

    kernels: Kernels


class CompiledKernels:
    """What the compiled kernels of both forms share: calls of their C entry points (named by
    ``LINEAR`` and ``DECODE``) with the layer's descriptor (``layers.h``). The descriptor holds
    the addresses of the layout's tensors, so it keeps the layout, and each call's arguments keep
    the descriptor. The ``LINEAR`` entry point applies the op's rule for non-finite inputs itself
    (a NaN or an infinity in a row of x makes the row's outputs NaN), so a call may skip the op."""

    LINEAR: ClassVar[str]
    DECODE: ClassVar[str]
    max_batch: int  # the most rows of x the kernel runs; decode + GEMM beyond (`dense`)

    def __init__(self, layout, descriptor: ctypes.Structure) -> None:
        self.layout = layout
        self.out_features, self.in_features = layout.shape
        descriptor.layout = layout
        self.descriptor = descriptor

    def __reduce__(self):
        # A descriptor holds addresses: copies and pickles build their own from the layout.
        return type(self), (self.layout,)

    def linear_call(self, x: torch.Tensor, out: torch.Tensor, bias: torch.Tensor | None) -> tuple:
        bias_ptr = None if bias is None else bias.data_ptr()
        batch = x.numel() // self.in_features
        args = (self.descriptor, batch, x.data_ptr(), bias_ptr, out.data_ptr(), torch.get_num_threads())
        return getattr(build.library(), self.LINEAR), args

    def decode_call(self, first: int, block: torch.Tensor) -> tuple:
        args = (self.descriptor, first, block.shape[0], block.data_ptr(), torch.get_num_threads())
        return getattr(build.library(), self.DECODE), args


def _block_buffer(numel: int) -> torch.Tensor:
    """float32 room for a decoded block: this thread's kept buffer up to `KEPT_BLOCK_BYTES`."""
    if 4 * numel > KEPT_BLOCK_BYTES:
        return torch.empty(numel, dtype=torch.float32)
    kept = getattr(_kept, "buffer", None)
    if kept is None or kept.numel() < numel:
        kept = _kept.buffer = torch.empty(numel, dtype=torch.float32)
    return kept


def out_of_memory(kernels: Kernels, batch: int) -> MemoryError:
    return MemoryError(
        f"the CPU kernels of a {kernels.out_features} x {kernels.in_features} layer could not allocate "
        f"their buffer for a batch of {batch} rows"
    )


def linear_by_chunks(
    x2d: torch.Tensor, state: CpuState, bias: torch.Tensor | None = None, path: str | None = None
) -> torch.Tensor:
    """y = x2d W^T + bias (x2d CPU, float32/float16/bfloat16, any strides; y in its dtype), by the
    form's kernel or by blocks of decoded rows and a dense GEMM: never the whole dense weight,
    each block multiplied while it is in cache. The backend ``run`` of both CPU forms.

    Rows of x2d go through in chunks of at most `CHUNK_BYTES` of float32 input and output, so the
    memory beside x2d and y stays bounded whatever the batch (one conversion of each chunk, never
    a float32 copy of the whole input); a contiguous float32 x2d on the decode + GEMM path goes
    through in one pass (nothing is converted)."""
    kernels = state.kernels
    rows, cols = kernels.out_features, kernels.in_features
    batch = x2d.shape[0]
    y = torch.empty((batch, rows), dtype=x2d.dtype)
    if batch == 0:
        return y
    dense = kernels.dense(batch, path)
    bias_f = None if bias is None else bias.float().contiguous()
    step = max(1, CHUNK_BYTES // (4 * (cols + rows)))
    packed_rows = max(1, PACKED_X_BYTES // (4 * cols))
    # A weight that torch.addmm takes in one block gains nothing from packing x (MKL's packed
    # GEMM was slower on small layers: 384 x 384 at batch 64 146 us against 123 us).
    gemm = packed_gemm.load() if dense and 4 * rows * cols > DECODE_BLOCK_BYTES else None
    if dense and x2d.dtype == torch.float32 and x2d.is_contiguous():
        # Nothing to convert, so one pass: each block of rows decoded once per call, where in
        # chunks every chunk decoded the whole weight again. Beyond `PACKED_X_BYTES` of x, one
        # torch.addmm per block beat passes of packed x (0.89-0.92x of nn.Linear at batch 1024
        # on 4096 x 4096, against 0.85-0.87x).
        step = batch
        gemm = gemm if batch <= packed_rows else None
    if gemm is not None:
        step = min(step, packed_rows)
    # float32 output: the chunks are written into y; else into a float32 buffer, then converted.
    buffer = None if y.dtype == torch.float32 else torch.empty((min(step, batch), rows), dtype=torch.float32)
    if dense:
        if gemm is None:
            x_bytes = 4 * min(step, batch) * cols
            block_bytes = min(2 * DECODE_BLOCK_BYTES, max(DECODE_BLOCK_BYTES, x_bytes))
        else:
            threads = torch.get_num_threads()
            block_bytes = PACKED_BLOCK_BYTES if threads == 1 else PACKED_BLOCK_BYTES_PER_THREAD * threads
        block_rows = max(1, min(rows, block_bytes // (4 * cols)))
        block_buffer = _block_buffer(block_rows * cols)
    for b0 in range(0, batch, step):
        xs = x2d[b0 : b0 + step]
        n = xs.shape[0]
        out = y[b0 : b0 + n] if buffer is None else buffer[:n]
        xf = xs if xs.dtype == torch.float32 and xs.is_contiguous() else xs.float().contiguous()
        if dense:
            packed_x = None if gemm is None else gemm.pack(xf, block_rows)
            if packed_x is not None and bias_f is not None:
                out.copy_(bias_f.expand(n, rows))
            for r0 in range(0, rows, block_rows):
                block = block_buffer[: min(block_rows, rows - r0) * cols].view(-1, cols)
                fn, args = kernels.decode_call(r0, block)
                fn(*args)
                # The GEMM writes the block's columns of out in place (out's rows are its leading
                # dimension), the bias added by the same call. With the transposed product
                # copied back instead, decode + GEMM ran at 0.48-0.85x of nn.Linear's speed on
                # MiniLM-shaped layers at 1024 rows; this way at 0.90-0.97x (dense codes,
                # density 0.8, 1 thread, interleaved medians).
                r1 = r0 + block.shape[0]
                if packed_x is not None:
                    packed_x.multiply(block, out[:, r0:r1], accumulate=bias_f is not None)
                elif bias_f is None:
                    torch.mm(xf, block.t(), out=out[:, r0:r1])
                else:
                    torch.addmm(bias_f[r0:r1], xf, block.t(), out=out[:, r0:r1])
        else:
            fn, args = kernels.linear_call(xf, out, bias_f)
            if fn(*args):
                raise out_of_memory(kernels, n)
        if buffer is not None:
            y[b0 : b0 + n].copy_(out)
    return y


class DirectRoute:
    """A layer's kernels called straight from `CompressedLinear.forward`, for the calls that need
    nothing of the op (`dc_kernels.ops.direct_call`), whose input is float32, contiguous and in
    host memory and whose bias (if any) is too: the input's checks that remain, one output tensor
    and one C call (or `linear_by_chunks` for a batch that runs decode + GEMM, then the op's rule
    for non-finite inputs), where the op's path costs several times a small layer's kernel (on
    384 x 384 dense codes at batch 64, decode + GEMM took 125 us and the op's path 70 us more).
    Other calls get None (and take the op's path). Made only over compiled kernels
    (`direct_route`): it calls their entry point itself."""

    __slots__ = (
        "entry", "guarded", "in_features", "kernels", "native", "native_args", "quick_batch", "quick_entry",
    )  # fmt: skip

    def __init__(self, kernels: CompiledKernels) -> None:
        self.kernels = kernels
        lib = build.library()
        self.entry = getattr(lib, kernels.LINEAR)
        # Batches of up to quick_batch rows keep the GIL through the call (`build._declare`).
        self.quick_entry = getattr(lib.holding_gil, kernels.LINEAR)
        self.quick_batch = QUICK_WORK // (kernels.in_features * kernels.out_features)
        self.in_features = kernels.in_features
        # The same call in C++ where it is built (`dc_kernels.cpu.native`), for kernel batches.
        # `guarded` also makes the module's checks (`CompressedLinear.forward`).
        self.native = self.native_args = self.guarded = None
        extension = native.module()
        if extension is not None and isinstance(self.entry, ctypes._CFuncPtr):
            address = ctypes.cast(self.entry, ctypes.c_void_p).value
            max_batch = kernels.max_batch
            self.native, self.guarded = extension.linear, extension.guarded_linear
            self.native_args = (
                address, ctypes.addressof(kernels.descriptor), kernels.in_features, kernels.out_features,
                max_batch, self.quick_batch,
            )  # fmt: skip

    def __reduce__(self):
        return type(self), (self.kernels,)  # the entry point is looked up again, not pickled

    def __call__(self, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor | None:
        if self.native is not None:
            y = self.native(*self.native_args, x, bias)
            if y is not None:
                return y
        # Every step counts at batch 1 (a 384 x 384 layer's kernel takes 5 us): torch.empty with
        # integer sizes costs 0.6 us where a shape tuple cost 1.8 us.
        if (
            x.layout != _STRIDED
            or x.is_nested
            or x.dtype != _FLOAT32
            or not x.is_cpu
            or not x.is_contiguous()
        ):
            return None  # (sparse and nested tensors have no strides: forward reports them)
        shape = x.shape
        cols = self.in_features
        if not shape or shape[-1] != cols:
            return None
        if bias is not None and (bias.dtype != _FLOAT32 or not bias.is_cpu or not bias.is_contiguous()):
            return None
        kernels = self.kernels
        batch = x.numel() // cols
        if batch == 0:
            return None
        if kernels.dense(batch):
            x2d = x.view(batch, cols)
            y = linear_by_chunks(x2d, self, bias)  # the route is a `CpuState`: it has the kernels
            nan_where_x_is_not_finite(x2d, y)
            return y.view(*shape[:-1], kernels.out_features)
        rows = kernels.out_features
        y = _empty(batch, rows) if len(shape) == 2 else _empty(*shape[:-1], rows)
        entry = self.quick_entry if batch <= self.quick_batch else self.entry
        bias_ptr = None if bias is None else bias.data_ptr()
        if entry(kernels.descriptor, batch, x.data_ptr(), bias_ptr, y.data_ptr(), _get_num_threads()):
            raise out_of_memory(kernels, batch)
        return y


def direct_route(state: CpuState) -> DirectRoute | None:
    """The direct route over a CPU form's state: where its kernels are compiled (they apply the
    non-finite rule themselves)."""
    return DirectRoute(state.kernels) if isinstance(state.kernels, CompiledKernels) else None
