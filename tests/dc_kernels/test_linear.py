"""CompressedLinear: construction, forward on every backend, errors, state, devices, autograd."""

import copy
import pickle
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dc_kernels import ops
from dc_kernels.backends import backend_names
from dc_kernels.cpu.layout import SparseLayout
from dc_kernels.errors import LayerNotLoadedError, LayoutMismatchError
from dc_kernels.linear import CompressedLinear
from workloads import random_compressed_matrix


def make_layer(out_f=24, in_f=40, density=0.25, bits=5, bias=True, seed=0) -> CompressedLinear:
    matrix = random_compressed_matrix(out_f, in_f, density, bits, seed=seed)
    b = torch.randn(out_f, generator=torch.Generator().manual_seed(seed)) if bias else None
    return CompressedLinear.from_matrix(matrix, b)


def dense_output(layer: CompressedLinear, x: torch.Tensor) -> torch.Tensor:
    weight = torch.from_numpy(layer.to_matrix().to_dense())
    bias = None if layer.bias is None else layer.bias.detach().float()
    return F.linear(x.float(), weight, bias)


def rel_error(y, ref) -> float:
    return float((y.double() - ref.double()).norm() / ref.double().norm().clamp_min(1e-30))


# ---------------------------------------------------------------------------- construction
def test_from_linear_keeps_shape_bias_device_and_dtype():
    linear = nn.Linear(50, 30).to(torch.bfloat16)
    layer = CompressedLinear.from_linear(linear, density=0.2, bits=4)
    assert (layer.in_features, layer.out_features, layer.bits) == (50, 30, 4)
    assert layer.nnz == 300 and layer.density == pytest.approx(0.2)
    assert layer.bias.dtype == torch.bfloat16 and torch.equal(layer.bias, linear.bias)
    assert layer.codebook.dtype == torch.float32 and layer.codebook.numel() <= 16
    back = layer.to_linear()
    assert back.weight.dtype == torch.bfloat16
    kept = layer.to_matrix().mask()
    assert torch.all(back.weight[torch.from_numpy(~kept)] == 0)


def test_from_linear_quality_rule_and_errors():
    linear = nn.Linear(64, 64)
    layer = CompressedLinear.from_linear(linear, quality=1.0)
    assert 0.2 < layer.density < 0.45  # |w| > std keeps ~1/3 of a uniform layer
    with pytest.raises(TypeError, match=r"nn\.Linear"):
        CompressedLinear.from_linear(nn.Conv2d(1, 1, 1))
    with pytest.raises(ValueError, match="density"):
        CompressedLinear.from_linear(linear, density=0.0)


def test_from_matrix_round_trips_and_checks_bias():
    matrix = random_compressed_matrix(9, 11, 0.3, 3, seed=1)
    layer = CompressedLinear.from_matrix(matrix)
    assert layer.bias is None and layer.to_matrix().equals(matrix)
    assert layer.col_idx.dtype == torch.int16
    with pytest.raises(ValueError, match=r"bias must be a tensor of shape \(9,\)"):
        CompressedLinear.from_matrix(matrix, torch.zeros(10))
    with pytest.raises(TypeError, match="CompressedMatrix"):
        CompressedLinear.from_matrix(torch.zeros(9, 11))
    wide = CompressedLinear.from_matrix(random_compressed_matrix(2, 40000, 0.001, 2))
    assert wide.col_idx.dtype == torch.int32


def test_constructor_builds_a_layer_to_load_and_checks_arguments():
    layer = CompressedLinear(5, 3)
    assert layer.nnz == 0 and not layer.loaded
    for use in (lambda: layer(torch.ones(2, 5)), lambda: layer.weight, layer.to_matrix):
        with pytest.raises(LayerNotLoadedError, match=r"\(in_features=5, out_features=3\) holds no"):
            use()
    source = CompressedLinear.from_matrix(random_compressed_matrix(3, 5, 0.5, 2))
    layer.load_state_dict(source.state_dict(), strict=False)  # no bias in it
    assert layer.loaded and layer(torch.ones(2, 5)).shape == (2, 3)
    with pytest.raises(ValueError, match="in_features"):
        CompressedLinear(0, 3)
    with pytest.raises(ValueError, match="unknown backend 'cuda'"):
        CompressedLinear(2, 3, backend="cuda")


def test_extra_repr_and_memory():
    layer = make_layer(64, 128, 0.1)
    text = repr(layer)
    assert "bits=5" in text and "density=0.1000" in text and f"bytes={layer.memory_bytes()}" in text
    # In host memory the packed relative-index entries replace the per-weight buffers.
    shared = 4 * layer.codebook.numel() + 8 * 65 + 1 + 4 * 64  # codebook, row_ptr, code_bits, bias
    packed = SparseLayout.from_matrix(layer.to_matrix()).total_bytes()
    assert layer.memory_bytes() == shared + packed < shared + 3 * layer.nnz
    layer.backend = "reference"  # the canonical buffers: int16 column and uint8 code per weight
    assert layer.memory_bytes() == shared + 2 * layer.nnz + layer.nnz
    assert layer.dense_bytes() == 4 * (64 * 128 + 64)


# ---------------------------------------------------------------------------- forward
@pytest.mark.parametrize("backend", backend_names())
@pytest.mark.parametrize("shape", [(40,), (1, 40), (3, 40), (2, 5, 40), (0, 40), (2, 0, 40)])
def test_forward_matches_dense_on_every_backend(backend, shape):
    layer = make_layer(bias=shape != (3, 40))
    layer.backend = backend
    x = torch.randn(shape)
    with torch.no_grad():
        y = layer(x)
    assert y.shape == (*shape[:-1], 24) and y.dtype == torch.float32
    if x.numel():
        assert rel_error(y, dense_output(layer, x)) <= 1e-5


@pytest.mark.parametrize("backend", ["reference", "cpu", "fixed", "huffman"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs(backend, dtype):
    layer = make_layer()
    layer.backend = backend
    x = torch.randn(4, 40).to(dtype)
    with torch.no_grad():
        y = layer(x)
    assert y.dtype == dtype
    torch.testing.assert_close(y.float(), dense_output(layer, x), rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_non_contiguous_input(backend):
    layer = make_layer()
    layer.backend = backend
    x = torch.randn(40, 3, 2).permute(2, 1, 0)  # (2, 3, 40), last dim strided
    assert not x.is_contiguous()
    with torch.no_grad():
        assert rel_error(layer(x), dense_output(layer, x)) <= 1e-5


def test_errors_use_nn_linear_wording():
    layer = make_layer(3, 4, 0.5)
    dense = nn.Linear(4, 3)
    for x in (torch.randn(2, 5), torch.randn(2, 3, 5), torch.randn(5), torch.randn(0, 5), torch.tensor(1.0)):
        with pytest.raises(RuntimeError) as expected:
            dense(x)
        with pytest.raises(RuntimeError) as got:
            layer(x)
        assert str(got.value) == str(expected.value)
        assert isinstance(got.value, ValueError)
    for dtype in (torch.int64, torch.float64):
        x = torch.ones(2, 4, dtype=dtype)
        with pytest.raises(RuntimeError) as expected:
            dense(x)
        with pytest.raises(TypeError) as got:
            layer(x)
        assert str(got.value) == str(expected.value)


@pytest.mark.parametrize("backend", ["reference", "cpu", "dense_codes_cpu"])
@pytest.mark.parametrize("grad", [False, True])
def test_inputs_without_strides_are_refused_by_name(backend, grad):
    layer = make_layer(3, 40, 0.5)
    layer.backend = backend
    x = torch.randn(2, 40)
    inputs = {
        "sparse_coo": x.to_sparse(),
        "sparse_csr": x.to_sparse_csr(),
        "nested": torch.nested.nested_tensor([torch.randn(1, 40), torch.randn(2, 40)]),
    }
    if torch.backends.mkldnn.is_available():
        inputs["_mkldnn"] = x.to_mkldnn()
    with torch.set_grad_enabled(grad):
        for kind, bad in inputs.items():
            with pytest.raises(LayoutMismatchError, match=f"dense \\(strided\\) input, got a {kind} tensor"):
                layer(bad)
    assert issubclass(LayoutMismatchError, TypeError) and issubclass(LayoutMismatchError, RuntimeError)


def test_input_on_another_device_is_refused():
    layer = make_layer().to("meta")
    with pytest.raises(RuntimeError, match="Expected all tensors to be on the same device"):
        layer(torch.randn(2, 40))


@pytest.mark.parametrize("name", ["fixed", "triton", "huffman"])
def test_gpu_backends_need_cuda_or_the_interpreter(monkeypatch, name):
    layer = make_layer()
    monkeypatch.delenv("TRITON_INTERPRET")
    layer.backend = name
    assert layer.backend == ("fixed" if name == "triton" else name)  # the fixed form's earlier name
    with pytest.raises(ValueError, match=f"'{layer.backend}' does not run on cpu"):
        layer(torch.randn(1, 40))


# ---------------------------------------------------------------------------- state
def test_state_dict_round_trip_into_an_empty_layer():
    layer = make_layer(seed=3)
    fresh = CompressedLinear(40, 24)
    fresh.load_state_dict(layer.state_dict())
    assert fresh.to_matrix().equals(layer.to_matrix()) and fresh.bits == layer.bits
    x = torch.randn(5, 40)
    with torch.no_grad():
        assert torch.equal(fresh(x), layer(x))
    assert set(layer.state_dict()) == {"codebook", "row_ptr", "col_idx", "codes", "code_bits", "bias"}


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [
        ("col_idx", lambda t: t.fill_(40), "col_idx must lie in"),
        ("codes", lambda t: t.fill_(200), "codes must lie in"),
        ("row_ptr", lambda t: t.flip(0), "row_ptr must start at 0"),
        ("code_bits", lambda t: t.fill_(9), "code_bits must be in 1..8"),
    ],
)
def test_corrupt_state_dict_is_refused(key, value, match):
    state = make_layer().state_dict()
    state[key] = value(state[key].clone())
    with pytest.raises(ValueError, match=match):
        CompressedLinear(40, 24).load_state_dict(state)


def test_deepcopy_and_pickle():
    layer = make_layer(seed=4)
    x = torch.randn(3, 40)
    with torch.no_grad():
        y = layer(x)
        for clone in (copy.deepcopy(layer), pickle.loads(pickle.dumps(layer))):
            assert torch.equal(clone(x), y)
            assert clone.codebook.data_ptr() != layer.codebook.data_ptr()


def test_half_keeps_the_codebook_float32():
    layer = make_layer(seed=5)
    codebook = layer.codebook.clone()
    layer.half()
    assert layer.codebook.dtype == torch.float32 and torch.equal(layer.codebook, codebook)
    assert layer.bias.dtype == torch.float16 and layer.weight.dtype == torch.float16
    x = torch.randn(2, 40)
    with torch.no_grad():
        assert layer(x.half()).dtype == torch.float16
        layer.to(torch.bfloat16)
        assert layer.to_linear().weight.dtype == torch.bfloat16
        layer.float()
        assert torch.equal(layer.codebook, codebook) and layer.bias.dtype == torch.float32


def test_meta_device_and_back():
    layer = make_layer(seed=6)
    state = layer.state_dict()
    meta = copy.deepcopy(layer).to("meta")
    assert all(t.is_meta for t in meta.state_dict().values())
    y = meta(torch.randn(7, 3, 40, device="meta"))
    assert y.shape == (7, 3, 24) and y.is_meta
    meta.to_empty(device="cpu").load_state_dict(state)
    x = torch.randn(2, 40)
    with torch.no_grad():
        assert torch.equal(meta(x), layer(x))
    with pytest.raises(ValueError, match="meta device"):
        CompressedLinear(4, 3, device="meta").to_matrix()


def test_gradients_match_dense():
    layer = make_layer(seed=7)
    dense = layer.to_linear()
    x = torch.randn(2, 3, 40, requires_grad=True)
    x_dense = x.detach().clone().requires_grad_(True)
    (layer(x) ** 2).sum().backward()
    (dense(x_dense) ** 2).sum().backward()
    torch.testing.assert_close(x.grad, x_dense.grad)
    torch.testing.assert_close(layer.bias.grad, dense.bias.grad)


@pytest.mark.parametrize("backend", ["reference", "cpu", "fixed", "huffman"])
def test_opcheck(backend):
    layer = make_layer(8, 12, 0.5, bits=3, seed=8)
    layer.backend = backend
    packed, meta = layer._packed[1], layer._packed[2]
    x = torch.randn(3, 12, requires_grad=True)
    canonical = (layer.codebook, layer.row_ptr, layer.col_idx, layer.codes)
    torch.library.opcheck(ops.compressed_linear, (x, *canonical, layer.bias, packed, meta, 12, layer.backend))
    torch.library.opcheck(ops.compressed_linear, (x[0], *canonical, None, packed, meta, 12, layer.backend))
    torch.library.opcheck(ops.dense_weight, (*canonical, packed, meta, 12, layer.backend))


@pytest.mark.parametrize("backend", ["fixed", "huffman"])
def test_opcheck_packed_backends_without_per_weight_tensors(backend):
    # What a GPU layer passes: empty col_idx/codes; forward and backward use the packed form only.
    layer = make_layer(8, 12, 0.5, bits=3, seed=8)
    layer.backend = backend
    packed, meta = layer._packed[1], layer._packed[2]
    x = torch.randn(3, 12, requires_grad=True)
    stubs = (layer.codebook, layer.row_ptr, layer.col_idx[:0], layer.codes[:0])
    torch.library.opcheck(ops.compressed_linear, (x, *stubs, layer.bias, packed, meta, 12, backend))
    torch.library.opcheck(ops.dense_weight, (*stubs, packed, meta, 12, backend))
    torch.testing.assert_close(
        ops.dense_weight(*stubs, packed, meta, 12, backend), torch.from_numpy(layer.to_matrix().to_dense())
    )
    with pytest.raises(ValueError, match="names no backend"):
        ops.dense_weight(*stubs, [], [], 12, "auto")


@pytest.mark.parametrize("backend", ["fixed", "huffman"])
def test_gpu_layer_never_reads_its_host_copy(monkeypatch, backend):
    """On a GPU a layer served by a packed form keeps col_idx/codes in host memory. Here the
    "host" is the meta device, which holds no values: forward, backward, `weight` and the
    memory count must all work from the packed form alone."""
    import dc_kernels.linear as linear_module

    layer = make_layer(30, 50, 0.2, bits=4, seed=11)
    dense = layer.to_linear()
    layer.backend = backend
    per_weight_bytes = layer.col_idx.numel() * 2 + layer.codes.numel()
    bytes_on_cpu = layer.memory_bytes()
    monkeypatch.setattr(linear_module, "HOST", torch.device("meta"))
    layer._repack()
    assert layer.col_idx.is_meta and layer.codes.is_meta and not layer.row_ptr.is_meta
    x = torch.randn(4, 50, requires_grad=True)
    x_dense = x.detach().clone().requires_grad_(True)
    (layer(x) ** 2).sum().backward()
    (dense(x_dense) ** 2).sum().backward()
    torch.testing.assert_close(x.grad, x_dense.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(layer.bias.grad, dense.bias.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(layer.weight, dense.weight)
    packed_bytes = sum(t.numel() * t.element_size() for t in layer._packed[1])
    small = (layer.codebook, layer.row_ptr, layer.code_bits, layer.bias)
    small = sum(t.numel() * t.element_size() for t in small)
    assert layer.memory_bytes() == packed_bytes + small
    assert layer.memory_bytes() == bytes_on_cpu - per_weight_bytes
    assert layer.host_bytes() == per_weight_bytes


def test_compile_fullgraph_inductor_dynamic_batch():
    layer = make_layer(seed=9)
    compiled = torch.compile(layer, fullgraph=True, dynamic=True)
    with torch.no_grad():
        for shape in ((1, 40), (5, 40), (2, 3, 40)):
            x = torch.randn(shape)
            assert rel_error(compiled(x), dense_output(layer, x)) <= 1e-5


def test_import_never_initializes_cuda():
    code = (
        "import torch\n"
        "def fail(*a, **k): raise AssertionError('CUDA initialized')\n"
        "torch.cuda._lazy_init = fail\n"
        "import dc_kernels\n"
        "layer = dc_kernels.CompressedLinear.from_linear(torch.nn.Linear(8, 4))\n"
        "layer(torch.ones(2, 8))\n"
        "assert not torch.cuda.is_initialized()\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_cuda_backends_and_moves(dtype):
    layer = make_layer(300, 1000, 0.1, seed=10).to(dtype)
    cpu_x = torch.randn(5, 3, 1000).to(dtype)
    expected = dense_output(layer, cpu_x)
    layer.cuda()
    assert layer.codebook.is_cuda and layer.codebook.dtype == torch.float32
    # Served by the fixed-width GPU form: the per-weight canonical tensors stay in host memory.
    assert not layer.col_idx.is_cuda and not layer.codes.is_cuda and layer.host_bytes() > 0
    x = cpu_x.cuda()
    tolerance = 1e-5 if dtype == torch.float32 else 2e-2
    with torch.no_grad():
        for backend in ("auto", "fixed", "huffman", "reference"):
            layer.backend = backend
            for batch in (1, 16, 5 * 3):
                y = layer(x.reshape(-1, 1000)[:batch])
                assert y.dtype == dtype and y.is_cuda
                assert rel_error(y.float().cpu(), expected.reshape(-1, 300)[:batch]) <= tolerance
        layer.backend = "auto"
        compiled = torch.compile(layer, fullgraph=True)
        assert rel_error(compiled(x).float().cpu(), expected) <= tolerance
        layer.backend = "reference"
        assert layer.col_idx.is_cuda and layer.host_bytes() == 0
        layer.backend = "auto"
    x.requires_grad_(True)
    layer(x).float().sum().backward()
    # d(sum y)/dx = the column sums of W, decoded on the device from the packed form.
    column_sums = torch.from_numpy(layer.to_matrix().to_dense()).sum(0).expand(cpu_x.shape)
    assert rel_error(x.grad.float().cpu(), column_sums) <= tolerance
    with torch.no_grad():
        assert rel_error(layer.cpu()(cpu_x).float(), expected) <= tolerance


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("gpu_form", ["fixed", "huffman"])
def test_cuda_forward_never_syncs_and_captures_in_a_cuda_graph(gpu_form):
    # LLM decode replays batch-1 layers from CUDA graphs: forward must not wait for the device.
    layer = make_layer(256, 512, 0.1, seed=12).half().cuda()
    layer.gpu_form = gpu_form
    x = torch.randn(1, 512, device="cuda", dtype=torch.float16)
    with torch.no_grad():
        expected = layer(x)  # compiles the kernels outside the capture
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            layer(x)
        finally:
            torch.cuda.set_sync_debug_mode("default")
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            captured = layer(x)
        x.copy_(torch.randn_like(x))
        graph.replay()
        torch.testing.assert_close(captured, layer(x), rtol=0, atol=0)
        assert not torch.equal(captured, expected)
