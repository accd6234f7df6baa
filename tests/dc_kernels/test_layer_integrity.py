"""A CompressedLinear never runs a kernel on buffers that do not hold a valid layer: not loaded
(constructor, meta + to_empty, load_state_dict(strict=False) without its keys), edited in place,
or passed inconsistent to the custom ops directly; and its rules for non-finite inputs and
float64 hold on every backend."""

import subprocess
import sys

import pytest
import torch
from torch import nn

import compress
import dc_kernels
from compress.errors import UnsupportedModuleError
from dc_kernels.backends import backend_names, get_backend
from dc_kernels.cpu import build as cpu_build
from dc_kernels.errors import CorruptLayerError, LayerNotLoadedError
from dc_kernels.linear import CompressedLinear
from workloads import random_compressed_matrix

CANONICAL_READERS = ("reference",)  # backends whose kernels index with the canonical tensors
BACKENDS = [name for name in backend_names() if name != "auto"]
# Backends whose packed form alone holds a layer in host memory: its col_idx and codes are decoded
# copies, so editing them changes nothing.
HOST_PACKED = [name for name in BACKENDS if get_backend(name).to_matrix is not None]


def make_layer(backend: str = "cpu", out_f: int = 24, in_f: int = 40, density: float = 0.25, seed: int = 0):
    matrix = random_compressed_matrix(out_f, in_f, density, 5, seed=seed)
    bias = torch.randn(out_f, generator=torch.Generator().manual_seed(seed))
    return CompressedLinear.from_matrix(matrix, bias, backend=backend)


# ----------------------------------------------------------------------------- not loaded
def test_meta_then_to_empty_is_not_loaded_until_a_state_dict_arrives():
    source = make_layer()
    with torch.device("meta"):
        layer = CompressedLinear(40, 24)
    assert layer(torch.randn(3, 40, device="meta")).shape == (3, 24)  # shape inference still runs
    layer.to_empty(device="cpu")
    assert not layer.loaded
    with pytest.raises(LayerNotLoadedError, match="holds no compressed weights yet"):
        layer(torch.randn(3, 40))
    with pytest.raises(LayerNotLoadedError):
        _ = layer.weight
    loaded = source.to("meta").to_empty(device="cpu")  # a loaded layer loses its values too
    assert not loaded.loaded
    layer.load_state_dict(make_layer().state_dict())
    assert layer.loaded and torch.equal(layer(torch.ones(2, 40)), make_layer()(torch.ones(2, 40)))


def test_strict_false_without_the_keys_stays_not_loaded():
    model = nn.Sequential(CompressedLinear(40, 24))
    state = {f"layer.{k}": v for k, v in make_layer().state_dict().items()}  # the wrong prefix
    result = model.load_state_dict(state, strict=False)
    assert len(result.unexpected_keys) == 6 and not model[0].loaded
    with pytest.raises(LayerNotLoadedError):
        model(torch.randn(2, 40))
    with pytest.raises(LayerNotLoadedError):
        dc_kernels.save_compressed(model, "unused")
    partial = {k: v for k, v in make_layer().state_dict().items() if k != "codes"}
    with pytest.raises(ValueError, match="invalid compressed layer"):  # mixed with the empty buffers
        CompressedLinear(40, 24).load_state_dict(partial, strict=False)


# ----------------------------------------------------------------------------- in-place edits
EDITS = {
    "col_idx": (lambda layer: layer.col_idx.__setitem__(3, 40), "col_idx"),
    "row_ptr": (lambda layer: layer.row_ptr.__setitem__(5, layer.nnz + 5), "row_ptr"),
    "codes": (lambda layer: layer.codes.__setitem__(0, 200), "codes"),
    "codebook": (lambda layer: layer.codebook.__setitem__(0, float("nan")), "NaN"),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("buffer", sorted(EDITS))
def test_buffers_edited_in_place_are_refused_before_any_kernel(backend, buffer):
    layer = make_layer(backend)
    x = torch.randn(1, 40)
    with torch.no_grad():
        expected = layer(x)
        saved = {name: getattr(layer, name).clone() for name in ("codebook", "row_ptr", "col_idx", "codes")}
        edit, match = EDITS[buffer]
        edit(layer)
        if backend in HOST_PACKED and buffer in ("col_idx", "codes"):
            assert torch.equal(layer(x), expected) and torch.equal(getattr(layer, buffer), saved[buffer])
            return
        with pytest.raises(CorruptLayerError, match=match):
            layer(x)
        with pytest.raises(CorruptLayerError, match=match):
            _ = layer.weight
        for name, value in saved.items():
            getattr(layer, name).copy_(value)
        assert torch.equal(layer(x), expected)  # valid again: runs again


def test_valid_edits_are_seen_by_every_backend():
    """A consistent in-place change (another codebook) is computed, not a stale packed copy."""
    x = torch.randn(2, 40)
    for backend in BACKENDS:
        layer = make_layer(backend)
        with torch.no_grad():
            layer(x)
            layer.codebook.mul_(2)
            doubled = layer.to_linear()(x) - layer.bias
            torch.testing.assert_close(layer(x) - layer.bias, doubled, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- direct op calls
def op_arguments(layer: CompressedLinear) -> dict:
    return {
        "codebook": layer.codebook,
        "row_ptr": layer.row_ptr,
        "col_idx": layer.col_idx,
        "codes": layer.codes,
        "bias": layer.bias.detach(),
    }


def inconsistent_arguments():
    """(description, change to the op's arguments, message): each would make a kernel read out
    of bounds (at batch 1 the CPU kernel would read past x) or return garbage."""
    return [
        ("column past x", lambda a: a["col_idx"].__setitem__(-1, 40), "outside 0 .. 39"),
        ("negative column", lambda a: a["col_idx"].__setitem__(0, -5), "-5"),
        ("row pointers past the weights", lambda a: a["row_ptr"].__setitem__(-1, 10**6), "row_ptr"),
        ("row pointers decreasing", lambda a: a["row_ptr"].__setitem__(3, 0), "decreases"),
        ("fewer codes than columns", lambda a: a.update(codes=a["codes"][:-1]), "one column per code"),
        ("code past the codebook", lambda a: a["codes"].__setitem__(0, 99), "code 99"),
        ("int64 columns", lambda a: a.update(col_idx=a["col_idx"].long()), "col_idx must be"),
        ("strided codes", lambda a: a.update(codes=a["codes"].repeat(2)[::2]), "codes must be"),
        ("short bias", lambda a: a.update(bias=a["bias"][:-1]), r"shape \(24,\)"),
        ("empty codebook", lambda a: a.update(codebook=a["codebook"][:0]), "codebook entries"),
    ]  # fmt: skip


@pytest.mark.parametrize("backend", CANONICAL_READERS)
@pytest.mark.parametrize(("what", "change", "match"), inconsistent_arguments())
def test_direct_op_calls_with_inconsistent_tensors_raise(backend, what, change, match):
    arguments = {k: v.clone() for k, v in op_arguments(make_layer()).items()}
    change(arguments)
    for batch in (1, 3):
        x = torch.randn(batch, 40)
        with pytest.raises(CorruptLayerError, match=match):
            torch.ops.dc_kernels.compressed_linear(
                x, arguments["codebook"], arguments["row_ptr"], arguments["col_idx"], arguments["codes"],
                arguments["bias"], [], [], 40, backend,
            )  # fmt: skip
    if what != "short bias":
        with pytest.raises(CorruptLayerError, match=match):
            torch.ops.dc_kernels.dense_weight(
                arguments["codebook"], arguments["row_ptr"], arguments["col_idx"], arguments["codes"], [], [],
                40, backend,
            )  # fmt: skip


def test_inference_tensors_are_validated_on_every_call():
    with torch.inference_mode():
        layer = make_layer("reference")
        x = torch.randn(1, 40)
        layer(x)
        layer.col_idx[0] = 40  # inference tensors keep no version counter: checked every call
        with pytest.raises(CorruptLayerError):
            layer(x)


@pytest.mark.parametrize("backend", HOST_PACKED)
def test_direct_op_calls_without_the_packed_form_raise(backend):
    layer = make_layer(backend)
    arguments = op_arguments(layer)
    with pytest.raises(ValueError, match="expected tensors"):
        torch.ops.dc_kernels.compressed_linear(
            torch.randn(2, 40), arguments["codebook"], arguments["row_ptr"], arguments["col_idx"],
            arguments["codes"], None, [], [], 40, backend,
        )  # fmt: skip


# ----------------------------------------------------------------------------- non-finite inputs
def poisoned_input(layer: CompressedLinear, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """x and which of its rows hold a non-finite value: after a finite row 0, rows with NaN at a
    column no row keeps, +inf at a kept column, -inf at a pruned one, NaN and inf together (as
    many as the batch holds), then finite rows."""
    kept = torch.zeros(layer.out_features, layer.in_features, dtype=torch.bool)
    kept[torch.repeat_interleave(torch.arange(layer.out_features), torch.diff(layer.row_ptr.cpu())),
         layer.col_idx.cpu().long()] = True  # fmt: skip
    unused = int(torch.nonzero(~kept.any(0))[0])
    used = int(torch.nonzero(kept.any(0))[0])
    x = torch.randn(batch, layer.in_features, generator=torch.Generator().manual_seed(batch))
    poisons = [
        {unused: float("nan")},
        {used: float("inf")},
        {unused: -float("inf")},
        {used: float("nan"), unused: float("inf")},
    ]
    poisoned = torch.zeros(batch, dtype=torch.bool)
    for row, poison in enumerate(poisons[: batch - 1], start=1):
        for column, value in poison.items():
            x[row, column] = value
        poisoned[row] = True
    return x, poisoned


# Every path of every backend: the CPU form's batch-1 kernel, batched kernel and decode + GEMM
# (a layer over 50% dense at 128 rows or more); the fixed form's small-batch kernel, its chunks of
# 16 rows and its dense crossover (64 rows); the Huffman form's kernel.
PATHS = [("reference", 5), ("cpu", 2), ("cpu", 17), ("cpu", 130), ("fixed", 5), ("fixed", 40), ("fixed", 70)]
PATHS += [("huffman", 5), ("huffman", 17)]


@pytest.mark.parametrize(("backend", "batch"), PATHS)
def test_a_non_finite_value_in_a_row_of_x_makes_that_output_row_nan(backend, batch):
    # Column 39 is never kept.
    m = random_compressed_matrix(24, 39, 0.6, 4, seed=1)
    matrix = compress.CompressedMatrix((24, 40), m.codebook, m.row_ptr, m.col_idx, m.codes, m.bits)
    layer = CompressedLinear.from_matrix(matrix, backend=backend)
    x, poisoned = poisoned_input(layer, batch)
    with torch.no_grad():
        y = layer(x)
    assert torch.isnan(y[poisoned]).all()
    assert torch.isfinite(y[~poisoned]).all()
    torch.testing.assert_close(y[~poisoned], layer.to_linear()(x[~poisoned]), rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------- float64
def test_float64_is_refused_when_a_layer_is_built_or_converted():
    with pytest.raises(TypeError, match=r"not torch\.float64"):
        CompressedLinear(4, 3, dtype=torch.float64)
    with pytest.raises(TypeError, match=r"model\.float"):
        CompressedLinear.from_linear(nn.Linear(8, 4).double())
    with pytest.raises(TypeError, match="float64"):
        CompressedLinear.from_matrix(
            random_compressed_matrix(4, 8, 0.5, 2), torch.zeros(4, dtype=torch.float64)
        )
    layer = make_layer()
    with pytest.raises(TypeError, match="float64"):
        layer.double()
    assert layer.bias.dtype == torch.float32 and layer.weight_dtype == torch.float32  # unchanged
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 4)).double()
    with pytest.raises(UnsupportedModuleError, match=r"layer '0' has torch.float64 weights"):
        dc_kernels.compress_(model)
    assert isinstance(model[0], nn.Linear) and isinstance(model[2], nn.Linear)  # nothing swapped
    with pytest.raises(UnsupportedModuleError, match="float64"):
        dc_kernels.swap_compressed_(model, {"2": random_compressed_matrix(4, 8, 0.5, 2)})


# ----------------------------------------------------------------------------- memory
RSS_PROBE = """
import resource, sys, torch
from dc_kernels import CompressedLinear
from workloads import random_compressed_matrix
layer = CompressedLinear.from_matrix(random_compressed_matrix(64, 4096, float(sys.argv[1]), 5))
x = torch.ones(4096, 4096, dtype=torch.bfloat16)
layer(x[:4]), layer(x[:1])  # the kernels loaded, every path's code touched
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
y = layer(x)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
"""


@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss in KiB is Linux's")
@pytest.mark.parametrize("density", [0.05, 0.6])  # the sparse kernels; decode + GEMM
def test_large_batches_take_bounded_transient_memory(density):
    """A bfloat16 batch of 4096 x 4096 (32 MiB): float32 copies of x (64 MiB each) were made
    whole before (~130 MB in all); now at most a chunk of it is converted at a time."""
    if cpu_build.library() is None:
        pytest.skip(f"no C compiler: {cpu_build.failure()}")
    result = subprocess.run(
        [sys.executable, "-c", RSS_PROBE, str(density)],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    grown_kib = int(result.stdout.split()[-1])
    assert grown_kib < 32 * 1024, f"peak memory grew {grown_kib} KiB during forward"


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_finite_inputs_whose_sums_overflow_stay_finite(backend):
    """float16 rows summing past 65504 (the CPU's quick test for non-finite values overflows):
    only the row that holds an infinity becomes NaN."""
    layer = CompressedLinear.from_matrix(random_compressed_matrix(8, 40, 0.5, 4, seed=2), backend=backend)
    layer.half()
    x = torch.full((3, 40), 30000.0, dtype=torch.float16)  # each row sums to inf in float16
    x[1, 3] = float("inf")
    with torch.no_grad():
        y = layer(x)
    assert torch.isnan(y[1]).all() and not torch.isnan(y[[0, 2]]).any()
