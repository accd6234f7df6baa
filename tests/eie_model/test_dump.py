"""The EIE authors' AlexNet fc8 dump (found as `tests.eie_dump` says; skipped without it) and the
dump format on synthetic layers."""

import numpy as np
import pytest

from eie_model import (
    EIEConfig,
    dump_arrays,
    encode_eie,
    read_eie_dump,
    simulate_dump,
    simulate_encoded,
    write_eie_dump,
)
from tests.eie_dump import DUMP, needs_dump
from tests.eie_model.reference import dense_fixed_point
from workloads import random_compressed_matrix


@pytest.fixture(scope="module")
def dump():
    return read_eie_dump(DUMP)


def _raw(pe: int) -> tuple[np.ndarray, np.ndarray]:
    ptr = np.fromfile(DUMP / "ptr" / f"ptr{pe}.dat", dtype="<u4")
    spm = np.fromfile(DUMP / "spm" / f"spm{pe}.dat", dtype="<u4").reshape(-1, 2)
    return ptr, spm


@needs_dump
def test_reads_the_alexnet_fc8_layer(dump):
    layer = dump.layer
    assert layer.shape == (1000, 4097) and layer.pes == 64
    assert layer.entries == 1_051_991 and layer.padding_entries == 0
    assert dump.has_bias_column and dump.activations[-1] == 1.0
    assert dump.activations.size == 4097
    assert layer.codebook[0] == 0.0 and layer.codebook.size == 16


@needs_dump
@pytest.mark.parametrize("pe", [0, 39, 40, 63])
def test_decoding_reproduces_the_entries(dump, pe):
    # Decode PE `pe`'s files by hand, column by column, and compare with the decoded matrix.
    ptr, spm = _raw(pe)
    expected = {}
    for col in range(ptr.size - 1):
        local = -1
        for code, z in spm[ptr[col] : ptr[col + 1]]:
            local += int(z) + 1
            if code:
                expected[(pe + 64 * local, col)] = int(code) - 1
    matrix = dump.matrix
    rows, cols = matrix.row_idx, matrix.col_idx
    mine = rows % 64 == pe
    got = dict(zip(zip(rows[mine].tolist(), cols[mine].tolist()), matrix.codes[mine].tolist()))
    assert got == expected


@needs_dump
def test_our_encoder_gives_the_dump_back(dump):
    ptrs, spms = dump_arrays(encode_eie(dump.matrix, pes=64, weight_bits=4, index_bits=4))
    for pe in range(64):
        ptr, spm = _raw(pe)
        assert np.array_equal(ptrs[pe], ptr), pe
        assert np.array_equal(spms[pe], spm), pe


@needs_dump
def test_simulated_output_is_bit_exact_and_close_to_float(dump):
    result = simulate_dump(DUMP)
    fmt = result.output.fmt
    matrix = dump.matrix
    weights_q = np.zeros(matrix.shape, dtype=np.int64)
    codebook_q = np.clip(np.rint(matrix.codebook.astype(np.float64) * 2.0**fmt.weight_frac), -32768, 32767)
    weights_q[matrix.row_idx, matrix.col_idx] = codebook_q[matrix.codes]
    acts_q = np.clip(np.rint(dump.activations.astype(np.float64) * 2.0**fmt.act_frac), -32768, 32767)
    expected = dense_fixed_point(weights_q, acts_q.astype(np.int64), fmt.product_shift, 16)
    assert np.array_equal(result.output.codes, expected)
    # The float layer straight from the files: y = W a + bias.
    raw_codebook = np.fromfile(DUMP / "arithm.dat", dtype="<f4").astype(np.float64)
    act = np.fromfile(DUMP / "act.dat", dtype="<f4").astype(np.float64)
    y = np.zeros(1000)
    for pe in range(64):
        ptr, spm = _raw(pe)
        counts = np.diff(ptr.astype(np.int64))
        col = np.repeat(np.arange(counts.size), counts)
        running = np.cumsum(spm[:, 1].astype(np.int64) + 1)
        start = np.concatenate(([0], running))[ptr[:-1].astype(np.int64)]
        row = pe + 64 * (running - np.repeat(start, counts) - 1)
        np.add.at(y, row, raw_codebook[spm[:, 0]] * np.append(act, 1.0)[col])
    assert np.allclose(result.output.reference, y, atol=1e-9)
    assert np.abs(result.output.values - y).max() < 1e-3 * np.abs(y).max()
    assert result.processed_entries > 0 and 0.5 < result.load_efficiency <= 1.0


@needs_dump
def test_dump_on_another_design_is_re_encoded():
    result = simulate_dump(DUMP, EIEConfig(pes=16, rf_size=64))
    assert result.config.pes == 16 and result.batches == 1
    base = simulate_dump(DUMP)
    assert np.array_equal(result.output.codes, base.output.codes)
    assert result.cycles > 3 * base.cycles


def test_write_and_read_a_synthetic_dump(tmp_path):
    matrix = random_compressed_matrix(37, 21, 0.3, 4, seed=3, codebook_size=15)
    layer = encode_eie(matrix, pes=4)
    acts = np.abs(np.random.default_rng(0).standard_normal(21)).astype(np.float32)
    write_eie_dump(layer, acts, tmp_path)
    back = read_eie_dump(tmp_path, out_features=37)
    assert not back.has_bias_column
    assert back.matrix.equals(matrix)
    assert np.array_equal(back.activations, acts)
    a = simulate_encoded(layer, acts)
    b = simulate_encoded(back.layer, back.activations)
    assert a.cycles == b.cycles and np.array_equal(a.output.codes, b.output.codes)


def test_corrupt_dumps_are_rejected(tmp_path):
    matrix = random_compressed_matrix(16, 8, 0.5, 4, seed=4, codebook_size=15)
    write_eie_dump(encode_eie(matrix, pes=2), np.ones(8, np.float32), tmp_path)
    with pytest.raises(FileNotFoundError):
        read_eie_dump(tmp_path / "missing")
    spm = tmp_path / "spm" / "spm1.dat"
    good = spm.read_bytes()
    spm.write_bytes(good[:-4])  # half an entry
    with pytest.raises(ValueError, match="odd number"):
        read_eie_dump(tmp_path)
    spm.write_bytes(good[:-8])  # one entry short of the pointers
    with pytest.raises(ValueError, match="entries"):
        read_eie_dump(tmp_path)
    spm.write_bytes(good)
    (tmp_path / "act.dat").write_bytes(np.ones(3, np.float32).tobytes())
    with pytest.raises(ValueError, match="activations"):
        read_eie_dump(tmp_path)
    (tmp_path / "act.dat").write_bytes(np.ones(8, np.float32).tobytes())
    (tmp_path / "ptr" / "ptr1.dat").unlink()
    with pytest.raises(ValueError, match="1 ptr files but 2 spm files"):
        read_eie_dump(tmp_path)
    (tmp_path / "spm" / "spm1.dat").unlink()
    (tmp_path / "spm" / "spm0.dat").unlink()
    with pytest.raises(FileNotFoundError, match=r"spm0\.dat"):
        read_eie_dump(tmp_path)


def _one_pe_dump(directory, spm_pairs, columns: int = 2):
    """A one-PE dump whose column 0 holds ``spm_pairs`` ((code, z) pairs)."""
    (directory / "ptr").mkdir(parents=True)
    (directory / "spm").mkdir()
    np.array([0.0, 0.5, -0.5], "<f4").tofile(directory / "arithm.dat")
    np.ones(columns, "<f4").tofile(directory / "act.dat")
    pairs = np.asarray(spm_pairs, dtype="<u4").reshape(-1, 2)
    ptr = np.array([0] + [len(pairs)] * columns, "<u4")
    ptr.tofile(directory / "ptr" / "ptr0.dat")
    pairs.tofile(directory / "spm" / "spm0.dat")


def test_dump_bombs_are_refused_cheaply(tmp_path):
    """Padding entries (code 0) each skip 16 rows: a dump of a few kilobytes can point at rows
    far beyond any real layer. Sizes come from entries that hold a weight, and are capped."""
    far = [(0, 15)] * 2000 + [(1, 0)]  # a weight 32,000 rows down, after 2000 paddings
    _one_pe_dump(tmp_path / "far", far)
    assert read_eie_dump(tmp_path / "far").layer.out_features == 32_001
    with pytest.raises(ValueError, match="out_features=32001, more than max_out_features=1000"):
        read_eie_dump(tmp_path / "far", max_out_features=1000)
    with pytest.raises(ValueError, match=r"more than max_out_features=16777216"):
        read_eie_dump(tmp_path / "far", out_features=1 << 30)
    trailing = [(1, 0)] + [(0, 15)] * 2000  # paddings after the last weight: not a size
    _one_pe_dump(tmp_path / "trailing", trailing)
    with pytest.raises(ValueError, match="local row"):
        read_eie_dump(tmp_path / "trailing")
    with pytest.raises(ValueError, match="out_features must be a positive int"):
        read_eie_dump(tmp_path / "far", out_features=0)


def test_dump_errors_are_clean_cli_lines(tmp_path, capsys):
    from eie_model.__main__ import main

    _one_pe_dump(tmp_path / "trailing", [(1, 0)] + [(0, 15)] * 10)
    assert main(["simulate", "--eie-dump", str(tmp_path / "trailing"), "--json"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "Traceback" not in err
