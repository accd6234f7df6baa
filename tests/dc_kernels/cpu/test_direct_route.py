"""CompressedLinear's direct route to the CPU kernels (no op, for calls that need nothing of it):
taken where it may be, equal to the op's path bit for bit, and left whenever the call or the
layer changes what it was made for."""

import copy
import ctypes
import gc
import pickle

import pytest
import torch

import dc_kernels.linear
from dc_kernels.cpu import build as cpu_build
from dc_kernels.errors import ShapeMismatchError
from dc_kernels.linear import CompressedLinear
from workloads import random_compressed_matrix

FORMS = ("sparse", "dense_codes")


@pytest.fixture(autouse=True)
def compiled():
    if cpu_build.library() is None:
        pytest.skip(f"no C compiler: {cpu_build.failure()}")


def layer(form: str, bias: bool = True) -> CompressedLinear:
    matrix = random_compressed_matrix(24, 40, 0.3, 4, seed=3, codebook_size=15)
    b = torch.randn(24, generator=torch.Generator().manual_seed(4)) if bias else None
    return CompressedLinear.from_matrix(matrix, b, form=form)


def through_the_op(module: CompressedLinear, x: torch.Tensor) -> torch.Tensor:
    """The op's path for the same call: a gradient to record keeps the route out."""
    with torch.enable_grad():
        return module(x.detach().requires_grad_()).detach()


def route_taken(monkeypatch) -> list[int]:
    """Counts the calls that leave the route (the op's path starts with `run_linear`)."""
    calls = []
    run_linear = dc_kernels.linear.run_linear
    monkeypatch.setattr(dc_kernels.linear, "run_linear", lambda *a: calls.append(1) or run_linear(*a))
    return calls


@pytest.mark.parametrize("form", FORMS)
# (2, 50, 40): 100 rows, decode + GEMM
@pytest.mark.parametrize("shape", [(40,), (1, 40), (2, 40), (3, 2, 40), (32, 40), (2, 50, 40)])
@pytest.mark.parametrize("bias", [True, False])
@torch.no_grad()
def test_route_equals_the_op_path(monkeypatch, form, shape, bias):
    module = layer(form, bias)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(len(shape)))
    left = route_taken(monkeypatch)
    y = module(x)
    assert not left, "the call left the direct route"
    assert y.shape == (*shape[:-1], 24)
    assert torch.equal(y, through_the_op(module, x))
    torch.testing.assert_close(y, module.to_linear()(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("shape", [(1, 40), (3, 2, 40), (2, 50, 40)])
def test_grad_mode_with_a_trainable_bias_keeps_the_route(monkeypatch, form, shape):
    """A model called without no_grad: the bias requires grad, x does not. The product has nothing
    for autograd to record, so it takes the route and autograd records the bias's add (gradient
    included); an x that requires grad gets its gradient through the op."""
    module = layer(form)
    assert module.bias.requires_grad and torch.is_grad_enabled()
    x = torch.randn(shape, generator=torch.Generator().manual_seed(5))
    left = route_taken(monkeypatch)
    y = module(x)
    assert not left, "the call left the direct route"
    assert y.requires_grad
    torch.testing.assert_close(y.detach(), through_the_op(module, x), atol=1e-6, rtol=1e-6)
    y.sum().backward()
    torch.testing.assert_close(module.bias.grad, torch.full((24,), x[..., 0].numel(), dtype=torch.float32))
    x.requires_grad_()
    module(x).sum().backward()  # the op's path: x's gradient too
    weight = module.to_linear().weight
    torch.testing.assert_close(x.grad, weight.sum(0).expand_as(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("form", FORMS)
@torch.no_grad()
def test_non_finite_rows_are_nan(form):
    module = layer(form)
    x = torch.randn(4, 40)
    x[1, 7] = float("inf")
    x[3, 0] = float("nan")
    y = module(x)
    assert y[[1, 3]].isnan().all()
    assert y[[0, 2]].isfinite().all()
    assert torch.equal(y.isnan(), through_the_op(module, x).isnan())


@pytest.mark.parametrize("form", FORMS)
@torch.no_grad()
def test_calls_it_does_not_take_go_through_the_op(monkeypatch, form):
    module = layer(form)
    x = torch.randn(3, 40)
    left = route_taken(monkeypatch)
    cases = [x.half(), x.t().contiguous().t(), torch.randn(40, 6)[:, ::2].t()]
    for case in cases:
        torch.testing.assert_close(module(case).float(), through_the_op(module, case).float())
    assert len(left) >= len(cases)
    with pytest.raises(ShapeMismatchError, match="cannot be multiplied"):
        module(torch.randn(2, 41))
    module.bias = torch.nn.Parameter(module.bias.detach().half())  # a bias the route does not take
    left.clear()
    torch.testing.assert_close(module(x), through_the_op(module, x))
    assert left


@pytest.mark.parametrize("form", FORMS)
@torch.no_grad()
def test_a_changed_layer_leaves_the_old_route(form):
    module = layer(form)
    x = torch.randn(2, 40)
    before = module(x)
    product = before - module.bias  # x W^T
    module.codebook.mul_(2)  # in place: the version counter moves
    torch.testing.assert_close(module(x), 2 * product + module.bias, atol=1e-5, rtol=1e-5)
    module.bias = torch.nn.Parameter(torch.zeros(24))  # replaced: read on every call
    torch.testing.assert_close(module(x), 2 * product, atol=1e-5, rtol=1e-5)
    module.load_state_dict(layer(form).state_dict())
    torch.testing.assert_close(module(x), before)


@pytest.mark.parametrize("form", FORMS)
@torch.no_grad()
def test_copies_and_pickles_run_their_own_route(form):
    module = layer(form)
    x = torch.randn(1, 40)
    expected = module(x)
    copies = [copy.deepcopy(module), pickle.loads(pickle.dumps(module))]
    del module  # nothing of the original may be used by the copies
    gc.collect()
    for other in copies:
        route, _, guarded = other._direct
        if guarded is not None:  # the C++ call holds the copy's own layer descriptor
            assert guarded.args[1] == ctypes.addressof(route.kernels.descriptor)
        assert torch.equal(other(x), expected)
        assert torch.equal(other(x), expected)  # again, on a route of its own
    with torch.inference_mode():
        assert torch.equal(copies[0](x), expected)


@pytest.mark.parametrize("form", FORMS)
def test_a_layer_built_under_inference_mode_takes_the_route(monkeypatch, form):
    """Buffers made under torch.inference_mode() keep no version counter for the route's guard:
    the layer takes copies with one, so its calls take the route in and out of inference mode and
    still see later changes."""
    x = torch.randn(2, 40)
    expected = layer(form)(x).detach()
    with torch.inference_mode():
        module = layer(form)
        assert not any(t.is_inference() for t in module.buffers() if t is not None)
    left = route_taken(monkeypatch)
    with torch.inference_mode():
        assert torch.equal(module(x), expected)
    with torch.no_grad():
        assert torch.equal(module(x), expected)
    assert not left, "the call left the direct route"
    with torch.inference_mode():
        module.codebook.mul_(2)  # in place on a tensor with a version counter: seen
        torch.testing.assert_close(module(x), 2 * (expected - module.bias) + module.bias)


def ops_seen(module: CompressedLinear, x: torch.Tensor) -> list[str]:
    """The operators a dispatch mode sees during the call."""
    from torch.utils._python_dispatch import TorchDispatchMode

    seen = []

    class Log(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            seen.append(str(func))
            return func(*args, **(kwargs or {}))

    with Log():
        module(x)
    return seen


@pytest.mark.parametrize("form", FORMS)
@torch.no_grad()
def test_calls_watched_by_pytorch_take_the_op(form):
    """Modes, tracers and fake tensors must see the op, which the direct route would hide."""
    from torch.overrides import TorchFunctionMode

    module = layer(form)
    x = torch.randn(3, 40)
    assert any("compressed_linear" in op for op in ops_seen(module, x))
    functions = []

    class Functions(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            functions.append(getattr(func, "__name__", str(func)))
            return func(*args, **(kwargs or {}))

    with Functions():
        assert torch.equal(module(x), through_the_op(module, x))
    assert any("compressed_linear" in f for f in functions), functions
    traced = torch.jit.trace(module, x, check_trace=False)
    assert "compressed_linear" in str(traced.graph)
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode(allow_non_fake_inputs=True) as fake:
        y = module(fake.from_tensor(x))
    assert y.shape == (3, 24) and type(y).__name__ == "FakeTensor"
    with torch.enable_grad():  # and so does a call with a gradient to record
        assert module(x.requires_grad_()).grad_fn is not None
