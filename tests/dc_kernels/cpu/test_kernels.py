"""The compiled CPU kernels (and torch's sparse fallback) against the pure-PyTorch reference."""

import ctypes
import os
import select
import shutil
import warnings
from concurrent.futures import ThreadPoolExecutor
from importlib import resources

import pytest
import torch

from compress.matrix import CompressedMatrix
from dc_kernels.cpu import build as cpu_build
from dc_kernels.cpu.launch import (
    DENSE_MIN_BATCH,
    DENSE_MIN_DENSITY,
    CpuState,
    cpu_linear,
    decode,
    pack,
    uses_sparse,
)
from dc_kernels.errors import CorruptLayerError, ShapeMismatchError
from dc_kernels.linear import column_dtype
from dc_kernels.reference import CanonicalTensors, decode_dense, reference_linear
from workloads import random_compressed_matrix


def tensors(m: CompressedMatrix) -> CanonicalTensors:
    t = CanonicalTensors.from_matrix(m)
    return t._replace(col_idx=t.col_idx.to(column_dtype(m.in_features)))


def state(m: CompressedMatrix) -> CpuState:
    return CpuState(tensors(m), [])


def assert_matches(y: torch.Tensor, x: torch.Tensor, m: CompressedMatrix, bias: torch.Tensor | None = None):
    """y equals x W^T + b up to float32 summation error: within 1e-5 of sum |w x| + |b| per
    output (a norm-relative bound fails on outputs that cancel to almost zero)."""
    weight = torch.from_numpy(m.to_dense()).double()
    b = torch.zeros(m.out_features, dtype=torch.float64) if bias is None else bias.double()
    exact = x.double() @ weight.T + b
    scale = x.double().abs() @ weight.abs().T + b.abs()
    assert y.shape == exact.shape
    assert torch.all((y.double() - exact).abs() <= 1e-5 * scale + 1e-30)


LAYERS = [
    # (out, in, density, bits): odd shapes, one kept weight, dense, every code-width path
    (1, 1, 1.0, 1),
    (7, 13, 0.5, 3),
    (13, 7, 0.05, 8),
    (1, 4097, 0.3, 5),
    (300, 1, 0.5, 2),
    (64, 300, 1.0, 6),
    (257, 129, 0.1, 5),
    (50, 40000, 0.02, 4),  # int32 columns
]


@pytest.fixture(scope="module")
def lib():
    library = cpu_build.library()
    if library is None:
        pytest.skip(f"no C compiler: {cpu_build.failure()}")
    return library


@pytest.mark.parametrize(("out_f", "in_f", "density", "bits"), LAYERS)
@pytest.mark.parametrize("batch", [0, 1, 2, 9, 17, 33, 64])
def test_cpu_linear_matches_reference(lib, out_f, in_f, density, bits, batch):
    m = random_compressed_matrix(out_f, in_f, density, bits, seed=out_f + in_f + batch)
    st = state(m)
    x = torch.randn(batch, in_f, generator=torch.Generator().manual_seed(batch))
    bias = torch.randn(out_f, generator=torch.Generator().manual_seed(out_f))
    y = cpu_linear(x, st, bias)
    assert y.dtype == torch.float32
    assert_matches(y, x, m, bias)
    no_bias = cpu_linear(x, st, None)
    torch.testing.assert_close(no_bias + bias, y, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("out_f", "in_f", "density", "bits"), LAYERS)
@pytest.mark.parametrize("path", ["sparse", "dense"])
def test_both_paths_at_any_batch(lib, out_f, in_f, density, bits, path):
    m = random_compressed_matrix(out_f, in_f, density, bits, seed=11)
    st = state(m)
    bias = torch.randn(out_f, generator=torch.Generator().manual_seed(1))
    for batch in (1, 3, 5, 40, 130):
        x = torch.randn(batch, in_f, generator=torch.Generator().manual_seed(batch))
        assert_matches(cpu_linear(x, st, bias, path=path), x, m, bias)


def test_empty_rows_and_no_kept_weight(lib):
    # Rows 0, 2 and 4 hold nothing; the second layer holds no weight at all.
    m = CompressedMatrix((5, 6), [0.5, -1.0], [0, 0, 2, 2, 3, 3], [1, 4, 0], [0, 1, 1], 1)
    empty = CompressedMatrix((3, 4), [0.0], [0, 0, 0, 0], [], [], 1)
    for layer in (m, empty):
        st = state(layer)
        for batch in (1, 3):
            x = torch.randn(batch, layer.in_features)
            expected = x @ torch.from_numpy(layer.to_dense()).T
            got = cpu_linear(x, st, None)
            torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_give_output_in_their_dtype(lib, dtype):
    m = random_compressed_matrix(33, 70, 0.2, 5, seed=1)
    st = state(m)
    x = torch.randn(3, 70).to(dtype)
    y = cpu_linear(x, st, None)
    assert y.dtype == dtype
    ref = reference_linear(x, st.tensors, None)
    torch.testing.assert_close(y, ref)


def test_strided_input(lib):
    m = random_compressed_matrix(20, 30, 0.3, 4, seed=2)
    st = state(m)
    x = torch.randn(30, 6)[:, ::2].t()  # (3, 30), not contiguous
    assert not x.is_contiguous()
    for batch_x in (x, x[:1]):
        y = cpu_linear(batch_x, st, None)
        torch.testing.assert_close(y, reference_linear(batch_x, st.tensors, None))


@pytest.mark.parametrize(("out_f", "in_f", "density", "bits"), LAYERS)
def test_decode_is_exact(lib, out_f, in_f, density, bits):
    m = random_compressed_matrix(out_f, in_f, density, bits, seed=3)
    st = state(m)
    expected = torch.from_numpy(m.to_dense())
    assert torch.equal(decode(st), expected)
    assert torch.equal(decode_dense(st.tensors), expected)


def test_dense_path_only_for_dense_layers_at_large_batches():
    assert uses_sparse(1, 1.0)
    assert uses_sparse(4096, 0.09)
    assert uses_sparse(DENSE_MIN_BATCH - 1, 1.0)
    assert not uses_sparse(DENSE_MIN_BATCH, DENSE_MIN_DENSITY)


def test_portable_build_matches_reference(lib, tmp_path, monkeypatch):
    """The C loop taken where AVX-512 is missing (built here without -march=native)."""
    compiler = cpu_build._compiler()
    source = resources.files("dc_kernels.cpu").joinpath(cpu_build.SOURCE).read_text()
    target = tmp_path / "portable.so"
    assert cpu_build._build(compiler, source, cpu_build.FLAG_SETS[1], target) is None
    portable = cpu_build._declare(ctypes.CDLL(str(target)))
    assert portable.dc_vector_bits() == 0
    monkeypatch.setattr(cpu_build, "library", lambda: portable)
    for out_f, in_f, density, bits in LAYERS:
        m = random_compressed_matrix(out_f, in_f, density, bits, seed=4)
        st = state(m)
        for batch in (1, 9):
            x = torch.randn(batch, in_f)
            y = cpu_linear(x, st, None, path="sparse")
            assert_matches(y, x, m)


def test_concurrent_calls_and_forked_children(lib):
    """Python threads call the kernels at once (ctypes releases the GIL); a forked child, which
    has none of the parent's helper threads, still computes (and does not hang)."""
    m = random_compressed_matrix(2000, 1000, 0.2, 5, seed=6)
    st = state(m)
    x = torch.randn(4, 1000)

    def run(batch):
        return cpu_linear(x[:batch], st, None, path="sparse")

    with ThreadPoolExecutor(4) as executor:
        results = list(executor.map(run, [1, 4] * 8))
    for batch, y in zip([1, 4] * 8, results):
        assert_matches(y, x[:batch], m)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report the result through the pipe, never return into pytest
        try:
            os.write(write_end, run(4).numpy().tobytes())
        finally:
            os._exit(0)
    os.close(write_end)
    ready, _, _ = select.select([read_end], [], [], 60)
    data = b""
    while ready and len(data) < 4 * 2000 * 4 and (chunk := os.read(read_end, 1 << 16)):
        data += chunk
    os.close(read_end)
    os.waitpid(pid, 0)
    assert ready, "the forked child hung"
    assert_matches(torch.frombuffer(bytearray(data), dtype=torch.float32).reshape(4, 2000), x, m)


def test_failed_build_is_reported(tmp_path):
    with pytest.raises(cpu_build.BuildError, match="error"):
        cpu_build._build(cpu_build._compiler() or "cc", "this is not C", ("-O1",), tmp_path / "x.so")
    assert not list(tmp_path.iterdir())


def test_torch_sparse_fallback(monkeypatch):
    """Without a compiler the path runs torch's sparse CSR kernels on cached decoded values."""
    monkeypatch.setattr(cpu_build, "library", lambda: None)
    m = random_compressed_matrix(40, 50, 0.2, 5, seed=5)
    st = state(m)
    packed = pack(st.tensors)
    assert [t.dtype for t in packed] == [torch.int32, torch.int32, torch.float32]
    x = torch.randn(3, 50)
    bias = torch.randn(40)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's "sparse CSR support is in beta"
        y = cpu_linear(x, st._replace(fallback=packed), bias)
    torch.testing.assert_close(y, reference_linear(x, st.tensors, bias))
    assert torch.equal(decode(st), decode_dense(st.tensors))  # the reference decoder serves


def fresh_loader(monkeypatch, cache):
    monkeypatch.setenv("DC_KERNELS_CACHE", str(cache))
    monkeypatch.setattr(cpu_build, "_attempted", False)
    monkeypatch.setattr(cpu_build, "_library", None)
    monkeypatch.setattr(cpu_build, "_failure", None)
    monkeypatch.setattr(cpu_build, "_notice", None)


def load_warning(monkeypatch, cache) -> str | None:
    """Load the kernels afresh from ``cache``: the one warning it gave (None if none); a second
    call must give none."""
    fresh_loader(monkeypatch, cache)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        library = cpu_build.library()
        cpu_build.library()
    assert library is not None and cpu_build.vector_bits() >= 0
    assert len(caught) <= 1, [str(w.message) for w in caught]
    return str(caught[0].message) if caught else None


def test_an_unusable_cache_builds_in_a_private_directory(lib, monkeypatch, tmp_path):
    not_a_directory = tmp_path / "file"
    not_a_directory.write_text("")
    assert "cannot be used" in load_warning(monkeypatch, not_a_directory)
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    assert "writable by group or others (mode 777)" in load_warning(monkeypatch, shared)
    assert not list(shared.iterdir())  # nothing was written there
    if os.getuid() == 0:  # only root can give a directory to another user
        foreign = tmp_path / "foreign"
        foreign.mkdir(mode=0o700)
        os.chown(foreign, 12345, -1)
        assert "belongs to user id 12345" in load_warning(monkeypatch, foreign)


@pytest.mark.parametrize("damage", ["empty", "garbage", "link"])
def test_a_bad_cached_library_is_built_again(lib, monkeypatch, tmp_path, damage):
    assert load_warning(monkeypatch, tmp_path / "good") is None
    # A copy under a path this process never loaded (the dynamic loader reuses a path it knows).
    shutil.copytree(tmp_path / "good", tmp_path / "cache")
    (built,) = (tmp_path / "cache" / "cpu").glob("sparse_linear-*")
    size = built.stat().st_size
    built.unlink()
    if damage == "link":  # a link, even to a good library, is not trusted
        built.symlink_to(next((tmp_path / "good" / "cpu").iterdir()))
    else:
        built.write_bytes(b"" if damage == "empty" else b"\x7fELF not a library")
    assert load_warning(monkeypatch, tmp_path / "cache") is None
    assert built.is_file() and not built.is_symlink() and built.stat().st_size == size
    assert sorted(p.name for p in built.parent.iterdir()) == [built.name]


def test_no_build_warns_once_and_falls_back(monkeypatch, tmp_path):
    fresh_loader(monkeypatch, tmp_path)
    monkeypatch.setenv("DC_KERNELS_NO_BUILD", "1")
    with pytest.warns(RuntimeWarning, match="torch sparse CSR"):
        assert cpu_build.library() is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cpu_build.library() is None
    assert cpu_build.failure() == "DC_KERNELS_NO_BUILD=1"
    assert cpu_build.vector_bits() == -1


def test_kernel_arguments_are_checked(lib):
    """Checks that keep the C code inside its arrays: dtypes, devices, layout, lengths, and the
    values the kernels index with (row pointers, columns, codes), and the input and bias."""
    m = random_compressed_matrix(6, 10, 0.5, 3, seed=7)
    st = state(m)
    x = torch.randn(1, 10)
    cb, rp, col, codes, _ = st.tensors

    def edited(tensor, index, value):
        tensor = tensor.clone()
        tensor[index] = value
        return tensor

    bad = {
        "row_ptr must be a contiguous 1-D tensor": (cb, rp.int(), col, codes),
        "col_idx must be a contiguous 1-D tensor": (cb, rp, col.long(), codes),
        "codebook must be a contiguous 1-D tensor": (cb.double(), rp, col, codes),
        "codes must be a contiguous 1-D tensor": (cb, rp, col, codes.repeat(2)[::2]),
        "expected 1..256 codebook entries": (cb, rp, col, codes[:-1]),
        "col_idx holds columns 0 .. 10, outside 0 .. 9": (cb, rp, edited(col, -1, 10), codes),
        "col_idx holds columns -1": (cb, rp, edited(col, 0, -1), codes),
        f"row_ptr must run from 0 to {m.nnz}": (cb, edited(rp, -1, m.nnz + 1), col, codes),
        "row_ptr decreases at row 3": (cb, edited(rp, 2, m.nnz), col, codes),
        "codes hold code 200": (cb, rp, col, edited(codes, 0, 200)),
        "codebook holds NaN": (edited(cb, 0, float("nan")), rp, col, codes),
    }
    for message, args in bad.items():
        corrupt = CpuState(CanonicalTensors(*args, 10), [])
        for call in (lambda: cpu_linear(x, corrupt), lambda: decode(corrupt)):  # noqa: B023 (called at once)
            with pytest.raises(CorruptLayerError, match=message):
                call()
    with pytest.raises(
        CorruptLayerError, match=r"bias must be a float32, float16 or bfloat16 tensor of shape \(6,\)"
    ):
        cpu_linear(x, st, torch.zeros(5))
    with pytest.raises(ShapeMismatchError, match=r"x2d must be a \(batch, 10\) tensor, got \(10,\)"):
        cpu_linear(x[0], st)
    with pytest.raises(ValueError, match="path must be"):
        cpu_linear(x, st, None, path="fast")


def test_in_place_edits_are_validated_again(lib):
    """Values are validated once per change of a tensor (its version counter), not per call."""
    st = state(random_compressed_matrix(6, 10, 0.5, 3, seed=8))
    x = torch.randn(2, 10)
    cpu_linear(x, st)
    st.tensors.col_idx[0] = 10_000  # an in-place edit moves the version counter
    with pytest.raises(CorruptLayerError, match=r"outside 0 \.\. 9"):
        cpu_linear(x, st)
    st.tensors.col_idx[0] = 0
    cpu_linear(x, st)
