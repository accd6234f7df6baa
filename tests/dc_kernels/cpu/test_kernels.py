"""The compiled CPU kernels of both forms (the sparse form's packed relative-index entries, the
dense-codes form's codes) and their fallbacks without a compiler, against an exact product."""

import ctypes
import os
import select
import shutil
import warnings
from concurrent.futures import ThreadPoolExecutor
from importlib import resources

import numpy as np
import pytest
import torch

from compress.matrix import CompressedMatrix
from dc_kernels.cpu import batches, packed_gemm
from dc_kernels.cpu import build as cpu_build
from dc_kernels.cpu.batches import CHUNK_BYTES
from dc_kernels.cpu.launch import (
    AVX2_DENSE_MIN_BATCH,
    AVX2_DENSE_MIN_DENSITY,
    DENSE_MIN_BATCH,
    DENSE_MIN_DENSITY,
    cpu_linear,
    dense_from,
    uses_sparse,
)
from dc_kernels.cpu.launch import decode as sparse_decode
from dc_kernels.cpu.layout import SparseLayout
from dc_kernels.dense_codes.cpu import codes_linear_cpu, codes_state
from dc_kernels.dense_codes.cpu import decode as codes_decode
from dc_kernels.dense_codes.cpu import kernel_max_batch as codes_kernel_max_batch
from dc_kernels.dense_codes.layout import DenseCodesLayout
from dc_kernels.errors import DtypeMismatchError, ShapeMismatchError
from workloads import random_compressed_matrix

FORMS = {
    # form: (layout from a matrix, linear, decode, its two paths)
    "sparse": (SparseLayout.from_matrix, cpu_linear, sparse_decode, ("sparse", "dense")),
    "dense_codes": (DenseCodesLayout.from_matrix, codes_linear_cpu, codes_decode, ("codes", "dense")),
}


def linear(form: str, x, m: CompressedMatrix, bias=None, path=None):
    build_layout, run, _, _ = FORMS[form]
    return run(x, build_layout(m), bias, path)


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
    # (out, in, density, bits, codebook entries or None for 2**bits): odd shapes, one kept weight,
    # dense, every code width of both forms (dense codes: 1..9 bits, one to four bit planes)
    (1, 1, 1.0, 1, None),
    (7, 13, 0.5, 3, None),
    (13, 7, 0.05, 8, None),
    (1, 4097, 0.3, 5, None),
    (300, 1, 0.5, 2, None),
    (64, 300, 1.0, 6, None),
    (257, 129, 0.1, 5, None),
    (33, 100, 0.6, 4, 15),
    (70, 520, 0.5, 4, 15),  # 4-bit codes over several panels, rows of 16 mod 32 codes
    (20, 70, 0.7, 7, 100),
    (50, 40000, 0.02, 4, None),  # beyond int16 columns
]


# The sparse form's byte steps (AVX2 at batch 1: 8- to 11-bit entries, codes of up to 5 bits, z of
# up to 8): (out, in, density, bits, index_bits), rows of 16 mod 32 entries, rows of more than 8
# steps (more than one chunk), fillers and columns past 65535 within a row.
BYTE_STEP_LAYERS = [
    (37, 2000, 0.2, 5, 4),
    (37, 2000, 0.2, 5, 3),
    (29, 3001, 0.12, 5, 5),
    (29, 3001, 0.12, 5, 6),
    (23, 999, 0.3, 4, 4),
    (23, 999, 0.3, 3, 6),
    (23, 999, 0.3, 3, 8),
    (17, 700, 0.4, 2, 6),
    (17, 700, 0.4, 1, 7),
    (5, 70000, 0.01, 5, 6),
    (9, 48, 1.0, 5, 3),
]


def byte_step_cases():
    for out_f, in_f, density, bits, index_bits in BYTE_STEP_LAYERS:
        m = random_compressed_matrix(out_f, in_f, density, bits, seed=out_f + index_bits)
        yield m, SparseLayout.from_matrix(m, index_bits=index_bits)


def matrix(out_f, in_f, density, bits, k, seed):
    return random_compressed_matrix(
        out_f, in_f, density, bits, seed=seed, **({} if k is None else {"codebook_size": k})
    )


@pytest.fixture(scope="module")
def lib():
    library = cpu_build.library()
    if library is None:
        pytest.skip(f"no C compiler: {cpu_build.failure()}")
    return library


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize(("out_f", "in_f", "density", "bits", "k"), LAYERS)
@pytest.mark.parametrize("batch", [0, 1, 2, 9, 17, 33, 64])
def test_linear_matches_exact_product(lib, form, out_f, in_f, density, bits, k, batch):
    m = matrix(out_f, in_f, density, bits, k, seed=out_f + in_f + batch)
    x = torch.randn(batch, in_f, generator=torch.Generator().manual_seed(batch))
    bias = torch.randn(out_f, generator=torch.Generator().manual_seed(out_f))
    y = linear(form, x, m, bias)
    assert y.dtype == torch.float32
    assert_matches(y, x, m, bias)
    torch.testing.assert_close(linear(form, x, m) + bias, y, rtol=1e-5, atol=1e-5)


def test_sparse_byte_steps(lib):
    """Every entry width and code width of the sparse byte steps, at batches 1 and 2 (the batch-1
    kernel, one and two rows of x at once) and 3, 40 and 70 (the batched one: tiles of 8; 32 + 8;
    64 + 8 batch columns), with and without bias."""
    for m, layout in byte_step_cases():
        assert 8 <= layout.width <= 11
        bias = torch.randn(m.out_features, generator=torch.Generator().manual_seed(2))
        for batch in (1, 2, 3, 40, 70):
            x = torch.randn(batch, m.in_features, generator=torch.Generator().manual_seed(batch))
            assert_matches(cpu_linear(x, layout, bias, "sparse"), x, m, bias)
            assert_matches(cpu_linear(x, layout, None, "sparse"), x, m)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize(("out_f", "in_f", "density", "bits", "k"), LAYERS)
def test_both_paths_at_any_batch(lib, form, out_f, in_f, density, bits, k):
    m = matrix(out_f, in_f, density, bits, k, seed=11)
    bias = torch.randn(out_f, generator=torch.Generator().manual_seed(1))
    for path in FORMS[form][3]:
        for batch in (1, 3, 5, 40, 130):
            x = torch.randn(batch, in_f, generator=torch.Generator().manual_seed(batch))
            assert_matches(linear(form, x, m, bias, path), x, m, bias)


@pytest.mark.parametrize("width", range(1, 10))
@pytest.mark.parametrize("threads", [1, 2])
def test_dense_codes_tile_kernel_edges(lib, width, threads):
    """The dense-codes tile kernel (from 24 rows of x, 16 with AVX2): panels of 32 rows (6 with
    AVX2) and 256 columns with partial ones after them, tiles of 12 rows of x and partial ones (16
    and 8 with AVX2), two blocks of x, with and without bias, on every code width; rows of x
    holding a NaN or an infinity give NaN rows."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for out_f, in_f, batch in ((70, 300, 24), (33, 5, 37), (1, 17, 25), (40, 2000, 300)):
            # 2**width - 1 entries and the zero code; 9 bits: a full 256-entry codebook
            bits, k = (width, (1 << width) - 1) if width < 9 else (8, None)
            m = matrix(out_f, in_f, 0.7, bits, k, seed=width + batch)
            assert DenseCodesLayout.from_matrix(m).width == width
            x = torch.randn(batch, in_f, generator=torch.Generator().manual_seed(batch))
            bias = torch.randn(out_f, generator=torch.Generator().manual_seed(width))
            if batch == 300:  # 2000 inputs: 2 MB of x per block holds 252 rows
                assert codes_kernel_max_batch(in_f) < batch
            for b in (bias, None):
                assert_matches(codes_linear_cpu(x, DenseCodesLayout.from_matrix(m), b, "codes"), x, m, b)
            x[3, 1 % in_f], x[batch - 1, 0] = float("nan"), float("-inf")
            y = codes_linear_cpu(x, DenseCodesLayout.from_matrix(m), bias, "codes")
            poisoned = torch.zeros(batch, dtype=torch.bool)
            poisoned[[3, batch - 1]] = True
            assert torch.isnan(y[poisoned]).all() and torch.isfinite(y[~poisoned]).all()
            assert_matches(y[~poisoned], x[~poisoned], m, bias)
    finally:
        torch.set_num_threads(previous)


def test_dense_codes_kernel_max_batch(lib):
    """With AVX-512 the lookup kernels run up to 23 rows whatever the layer (the row kernel), and
    while one 2 MB block of x holds the batch in whole tiles of 12 rows, up to 512 rows (the tile
    kernel); with AVX2 up to 256 rows whatever the layer (its tile kernel takes x^T by blocks of
    columns); decode + GEMM beyond."""
    if cpu_build.vector_bits() == 256:
        limits = {1 << 20: 256, 4096: 256, 384: 256}
    else:
        limits = {1 << 20: 23, 4096: (2 << 20) // (4 * 4096) // 12 * 12, 384: 512}
    for cols, limit in limits.items():
        assert codes_kernel_max_batch(cols) == limit, cols
    layout = DenseCodesLayout.from_matrix(matrix(8, 4096, 0.5, 4, 15, seed=0))
    kernels = codes_state(layout).kernels
    limit = codes_kernel_max_batch(4096)
    assert not kernels.dense(limit) and kernels.dense(limit + 1)


@pytest.mark.parametrize("form", FORMS)
def test_empty_rows_and_no_kept_weight(lib, form):
    # Rows 0, 2 and 4 hold nothing; the second layer holds no weight at all.
    m = CompressedMatrix((5, 6), [0.5, -1.0], [0, 0, 2, 2, 3, 3], [1, 4, 0], [0, 1, 1], 1)
    empty = CompressedMatrix((3, 4), [0.0], [0, 0, 0, 0], [], [], 1)
    for layer in (m, empty):
        for batch in (1, 3):
            x = torch.randn(batch, layer.in_features)
            torch.testing.assert_close(linear(form, x, layer), x @ torch.from_numpy(layer.to_dense()).T)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_give_output_in_their_dtype(lib, form, dtype):
    m = random_compressed_matrix(33, 70, 0.2, 5, seed=1)
    x = torch.randn(3, 70).to(dtype)
    y = linear(form, x, m)
    assert y.dtype == dtype
    torch.testing.assert_close(y, (x.float() @ torch.from_numpy(m.to_dense()).T).to(dtype))


@pytest.mark.parametrize("form", FORMS)
def test_strided_input_and_chunked_batches(lib, form, monkeypatch):
    m = random_compressed_matrix(20, 30, 0.3, 4, seed=2)
    x = torch.randn(30, 6)[:, ::2].t()  # (3, 30), not contiguous
    assert not x.is_contiguous()
    for batch_x in (x, x[:1]):
        assert_matches(linear(form, batch_x, m), batch_x, m)
    monkeypatch.setattr("dc_kernels.cpu.batches.CHUNK_BYTES", 4 * (20 + 30) * 2)  # two rows per chunk
    for path in FORMS[form][3]:
        big = torch.randn(7, 30).bfloat16()
        torch.testing.assert_close(
            linear(form, big, m, path=path).float(), linear(form, big.float(), m), atol=0.05, rtol=0.02
        )


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("packed", [True, False], ids=["packed_x", "addmm"])
def test_decode_and_gemm_in_blocks_and_passes(lib, form, packed, monkeypatch):
    """The decode + GEMM path over several blocks of rows: x packed once per pass (MKL's packed
    GEMM, in passes of three rows) or one torch.addmm per block; contiguous float32 batches beyond
    a pass take torch.addmm, other inputs go through in passes."""
    gemm = packed_gemm.load()
    if packed and gemm is None:
        pytest.skip("no MKL packed GEMM in this PyTorch build")
    packs = []
    if packed:
        monkeypatch.setattr(
            gemm, "pack", lambda x, rows, pack=gemm.pack: packs.append(len(x)) or pack(x, rows)
        )
    else:
        monkeypatch.setattr(packed_gemm, "load", lambda: None)
    monkeypatch.setattr(batches, "DECODE_BLOCK_BYTES", 4 * 30 * 7)  # 7 rows: the layer is several blocks
    monkeypatch.setattr(batches, "PACKED_BLOCK_BYTES", 4 * 30 * 5)
    monkeypatch.setattr(batches, "PACKED_BLOCK_BYTES_PER_THREAD", 4 * 30 * 2)  # from 2 threads on
    monkeypatch.setattr(batches, "PACKED_X_BYTES", 4 * 30 * 3)
    m = random_compressed_matrix(23, 30, 0.6, 4, seed=5)
    bias = torch.randn(23, generator=torch.Generator().manual_seed(6))
    for batch in (1, 3, 4, 11):
        x = torch.randn(batch, 30, generator=torch.Generator().manual_seed(batch))
        for b in (bias, None):
            assert_matches(linear(form, x, m, b, path="dense"), x, m, b)
            strided = torch.randn(60, batch)[::2].t()
            assert_matches(linear(form, strided, m, b, path="dense"), strided, m, b)
            half = linear(form, x.bfloat16(), m, b, path="dense")
            assert half.dtype == torch.bfloat16
            torch.testing.assert_close(
                half.float(), linear(form, x.bfloat16().float(), m, b), atol=0.05, rtol=0.02
            )
    if packed:  # passes of at most 3 rows; 11 strided or bfloat16 rows end with a pass of 2
        assert max(packs) == 3 and packs.count(2) == 4


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize(("out_f", "in_f", "density", "bits", "k"), LAYERS)
def test_decode_is_exact(lib, form, out_f, in_f, density, bits, k):
    m = matrix(out_f, in_f, density, bits, k, seed=3)
    build_layout, _, decode, _ = FORMS[form]
    assert torch.equal(decode(build_layout(m)), torch.from_numpy(m.to_dense()))


def test_dispatch_constants(monkeypatch):
    for vector_bits, (density, batch) in (
        (512, (DENSE_MIN_DENSITY, DENSE_MIN_BATCH)),
        (256, (AVX2_DENSE_MIN_DENSITY, AVX2_DENSE_MIN_BATCH)),
    ):
        monkeypatch.setattr(cpu_build, "vector_bits", lambda v=vector_bits: v)
        assert dense_from() == (density, batch)
        assert uses_sparse(1, 1.0)
        assert uses_sparse(4096, 0.09)
        assert uses_sparse(batch - 1, 1.0)
        assert not uses_sparse(batch, density)
    assert CHUNK_BYTES >= 1 << 20


@pytest.mark.parametrize(
    ("extra", "vector_bits"), [((), 0), (("-mavx2", "-mfma"), 256)], ids=["portable", "avx2"]
)
def test_other_builds_match_exact_product(lib, tmp_path, monkeypatch, extra, vector_bits):
    """The kernels a CPU without AVX-512 runs, built here whatever this CPU has: the portable C
    loops (no -march=native) and the AVX2 kernels (where this CPU runs AVX2 and FMA); both with
    the library's own thread pool, which builds without OpenMP use (two threads where there is work)."""
    if extra and not {"avx2", "fma"} <= set(cpu_build._cpu_identity().split()):
        pytest.skip("this CPU does not run AVX2 and FMA")
    folder = resources.files("dc_kernels.cpu")
    sources = {name: folder.joinpath(name).read_text() for name in (*cpu_build.SOURCES, *cpu_build.HEADERS)}
    target = tmp_path / "variant.so"
    flags = next(f for f in cpu_build.FLAG_SETS if "-march=native" not in f and "-fopenmp" not in f)
    assert cpu_build._build(cpu_build._compiler(), sources, (*flags, *extra), target) is None
    variant = cpu_build._declare(ctypes.CDLL(str(target)))
    assert variant.dc_vector_bits() == vector_bits
    monkeypatch.setattr(cpu_build, "library", lambda: variant)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    for form in FORMS:
        for out_f, in_f, density, bits, k in LAYERS:
            m = matrix(out_f, in_f, density, bits, k, seed=4)
            for path in FORMS[form][3]:
                for batch in (1, 2, 9, 20, 30):  # the row and tile kernels of both forms (AVX2: 16 + 8)
                    x = torch.randn(batch, in_f)
                    assert_matches(linear(form, x, m, path=path), x, m)
    for m, layout in byte_step_cases():
        x = torch.randn(1, m.in_features)
        assert_matches(cpu_linear(x, layout, None, "sparse"), x, m)


@pytest.mark.parametrize("form", FORMS)
def test_concurrent_decode_and_gemm_on_different_layers(lib, form):
    """Threads decoding different layers at once each decode into their own kept block buffer."""
    layers = [random_compressed_matrix(60 + 7 * i, 50, 0.6, 4, seed=i) for i in range(3)]
    build_layout, run_form, _, _ = FORMS[form]
    layouts = [build_layout(m) for m in layers]
    x = torch.randn(9, 50)

    def run(i):
        return run_form(x, layouts[i % 3], None, "dense")

    with ThreadPoolExecutor(4) as executor:
        results = list(executor.map(run, range(24)))
    for i, y in enumerate(results):
        assert_matches(y, x, layers[i % 3])


@pytest.mark.parametrize("form", FORMS)
def test_concurrent_calls_and_forked_children(lib, form):
    """Python threads call the kernels at once (ctypes releases the GIL); a forked child, which
    has none of the parent's helper threads, still computes (and does not hang)."""
    m = random_compressed_matrix(2000, 1000, 0.2, 5, seed=6)
    build_layout, run_form, _, (path, _) = FORMS[form]
    layout = build_layout(m)
    x = torch.randn(4, 1000)

    def run(batch):
        return run_form(x[:batch], layout, None, path)

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
        sources = {name: "this is not C" for name in (*cpu_build.SOURCES, *cpu_build.HEADERS)}
        cpu_build._build(cpu_build._compiler() or "cc", sources, ("-O1",), tmp_path / "x.so")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("form", FORMS)
def test_fallbacks_without_a_compiler(monkeypatch, form):
    """Without a compiler the sparse form runs torch's sparse CSR kernels on decoded values, the
    dense-codes form NumPy-decoded blocks and a dense GEMM."""
    monkeypatch.setattr(cpu_build, "library", lambda: None)
    m = random_compressed_matrix(40, 50, 0.2, 5, seed=5)
    bias = torch.randn(40)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's "sparse CSR support is in beta"
        for batch in (1, 3, 300):
            x = torch.randn(batch, 50)
            assert_matches(linear(form, x, m, bias), x, m, bias)
    build_layout, _, decode, _ = FORMS[form]
    assert torch.equal(decode(build_layout(m)), torch.from_numpy(m.to_dense()))


def fresh_loader(monkeypatch, cache):
    monkeypatch.setenv("DC_KERNELS_CACHE", str(cache))
    # These tests check the cache, not the kernels: the quickest build (-O3 -march=native takes 20 s
    # on 2 cores, and each test builds two or three times).
    monkeypatch.setattr(cpu_build, "FLAG_SETS", (("-O0",),))
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
    (built,) = (tmp_path / "cache" / "cpu").glob("dc_kernels-*")
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


@pytest.mark.parametrize("form", FORMS)
def test_launcher_arguments_are_checked(lib, form):
    m = random_compressed_matrix(6, 10, 0.5, 3, seed=7)
    build_layout, run, _, _ = FORMS[form]
    layout = build_layout(m)
    x = torch.randn(1, 10)
    with pytest.raises(ShapeMismatchError, match=r"bias must be a CPU tensor of shape \(6,\)"):
        run(x, layout, torch.zeros(5))
    with pytest.raises(ShapeMismatchError, match=r"x2d must be a \(batch, 10\) tensor, got \(10,\)"):
        run(x[0], layout)
    with pytest.raises(DtypeMismatchError, match=r"torch\.float64"):
        run(x.double(), layout)
    with pytest.raises(ValueError, match="path must be"):
        run(x, layout, None, "fast")
    with pytest.raises(TypeError, match="layout must be a"):
        run(x, m)


def test_layout_structure_is_checked():
    """What keeps the kernels inside their arrays is checked when a layout is built."""
    layout = SparseLayout.from_matrix(random_compressed_matrix(6, 10, 0.5, 3, seed=7))
    tensors, meta, codebook = layout.tensors(), layout.metadata(), layout.codebook
    entry_ptr, planes = tensors
    damaged = {
        "entry_ptr must run from 0": [entry_ptr.flip(0).contiguous(), planes],
        "bytes of planes": [entry_ptr, planes[:-1].contiguous()],
        "planes must be a 1-D CPU tensor of torch.uint8": [entry_ptr, planes.int()],
    }
    for message, bad in damaged.items():
        with pytest.raises(ValueError, match=message):
            SparseLayout.from_state(bad, meta, codebook)
    with pytest.raises(ValueError, match="codebook has 9 entries for bits=3"):
        SparseLayout.from_state(tensors, meta, torch.zeros(9))
    codes = DenseCodesLayout.from_matrix(random_compressed_matrix(6, 10, 0.5, 3, seed=7))
    with pytest.raises(ValueError, match="takes codes of 4 bits"):
        DenseCodesLayout.from_state(codes.tensors(), [6, 10, 3, 3, codes.nnz], codes.codebook)
    with pytest.raises(ValueError, match="bytes of planes"):
        DenseCodesLayout.from_state([codes.planes[:64].contiguous()], codes.metadata(), codes.codebook)


def test_damaged_streams_stay_inside_the_arrays(lib):
    """Stream bytes are not checked per call: whatever they hold, the kernels read only inside
    x and the codebook (columns are clamped, every code has a table entry) and decoding the
    layout back refuses them."""
    m = random_compressed_matrix(40, 50, 0.3, 5, seed=9)
    x = torch.randn(3, 50)
    for layout in (SparseLayout.from_matrix(m), DenseCodesLayout.from_matrix(m)):
        layout.planes.fill_(255)  # every entry a filler or the widest code
        run = cpu_linear if isinstance(layout, SparseLayout) else codes_linear_cpu
        for batch in (1, 3):
            assert run(x[:batch], layout).isfinite().all()
        with pytest.raises(ValueError):
            layout.to_matrix()
    for m, layout in byte_step_cases():  # random entries: columns run past the row, clamped
        noise = torch.randint(0, 256, layout.planes.shape, generator=torch.Generator().manual_seed(3))
        layout.planes.copy_(noise)
        for batch in (1, 2, 3, 9):  # the batch-1 kernel, and the tiles of transposed x
            assert cpu_linear(torch.randn(batch, m.in_features), layout, path="sparse").isfinite().all()


def test_packed_bytes_follow_the_bits():
    """A kept weight costs its code and relative index bits in the sparse layout (24 bits in
    the canonical tensors); a weight costs its code in the dense-codes layout."""
    sparse = random_compressed_matrix(256, 1024, 0.09, 5, seed=1)
    layout = SparseLayout.from_matrix(sparse)
    assert layout.total_bytes() * 8 / sparse.nnz < 15
    dense = random_compressed_matrix(256, 1024, 0.8, 4, seed=1, codebook_size=15)
    codes = DenseCodesLayout.from_matrix(dense)
    assert codes.width == 4 and codes.total_bytes() <= 256 * 1024 / 2 + 64 * 2
    assert np.array_equal(codes.to_matrix().to_dense(), dense.to_dense())


def test_avx2_packing_takes_byte_step_widths(monkeypatch):
    """With the AVX2 kernels a layer whose fewest bits come with entries outside the byte steps'
    8-11 bits (4-bit codes at 25% density: 3-bit indices) is packed at the byte steps' width that
    costs fewest bits when that is at most `AVX2_BYTE_STEP_SLACK` more; other builds, code widths
    above 5 bits and layers already inside those widths keep the fewest bits."""
    from compress.relative_index import relative_entries, row_gaps
    from compress.size import best_index_bits
    from dc_kernels.cpu import launch as cpu_launch
    from dc_kernels.cpu.layout import byte_step_index_bits

    m = random_compressed_matrix(64, 1024, 0.25, 4, seed=2)
    gaps = row_gaps(m.row_ptr, m.col_idx)
    assert best_index_bits(gaps, 4) == 3
    assert byte_step_index_bits(gaps, 4, 0.2) == 4
    assert relative_entries(gaps, 4) * 8 <= 1.2 * relative_entries(gaps, 3) * 7
    assert byte_step_index_bits(gaps, 4, 0.0) == 3  # no slack: the fewest bits
    six = random_compressed_matrix(64, 1024, 0.25, 6, seed=2)
    six_gaps = row_gaps(six.row_ptr, six.col_idx)
    # no byte steps for 6-bit codes
    assert byte_step_index_bits(six_gaps, 6, 0.2) == best_index_bits(six_gaps, 6)
    paper = random_compressed_matrix(64, 1024, 0.09, 5, seed=2)  # 5-bit codes, 9%: already 9-10-bit entries
    paper_gaps = row_gaps(paper.row_ptr, paper.col_idx)
    assert 8 <= 5 + best_index_bits(paper_gaps, 5) <= 11
    assert byte_step_index_bits(paper_gaps, 5, 0.2) == best_index_bits(paper_gaps, 5)
    for vector_bits, width in ((256, 4), (512, 3), (0, 3)):
        monkeypatch.setattr(cpu_build, "vector_bits", lambda v=vector_bits: v)
        assert cpu_launch.packing_index_bits(m) == width
        packed, meta = cpu_launch.pack(_Module(m))
        layout = SparseLayout.from_state(packed[:2], meta, torch.from_numpy(m.codebook.copy()))
        assert layout.index_bits == width


class _Module:
    """What `pack` reads of a module: its canonical matrix and codebook."""

    def __init__(self, matrix: CompressedMatrix) -> None:
        self.matrix = matrix
        self.codebook = torch.from_numpy(matrix.codebook.copy())

    def to_matrix(self) -> CompressedMatrix:
        return self.matrix
