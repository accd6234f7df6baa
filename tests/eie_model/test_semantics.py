"""The two semantics of `EIEConfig` (the hardware model and the EIE authors' simulator) and the two
efficiency metrics, against literal cycle-by-cycle references and hand-worked examples."""

import dataclasses

import numpy as np
import pytest

from compress import CompressedMatrix
from eie_model import EIEConfig, encode_eie, simulate_dump, simulate_encoded, simulate_layer
from eie_model.timing import lnzd_levels
from tests.eie_dump import DUMP, needs_dump
from tests.eie_model.reference import RingQueue, cycle_by_cycle
from workloads import random_compressed_matrix

PAPER = "paper-simulator"
#: Cycles the EIE authors' C++ simulator (RalphMao/EIE-simulator, built with NZFETCH_buffersize =
#: B and the rest of its parameters for this layer) prints for their AlexNet fc8 data.
AUTHORS_CYCLES = {2: 10194, 3: 8827, 5: 8160, 9: 7896, 17: 7794}
#: Accumulator writes of real entries their simulator counts for that layer (its "efficiency" is
#: this over cycles x 64).
AUTHORS_WRITES = 453_748


def _dump_reference(size: int) -> int:
    """Cycles of the fc8 dump with the authors' queue of ``size``, cycle by cycle, straight from the
    dump's files: one pass over every row, a PE's work in a column being its pointer difference."""
    ptr = np.stack(
        [np.fromfile(DUMP / "ptr" / f"ptr{k}.dat", dtype="<u4").astype(np.int64) for k in range(64)]
    )
    acts = np.append(np.fromfile(DUMP / "act.dat", dtype="<f4"), np.float32(1.0))  # the bias column
    nonzero = acts != 0
    entries = np.diff(ptr, axis=1)[:, nonzero].T
    return cycle_by_cycle(entries, nonzero, 64, size, lnzd_levels(64), 4, ring=True)["cycles"]


@needs_dump
@pytest.mark.parametrize("size", sorted(AUTHORS_CYCLES))
def test_paper_simulator_semantics_on_the_fc8_dump(size):
    result = simulate_dump(DUMP, EIEConfig(fifo_depth=size, semantics=PAPER))
    assert result.cycles == _dump_reference(size)
    # The authors' simulator starts its leading-non-zero detection 2 cycles earlier than the
    # model's 3-level tree and ends one cycle later: one cycle apart at every queue size.
    assert result.cycles == AUTHORS_CYCLES[size] + 1
    assert result.useful_multiplies == AUTHORS_WRITES
    assert result.useful_efficiency == pytest.approx(AUTHORS_WRITES / (result.cycles * 64))


def test_ring_queue_holds_one_fewer_than_its_size():
    queue = RingQueue(3)
    queue.push("a")
    queue.push("b")
    assert queue.full() and queue.pop() == "a" and not queue.full()
    assert EIEConfig(fifo_depth=8, semantics=PAPER).queue_capacity == 7
    assert EIEConfig(fifo_depth=8).queue_capacity == 8


def test_paper_simulator_queue_of_size_b_is_a_hardware_queue_of_depth_b_minus_1():
    matrix = random_compressed_matrix(200, 120, 0.15, 4, seed=3, codebook_size=15)
    acts = np.abs(np.random.default_rng(3).standard_normal(120)) * (np.arange(120) % 3 != 0)
    for size in (2, 3, 5):
        paper = simulate_layer(matrix, acts, EIEConfig(pes=8, fifo_depth=size, semantics=PAPER))
        hardware = simulate_layer(matrix, acts, EIEConfig(pes=8, fifo_depth=size - 1))
        assert paper.cycles == hardware.cycles
        assert paper.config.semantics == PAPER and paper.to_dict()["semantics"] == PAPER


def test_paper_simulator_makes_one_pass_over_all_rows():
    # 100 rows over 4 PEs with a 10-row register file: 3 passes and write-backs in hardware, one
    # pass in the authors' simulator, whose cycles a one-pass cycle-by-cycle run reproduces.
    matrix = random_compressed_matrix(100, 30, 0.3, 4, seed=5, codebook_size=15)
    acts = np.abs(np.random.default_rng(5).standard_normal(30)) * (np.arange(30) % 4 != 1)
    hardware = simulate_layer(matrix, acts, EIEConfig(pes=4, rf_size=10, fifo_depth=3))
    paper = simulate_layer(matrix, acts, EIEConfig(pes=4, rf_size=10, fifo_depth=3, semantics=PAPER))
    assert hardware.batches == 3 and hardware.writeback_cycles == 25
    assert paper.batches == 1 and paper.writeback_cycles == 0 and paper.counts["act_sram_write"] == 0
    layer = encode_eie(matrix, pes=4)
    nonzero = acts != 0
    entries = np.diff(layer.ptr[0], axis=1)[:, nonzero].T
    assert paper.cycles == cycle_by_cycle(entries, nonzero, 4, 3, lnzd_levels(4), 4, ring=True)["cycles"]
    assert paper.cycles < hardware.cycles
    assert np.array_equal(paper.output.codes, hardware.output.codes)
    # A layer encoded in passes cannot run with the one-pass semantics.
    with pytest.raises(ValueError, match="batch_rows=None"):
        simulate_encoded(encode_eie(matrix, pes=4, batch_rows=10), acts, paper.config)


def _padded_column() -> CompressedMatrix:
    # One PE, one input, rows 0 and 3 kept: with 1-bit z the gap of 2 rows needs a padding
    # entry, so the column is (row 0, z=0), (padding, z=1: rows 1-2), (row 3, z=0).
    mask = np.array([[True], [False], [False], [True]])
    return CompressedMatrix.from_dense(mask, np.zeros((4, 1), np.uint8), np.array([0.5], np.float32), bits=1)


def test_both_efficiencies_on_a_hand_worked_example():
    config = EIEConfig(pes=1, weight_bits=1, index_bits=1, sram_width=8)
    result = simulate_layer(_padded_column(), np.ones(1), config)
    # Broadcast at cycle 0 (no LNZD levels for 1 PE), pointer read at 1, the three entries read
    # at 2, 3 and 4, the last written after 4 arithmetic stages at 8: 9 cycles.
    assert result.cycles == 9
    assert (result.processed_entries, result.processed_padding, result.useful_multiplies) == (3, 1, 2)
    assert result.ideal_cycles == 3
    assert result.load_efficiency == pytest.approx(3 / 9)  # padding counts as work
    assert result.useful_efficiency == pytest.approx(2 / (9 * 1))  # it does not
    # The arithmetic unit skips code 0: no multiply, no accumulator access for the padding.
    assert result.counts["mac"] == 2 and result.counts["dest_write"] == 2 and result.counts["dest_read"] == 2
    # The three 2-bit entries share one 8-bit line.
    assert result.counts["pointer_read"] == 1 and result.counts["spmat_line_read"] == 1
    data = result.to_dict()
    assert data["useful_efficiency"] == pytest.approx(2 / 9) and data["load_efficiency"] == pytest.approx(
        1 / 3
    )


def test_energy_at_the_papers_chip_power():
    result = simulate_layer(_padded_column(), np.ones(1), EIEConfig(pes=1, weight_bits=1, index_bits=1))
    assert result.chip_power_w == pytest.approx(0.59 / 64)
    assert result.energy_at_chip_power_uj == pytest.approx(result.time_us * 0.59 / 64)
    config = EIEConfig(pes=128, clock_mhz=400.0)
    matrix = random_compressed_matrix(300, 40, 0.2, 4, seed=1, codebook_size=15)
    wide = simulate_layer(matrix, np.ones(40), config)
    assert wide.chip_power_w == pytest.approx(0.59 * 2 * 0.5)
    assert wide.to_dict()["energy_at_chip_power_uj"] == pytest.approx(wide.time_us * 0.59)


def test_bad_semantics_are_rejected():
    with pytest.raises(ValueError, match="semantics must be one of"):
        EIEConfig(semantics="rtl")
    with pytest.raises(TypeError, match="semantics"):
        EIEConfig(semantics=1)
    with pytest.raises(ValueError, match="fifo_depth must be >= 2"):
        EIEConfig(fifo_depth=1, semantics=PAPER)
    assert dataclasses.replace(EIEConfig(), semantics=PAPER).batch_rows(10_000) is None
    assert EIEConfig().batch_rows(10_000) == 64 and EIEConfig().batch_rows(4096) is None
