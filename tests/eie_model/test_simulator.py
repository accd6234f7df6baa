import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compress import CompressedMatrix
from eie_model import (
    CodebookTooLargeError,
    EIEConfig,
    FixedPointFormat,
    encode_eie,
    simulate_encoded,
    simulate_layer,
)
from tests.eie_model.reference import dense_fixed_point
from workloads import random_compressed_matrix, simulate_benchmark


def _reference(matrix: CompressedMatrix, acts: np.ndarray, fmt: FixedPointFormat) -> np.ndarray:
    high = 2 ** (fmt.bits - 1) - 1
    codebook_q = np.clip(np.rint(matrix.codebook.astype(np.float64) * 2.0**fmt.weight_frac), -high - 1, high)
    weights_q = np.zeros(matrix.shape, dtype=np.int64)
    weights_q[matrix.row_idx, matrix.col_idx] = codebook_q[matrix.codes]
    acts_q = np.clip(np.rint(acts.astype(np.float64) * 2.0**fmt.act_frac), -high - 1, high).astype(np.int64)
    return dense_fixed_point(weights_q, acts_q, fmt.product_shift, fmt.bits)


def _layer(rows, cols, density, seed, bits=4):
    return random_compressed_matrix(rows, cols, density, bits, seed=seed, codebook_size=(1 << bits) - 1)


@settings(max_examples=25, deadline=None)
@given(
    rows=st.integers(1, 60),
    cols=st.integers(1, 50),
    density=st.floats(0.02, 1.0),
    act_density=st.floats(0.0, 1.0),
    pes=st.integers(1, 8),
    rf_size=st.integers(1, 8),
    signed=st.booleans(),
    seed=st.integers(0, 1000),
)
def test_output_bit_exact_against_dense_reference(
    rows, cols, density, act_density, pes, rf_size, signed, seed
):
    matrix = _layer(rows, cols, density, seed)
    rng = np.random.default_rng(seed)
    acts = rng.standard_normal(cols) * (rng.random(cols) < act_density)
    if not signed:
        acts = np.abs(acts)
    config = EIEConfig(pes=pes, rf_size=rf_size, fifo_depth=2)
    result = simulate_layer(matrix, acts, config)
    assert np.array_equal(result.output.codes, _reference(matrix, acts, result.output.fmt))
    # Per-PE accounting covers every cycle of the run.
    assert np.all(
        result.pe_busy + result.pe_stalled + result.pe_starved + result.writeback_cycles == result.cycles
    )
    assert result.ideal_cycles <= result.cycles
    assert result.processed_entries == result.pe_processed.sum()
    assert result.counts["fifo_push"] == result.broadcasts * pes * result.batches


def test_saturation_is_bit_exact():
    matrix = _layer(40, 64, 0.8, 1)
    acts = np.abs(np.random.default_rng(1).standard_normal(64)) * 4
    tight = FixedPointFormat(weight_frac=14, act_frac=12, out_frac=14)  # outputs overflow +-2
    result = simulate_layer(matrix, acts, EIEConfig(pes=4), fmt=tight)
    expected = _reference(matrix, acts, tight)
    assert np.array_equal(result.output.codes, expected)
    assert np.any(np.abs(expected) == 2**15 - 1) or np.any(expected == -(2**15))


def test_close_to_float():
    matrix = _layer(300, 500, 0.1, 2)
    acts = np.abs(np.random.default_rng(2).standard_normal(500)) * (np.arange(500) % 3 == 0)
    result = simulate_layer(matrix, acts)
    exact = matrix.to_dense().astype(np.float64) @ acts
    assert np.allclose(result.output.reference, exact, atol=1e-9)
    assert np.abs(result.output.values - exact).max() < 2e-3 * np.abs(exact).max()


def test_hand_counted_tiny_layer():
    # 6 rows over 2 PEs (PE 0: rows 0, 2, 4; PE 1: rows 1, 3, 5), 4 inputs, FIFO depth 1. PE 0 has
    # 3, 0, 1, 0 entries in the columns, PE 1 one each: the schedule of test_timing's hand count.
    mask = np.zeros((6, 4), dtype=bool)
    mask[[0, 2, 4, 1], 0] = True
    mask[3, 1] = True
    mask[[2, 5], 2] = True
    mask[1, 3] = True
    matrix = CompressedMatrix.from_dense(
        mask, np.zeros((6, 4), np.uint8), np.array([0.5], np.float32), bits=4
    )
    result = simulate_layer(matrix, np.ones(4), EIEConfig(pes=2, fifo_depth=1))
    assert result.cycles == 15
    assert result.ideal_cycles == 4  # 8 entries over 2 PEs
    assert result.load_efficiency == pytest.approx(4 / 15)
    assert result.useful_efficiency == pytest.approx(8 / (15 * 2))  # real multiplies / (cycles x PEs)
    assert result.pe_busy.tolist() == [6, 4]
    assert result.pe_stalled.tolist() == [0, 1]
    assert result.empty_column_slots == 2
    assert result.stall_cycles == 1 + 2 + 1
    assert result.counts["pointer_read"] == 8 and result.counts["mac"] == 8
    # PE 0's entries sit at addresses 0..3 (one 64-bit line), PE 1's at 0..3: one line each.
    assert result.counts["spmat_line_read"] == 2
    assert result.output.values.tolist() == [0.5, 1.0, 1.0, 0.5, 0.5, 0.5]


def test_bypass_and_line_buffer():
    # One PE, one row, three columns back to back: updates of row 0 in adjacent cycles twice.
    matrix = CompressedMatrix.from_dense(np.ones((1, 3), bool), np.zeros((1, 3), np.uint8), [1.0], bits=4)
    result = simulate_layer(matrix, np.ones(3), EIEConfig(pes=1))
    assert result.bypasses == 2
    assert result.counts["dest_read"] == 1 and result.counts["dest_write"] == 3
    assert result.counts["spmat_line_read"] == 1
    # 3 entries, first pop at cycle 1 (no LNZD levels for 1 PE), last entry read at 4, written at 8.
    assert result.cycles == 9
    narrow = simulate_layer(matrix, np.ones(3), EIEConfig(pes=1, sram_width=8))
    assert narrow.counts["spmat_line_read"] == 3 and narrow.cycles == result.cycles


def test_batches_when_rows_exceed_the_register_file():
    matrix = _layer(100, 30, 0.3, 5)
    acts = np.abs(np.random.default_rng(5).standard_normal(30))
    one = simulate_layer(matrix, acts, EIEConfig(pes=4, rf_size=64))
    three = simulate_layer(matrix, acts, EIEConfig(pes=4, rf_size=10))  # 25 rows per PE
    assert one.batches == 1 and three.batches == 3
    assert three.writeback_cycles == 10 + 10 + 5
    assert three.counts["act_sram_write"] == 100 and one.counts["act_sram_write"] == 0
    assert three.counts["fifo_push"] == 3 * one.counts["fifo_push"]
    assert np.array_equal(one.output.codes, three.output.codes)
    assert three.cycles > one.cycles


def test_zero_input_and_empty_layer():
    matrix = _layer(20, 40, 0.2, 6)
    result = simulate_layer(matrix, np.zeros(40), EIEConfig(pes=4))
    assert result.broadcasts == 0 and result.processed_entries == 0
    assert result.cycles == 1 + 10  # LNZD latency of a 4-PE tree, then 10 all-zero groups
    assert not result.output.codes.any()
    empty = CompressedMatrix((8, 5), np.array([1.0], np.float32), np.zeros(9, np.int64), [], [], 4)
    result = simulate_layer(empty, np.ones(5), EIEConfig(pes=2))
    assert result.processed_entries == 0 and result.empty_column_slots == 10
    assert result.pe_busy.tolist() == [5, 5]


def test_fifo_depth_and_pe_count_trends():
    matrix = _layer(512, 256, 0.1, 7)
    acts = np.abs(np.random.default_rng(7).standard_normal(256)) * (np.arange(256) % 2 == 0)
    cycles = [simulate_layer(matrix, acts, EIEConfig(pes=16, fifo_depth=d)).cycles for d in (1, 2, 8, 64)]
    assert cycles == sorted(cycles, reverse=True) and cycles[0] > cycles[-1]
    by_pes = [simulate_layer(matrix, acts, EIEConfig(pes=n)).cycles for n in (1, 4, 16, 64)]
    assert by_pes == sorted(by_pes, reverse=True)
    # One PE never waits on another, and with ~51 entries per column the LNZD stays ahead of it:
    # its cycles are the first pop's cycle (1), its own work, the last entry's sparse-matrix read
    # and the 4 arithmetic stages.
    single = simulate_layer(matrix, acts, EIEConfig(pes=1, rf_size=512))
    assert single.pe_stalled.sum() == 0
    assert single.cycles == 1 + int(single.pe_busy[0]) + 1 + 4


def test_bad_inputs():
    matrix = _layer(10, 12, 0.3, 8)
    with pytest.raises(ValueError, match="12 values"):
        simulate_layer(matrix, np.ones(11))
    with pytest.raises(ValueError, match="NaN"):
        simulate_layer(matrix, np.full(12, np.nan))
    with pytest.raises(TypeError):
        simulate_layer(matrix, np.array(["a"] * 12))
    big = random_compressed_matrix(10, 12, 0.3, 5, seed=8)
    with pytest.raises(CodebookTooLargeError):
        simulate_layer(big, np.ones(12))
    assert simulate_layer(big, np.ones(12), fit=True).processed_entries == big.nnz
    layer = encode_eie(matrix, pes=4)
    with pytest.raises(ValueError, match="pes=4"):
        simulate_encoded(layer, np.ones(12), EIEConfig(pes=8))
    with pytest.raises(ValueError, match="rf_size"):
        simulate_encoded(encode_eie(matrix, pes=1), np.ones(12), EIEConfig(pes=1, rf_size=4))
    with pytest.raises(ValueError, match="fifo_depth"):
        EIEConfig(fifo_depth=0)
    with pytest.raises(ValueError, match="sram_width"):
        EIEConfig(sram_width=4)
    with pytest.raises(TypeError):
        EIEConfig(pes=2.5)


def test_benchmark_result_is_json_ready():
    result = simulate_benchmark("alex8", scale=0.1)
    data = json.loads(json.dumps(result.to_dict(per_pe=True)))
    for key in (
        "layer",
        "cycles",
        "time_us",
        "ideal_cycles",
        "theoretical_us",
        "load_efficiency",
        "entries",
        "padding_entries",
        "energy_uj",
        "power_mw",
        "output_checksum",
    ):
        assert key in data
    assert data["layer"] == "alex8" and data["shape"] == [100, 410]
    assert len(data["per_pe_cycles"]["busy"]) == 64
    assert data["time_us"] == pytest.approx(data["cycles"] / 800)
    again = simulate_benchmark("alex8", scale=0.1)
    assert again.output_checksum == result.output_checksum and again.cycles == result.cycles
