"""The direct route's call in C++ (`dc_kernels.cpu.native`): built where a C++ compiler and
PyTorch's headers are, taken by the route for kernel batches, equal to the Python route bit for
bit, declining every call the Python route must decide, and absent (the Python route serving)
where it cannot be built."""

import pytest
import torch

from dc_kernels.cpu import batches, native
from dc_kernels.cpu import build as cpu_build
from dc_kernels.linear import CompressedLinear
from workloads import random_compressed_matrix

FORMS = ("sparse", "dense_codes")


@pytest.fixture(autouse=True)
def built():
    if cpu_build.library() is None:
        pytest.skip(f"no C compiler: {cpu_build.failure()}")
    if native.module() is None:
        pytest.skip(f"the C++ route is not built here: {native.failure()}")


def route(form: str, rows: int = 24, cols: int = 40, density: float = 0.3) -> batches.DirectRoute:
    matrix = random_compressed_matrix(rows, cols, density, 4, seed=3, codebook_size=15)
    module = CompressedLinear.from_matrix(matrix, torch.randn(rows), form=form)
    return module._direct[0]


def python_route(r: batches.DirectRoute, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    native_call = r.native
    r.native = None
    try:
        return r(x, bias)
    finally:
        r.native = native_call


@pytest.mark.parametrize("form", FORMS)
def test_the_route_takes_it(monkeypatch, form):
    r = route(form)
    assert r.native is not None
    # The Python route's output tensor is never made: the call stayed in C++.
    monkeypatch.setattr(batches, "_empty", lambda *a: pytest.fail("the Python route ran"))
    assert r(torch.randn(3, 40), None).shape == (3, 24)


@pytest.mark.parametrize("form", FORMS)
# 384 x 384 from batch 8 releases the GIL (beyond `DirectRoute.quick_batch`)
@pytest.mark.parametrize(("rows", "cols"), [(24, 40), (384, 384), (5, 1)])
@pytest.mark.parametrize("lead", [(), (1,), (3,), (2, 5), (9,)])
@pytest.mark.parametrize("with_bias", [True, False])
def test_equal_to_the_python_route(form, rows, cols, lead, with_bias):
    r = route(form, rows, cols)
    gen = torch.Generator().manual_seed(len(lead) + rows)
    x = torch.randn(*lead, cols, generator=gen)
    x.view(-1)[::7] = 0.0
    bias = torch.randn(rows, generator=gen) if with_bias else None
    y = r.native(*r.native_args, x, bias)
    assert y is not None and y.shape == (*lead, rows) and y.dtype == torch.float32
    assert torch.equal(y, python_route(r, x, bias))


@pytest.mark.parametrize("form", FORMS)
def test_non_finite_rows_are_nan(form):
    r = route(form)
    x = torch.randn(4, 40)
    x[1, 3], x[2, 0] = float("inf"), float("nan")
    y = r.native(*r.native_args, x, None)
    assert y[[1, 2]].isnan().all() and y[[0, 3]].isfinite().all()


@pytest.mark.parametrize("form", FORMS)
def test_declines_what_the_python_route_decides(form):
    r = route(form, density=0.9)
    args, x, bias = r.native_args, torch.randn(3, 40), torch.randn(24)
    declined = {
        "float16 x": (x.half(), bias),
        "strided x": (torch.randn(40, 3).t(), bias),
        "wrong width": (torch.randn(3, 41), bias),
        "0-d x": (torch.tensor(1.0), bias),
        "empty batch": (torch.randn(0, 40), bias),
        "a subclass": (x.as_subclass(type("Sub", (torch.Tensor,), {})), bias),
        "float16 bias": (x, bias.half()),
        "strided bias": (x, torch.randn(48)[::2]),
        "not a tensor": (x.tolist(), bias),
        "a sparse x": (x.to_sparse(), bias),
        "a sparse CSR x": (x.to_sparse_csr(), bias),
        "an opaque (mkldnn) x": (x.to_mkldnn(), bias)
        if torch.backends.mkldnn.is_available()
        else (x.half(), bias),
        "a nested x": (torch.nested.nested_tensor([torch.randn(2, 40), torch.randn(3, 40)]), bias),
        "a sparse bias": (x, bias.to_sparse()),
        "beyond the kernels' batches": (torch.randn(r.kernels.max_batch + 1, 40), bias),  # decode + GEMM
    }
    for what, (xx, bb) in declined.items():
        assert r.native(*args, xx, bb) is None, what
    # ... and the route answers them as before: decode + GEMM for a large batch, None (the op's
    # path) for a strided x.
    big = declined["beyond the kernels' batches"][0]
    assert r(big, bias).shape == (len(big), 24)
    assert r(*declined["strided x"]) is None


def test_argument_errors():
    r = route("dense_codes")
    x = torch.randn(2, 40)
    with pytest.raises(TypeError, match="8 arguments, got 7"):
        r.native(*r.native_args[:-1], x, None)
    with pytest.raises(ValueError, match="positive sizes"):
        r.native(r.native_args[0], r.native_args[1], 0, 24, 100, 1, x, None)
    with pytest.raises(TypeError):
        r.native("entry", *r.native_args[1:], x, None)


def test_absent_where_it_cannot_be_built(monkeypatch, tmp_path):
    try:
        native.module.cache_clear()
        monkeypatch.setenv("DC_KERNELS_NO_BUILD", "1")
        assert native.module() is None and native.failure() == "DC_KERNELS_NO_BUILD=1"
        monkeypatch.delenv("DC_KERNELS_NO_BUILD")
        native.module.cache_clear()
        monkeypatch.setenv("DC_KERNELS_CACHE", str(tmp_path))  # nothing cached: it must build
        monkeypatch.setenv("CXX", "false")  # a compiler that fails
        assert native.module() is None and native.failure().startswith("BuildError")
        # Routes made meanwhile keep the Python route, with the same results.
        r = route("dense_codes")
        assert r.native is None and r(torch.randn(2, 40), None).shape == (2, 24)
    finally:
        native.module.cache_clear()


@pytest.mark.parametrize("form", FORMS)
def test_guarded_call_checks_what_forward_checks(form):
    matrix = random_compressed_matrix(24, 40, 0.3, 4, seed=3, codebook_size=15)
    module = CompressedLinear.from_matrix(matrix, torch.randn(24), form=form)
    r, _, guarded = module._direct
    x, bias = torch.randn(3, 40), module.bias.detach()
    with torch.no_grad():
        assert torch.equal(guarded(x, bias, module._buffers), python_route(r, x, bias))
        declined = {
            "a Parameter": (torch.nn.Parameter(x, requires_grad=False), bias),
            "a sparse x": (x.to_sparse(), bias),
        }
        for what, (xx, bb) in declined.items():
            assert guarded(xx, bb, module._buffers) is None, what
    with torch.enable_grad():
        assert guarded(x, module.bias, module._buffers) is None  # the bias records a gradient
        assert guarded(x.requires_grad_(), None, module._buffers) is None
    x = x.detach()
    with torch.no_grad():
        changed = dict(module._buffers)
        changed["codebook"] = changed["codebook"].clone()  # another tensor
        assert guarded(x, bias, changed) is None
        module.codebook.add_(0)  # the same tensor, a new version
        assert guarded(x, bias, module._buffers) is None
    with pytest.raises(TypeError, match="10 arguments"):
        guarded(x, bias)
    with pytest.raises(TypeError, match="buffers' dict"):
        guarded(x, bias, list(module._buffers))
