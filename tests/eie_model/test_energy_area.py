import dataclasses

import numpy as np
import pytest

from eie_model import EIEConfig, chip_area_mm2, energy_table, pe_area_um2, simulate_layer
from eie_model.energy import CACTI_SPMAT_READ_PJ, EVENTS, run_energy, sram_read_pj
from workloads import random_compressed_matrix, simulate_benchmark


@pytest.mark.parametrize("name", ["module", "45nm"])
def test_every_entry_records_source_and_node(name):
    table = energy_table(name)
    for entry in (*table.per_event.values(), table.clock_mw_per_pe, table.leakage_mw_per_pe):
        assert entry.source and entry.node == "45 nm" and entry.value >= 0
    assert set(table.per_event) == set(EVENTS)


def test_module_table_reproduces_table2_power_at_full_activity():
    # Every module doing one unit of work per cycle on every PE (the derivation's assumption)
    # must give back Table II's modules, 9.158 mW per PE at 800 MHz (published total: 9.157).
    config = EIEConfig()
    cycles = 8_000
    units = cycles * config.pes
    counts = dict.fromkeys(EVENTS, 0)
    counts.update(
        fifo_push=units,
        pointer_read=units,
        spmat_line_read=units // 8,
        mac=units,
        dest_read=units,
        dest_write=units,
    )
    report = run_energy(counts, cycles, config, energy_table("module"))
    power_mw = report.total_pj * 1e-12 / (cycles / 800e6) * 1e3
    assert power_mw == pytest.approx(9.158 * config.pes, rel=1e-9)


def test_clock_power_scales_with_frequency_and_sram_width_with_line_energy():
    config = EIEConfig()
    table = energy_table("module")
    counts = dict.fromkeys(EVENTS, 0)
    counts["spmat_line_read"] = 1000
    slow = run_energy(counts, 1000, dataclasses.replace(config, clock_mhz=400.0), table)
    fast = run_energy(counts, 1000, config, table)
    assert slow.clock_pj == pytest.approx(fast.clock_pj)  # same cycles: same clock energy per cycle
    assert slow.dynamic_pj == fast.dynamic_pj
    # A line read scales with CACTI's read energy of the 128 KB array at that width.
    wide = run_energy(counts, 1000, dataclasses.replace(config, sram_width=128), table)
    ratio = CACTI_SPMAT_READ_PJ[128] / CACTI_SPMAT_READ_PJ[64]
    assert wide.dynamic_pj["spmat_line_read"] == pytest.approx(ratio * fast.dynamic_pj["spmat_line_read"])


def test_unknown_table_and_event():
    with pytest.raises(ValueError, match="module"):
        energy_table("7nm")
    with pytest.raises(ValueError, match="bogus"):
        run_energy({"bogus": 1}, 10, EIEConfig(), energy_table("module"))


def test_area_of_the_paper_design_and_scaling():
    config = EIEConfig()
    assert pe_area_um2(config)["total"] == pytest.approx(638_024)
    assert chip_area_mm2(config) == pytest.approx(40.8, abs=0.05)
    half = dataclasses.replace(config, spmat_sram_kb=64.0)
    assert pe_area_um2(half)["spmat_read"] == pytest.approx(469_412 / 2)
    assert chip_area_mm2(dataclasses.replace(config, pes=256)) > 3.9 * chip_area_mm2(config)


def test_benchmark_energy_is_consistent():
    result = simulate_benchmark("nt-lstm", scale=0.25)
    data = result.to_dict()
    parts = data["energy"]["breakdown_uj"]
    assert sum(parts.values()) == pytest.approx(data["energy_uj"])
    assert data["power_mw"] == pytest.approx(data["energy_uj"] / data["time_us"] * 1e3)
    table = energy_table("module")
    for event in ("mac", "pointer_read", "spmat_line_read"):
        expected = result.counts[event] * table.event_pj(event, 64) * 1e-6
        assert parts[event] == pytest.approx(expected)
    assert parts["clock"] == pytest.approx(1.874e-3 * 64 * result.cycles / 800e6 * 1e6)
    assert data["frames_per_j"] == pytest.approx(1e6 / data["energy_uj"])
    other = simulate_benchmark("nt-lstm", scale=0.25, energy_table=energy_table("45nm"))
    assert other.cycles == result.cycles and other.energy_uj != result.energy_uj


def test_sram_read_energy_by_width_follows_cacti():
    for width, pj in CACTI_SPMAT_READ_PJ.items():
        assert sram_read_pj(width) == pytest.approx(pj)
    widths = [4, 8, 12, 16, 24, 64, 100, 512, 1024, 4096]
    energies = [sram_read_pj(w) for w in widths]
    assert energies == sorted(energies)  # wider lines cost more per read ...
    assert all(
        e / w > f / v for w, e, v, f in zip(widths, energies, widths[1:], energies[1:])
    )  # ... less per bit
    # Between table widths the energy is interpolated log-log.
    assert sram_read_pj(91) == pytest.approx(32.96 * (91 / 64) ** (np.log(40.53 / 32.96) / np.log(2)))
    for bad in (0, -8, 2.5, True):
        with pytest.raises(ValueError, match="width"):
            sram_read_pj(bad)


def test_padding_costs_no_arithmetic_energy():
    # The same layer with 2-bit z (no padding) and 1-bit z (padding entries in the long gaps):
    # the padded run reads more entries but makes the same multiplies and accumulator writes.
    matrix = random_compressed_matrix(64, 20, 0.1, 1, seed=2, codebook_size=1)
    acts = np.ones(20)
    plain = simulate_layer(matrix, acts, EIEConfig(pes=1, weight_bits=1, index_bits=6, rf_size=64))
    padded = simulate_layer(matrix, acts, EIEConfig(pes=1, weight_bits=1, index_bits=1, rf_size=64))
    assert padded.processed_padding > 0 and plain.processed_padding == 0
    assert padded.counts["mac"] == plain.counts["mac"] == matrix.nnz
    assert padded.counts["dest_write"] == plain.counts["dest_write"] == matrix.nnz
    assert padded.energy.dynamic_pj["mac"] == pytest.approx(plain.energy.dynamic_pj["mac"])
