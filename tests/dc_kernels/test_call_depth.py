"""A forward call reaches its kernel through at most three frames of the library: the module's
forward, the custom op, the form's launcher (and the input is checked once, in the op)."""

import inspect
from pathlib import Path

import pytest
import torch

import dc_kernels.checks
from dc_kernels import CompressedLinear
from dc_kernels.cpu import build as cpu_build
from dc_kernels.dense_codes.launch import DEFAULT_DISPATCH
from workloads import random_compressed_matrix

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("compress", "dc_kernels", "eie_model", "perf", "workloads")
LIBRARY = tuple(str(ROOT / package) for package in PACKAGES)
MAX_FRAMES = 3


class Reached(Exception):
    """Raised by a stand-in kernel: carries the library frames on the stack at the launch,
    outermost first."""

    def __init__(self, frames: list[str]):
        super().__init__(frames)
        self.frames = frames


def library_frames() -> list[str]:
    return [
        f"{Path(f.filename).relative_to(ROOT)}:{f.function}"
        for f in reversed(inspect.stack()[2:])
        if f.filename.startswith(LIBRARY)
    ]


class StandInKernel:
    """`kernel[grid](...)` and `lib.fn(...)` alike: record the stack, stop the call."""

    def __getitem__(self, grid):
        return self

    def __call__(self, *args, **kwargs):
        raise Reached(library_frames())

    def __getattr__(self, name):
        return self


def frames_to_kernel(layer: CompressedLinear, x: torch.Tensor) -> list[str]:
    with pytest.raises(Reached) as caught:
        layer(x)
    return caught.value.frames


@pytest.mark.parametrize(
    ("backend", "module", "kernel", "batch"),
    [
        ("fixed", "dc_kernels.fixed.kernels", "codebook_spmm_kernel", 1),
        ("fixed", "dc_kernels.fixed.kernels", "codebook_spmm_kernel", 16),
        ("fixed", "dc_kernels.fixed.kernels", "decode_dense_kernel", 300),
        ("huffman", "dc_kernels.huffman.kernels", "huffman_spmm_kernel", 1),
        ("huffman", "dc_kernels.huffman.kernels", "huffman_spmm_kernel", 8),
        ("dense_codes", "dc_kernels.dense_codes.kernels", "dense_codes_gemv_kernel", 1),
        ("dense_codes", "dc_kernels.dense_codes.kernels", "dense_codes_gemm_kernel", 16),
        ("dense_codes", "dc_kernels.dense_codes.kernels", "dense_codes_decode_kernel", 300),
    ],
)
def test_gpu_forms(monkeypatch, backend, module, kernel, batch):
    import importlib

    form = "dense_codes" if backend == "dense_codes" else "sparse"
    # The dense-codes tile kernel runs on layers of at least Dispatch.tile_min_rows rows.
    rows = DEFAULT_DISPATCH.tile_min_rows if kernel == "dense_codes_gemm_kernel" else 16
    matrix = random_compressed_matrix(rows, 40, 0.3, 4, seed=0)
    layer = CompressedLinear.from_matrix(matrix, backend=backend, form=form)
    monkeypatch.setattr(importlib.import_module(module), kernel, StandInKernel())
    frames = frames_to_kernel(layer, torch.randn(batch, 40))
    assert len(frames) <= MAX_FRAMES, frames
    assert frames[0].endswith("linear.py:forward")


@pytest.mark.parametrize("batch", [1, 4, 300])
@pytest.mark.parametrize(("backend", "form"), [("cpu", "sparse"), ("dense_codes_cpu", "dense_codes")])
def test_cpu_forms(monkeypatch, batch, backend, form):
    if cpu_build.library() is None:
        pytest.skip(f"no C compiler: {cpu_build.failure()}")
    matrix = random_compressed_matrix(16, 40, 0.9, 4, seed=0)
    fake = StandInKernel()
    fake.dc_codes_kernel_max_batch = lambda in_features: 100  # a query, not a kernel: batch 300 decodes
    fake.dc_vector_bits = lambda: 512  # a query too (the sparse form's dispatch)
    monkeypatch.setattr(cpu_build, "library", lambda: fake)
    # Built with the stand-in in place: the direct route of forward keeps its entry point.
    layer = CompressedLinear.from_matrix(matrix, backend=backend, form=form)
    frames = frames_to_kernel(layer, torch.randn(batch, 40))
    assert len(frames) <= MAX_FRAMES, frames


def test_input_checked_once(monkeypatch):
    calls = []
    check = dc_kernels.checks.check_input
    monkeypatch.setattr(dc_kernels.ops, "check_input", lambda *a: calls.append(1) or check(*a))
    layer = CompressedLinear.from_matrix(random_compressed_matrix(16, 40, 0.3, 4, seed=0), backend="fixed")
    layer(torch.randn(3, 40))
    assert len(calls) == 1
