"""MKL's packed GEMM from PyTorch's library: products equal to torch.mm on odd shapes, written into
column slices, accumulated or not; calls that do not fit are refused; None where it is missing."""

import pytest
import torch

from dc_kernels.cpu import packed_gemm


@pytest.fixture
def gemm():
    loaded = packed_gemm.load()
    if loaded is None:
        pytest.skip("no MKL packed GEMM in this PyTorch build")
    return loaded


@pytest.mark.parametrize(("n", "k", "rows"), [(1, 1, 1), (3, 17, 5), (64, 384, 130), (5, 1000, 2)])
@pytest.mark.parametrize("accumulate", [False, True])
def test_products_equal_mm(gemm, n, k, rows, accumulate):
    gen = torch.Generator().manual_seed(n + k)
    x, block = torch.randn(n, k, generator=gen), torch.randn(rows, k, generator=gen)
    out = torch.full((n, rows + 3), 2.0)
    gemm.pack(x, rows).multiply(block, out[:, 1 : rows + 1], accumulate)
    expected = torch.full((n, rows + 3), 2.0)
    expected[:, 1 : rows + 1] = x @ block.T + (2.0 if accumulate else 0.0)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-4)


def test_one_packing_serves_blocks_up_to_its_rows(gemm):
    x = torch.randn(4, 9)
    packed = gemm.pack(x, 6)
    for rows in (6, 1, 4):
        block, out = torch.randn(rows, 9), torch.empty(4, rows)
        packed.multiply(block, out, accumulate=False)
        torch.testing.assert_close(out, x @ block.T, rtol=1e-5, atol=1e-5)


def test_calls_that_do_not_fit_are_refused(gemm):
    packed = gemm.pack(torch.randn(4, 9), 6)
    for block, out in [
        (torch.randn(7, 9), torch.empty(4, 7)),  # more rows than packed for
        (torch.randn(3, 8), torch.empty(4, 3)),  # block width
        (torch.randn(3, 9), torch.empty(5, 3)),  # out rows
        (torch.randn(3, 9), torch.empty(3, 4).t()),  # out columns not unit-strided
    ]:
        with pytest.raises(RuntimeError, match="do not fit"):
            packed.multiply(block, out, accumulate=False)


def test_missing_where_pytorch_has_no_mkl(monkeypatch):
    monkeypatch.setattr(torch.backends.mkl, "is_available", lambda: False)
    packed_gemm.load.cache_clear()
    try:
        assert packed_gemm.load() is None
    finally:
        monkeypatch.undo()
        packed_gemm.load.cache_clear()
