"""Energy of a simulated run: counts of events x energy per event, plus clock and leakage power.

Every entry of an `EnergyTable` records its value, its source and its process node. Two tables:

* `module_power_table` (default): derived from the per-PE module power of the paper's Table II
  (45 nm TSMC, 800 MHz). Assumptions, each stated on its entry:
  - the clock network (1.874 of the 9.157 mW per PE) is charged per cycle of run time, for
    every PE (no clock gating); it is taken out of every module in proportion, the rest of a
    module's power is dynamic;
  - Table II is treated as the power with every module doing one unit of work per cycle
    (one FIFO push, one pointer read, one entry through the sparse-matrix read and one MAC,
    one accumulator read and write per cycle), so the energy of one unit is its dynamic power
    divided by 800 MHz (a run's power then follows its activity: modules idle part of the time
    draw less, while short columns read more than the reference's one line per 8 entries);
  - a 64-bit sparse-matrix line serves 8 entries at that rate, so one line read costs 8 entry
    times; a line of another width W costs that times ``E(W) / E(64)``, where E is the read
    energy of the 128 KB sparse-matrix SRAM by line width from CACTI (`CACTI_SPMAT_READ_PJ`);
  - leakage is not reported separately in the paper (it is inside the module powers): 0 mW.
* `per_op_45nm_table`: the 45 nm per-operation energies of the EIE paper's Table I (after Horowitz),
  scaled to EIE's widths where stated, the sparse-matrix line read from CACTI, with the same
  clock power.

Padding entries (v = 0) pass the pointer and sparse-matrix stages but use neither the multiplier
nor the accumulator (the arithmetic unit does not write for code 0), so the simulator counts MACs
and accumulator accesses of real entries only. `chip_power_w` is the paper's whole-chip power
(about 0.59 W for 64 PEs at 800 MHz); time x that power is the paper's way of giving a layer's
energy, reported beside the activity-based energy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from eie_model.config import EIEConfig
from eie_model.timing import lnzd_nodes

PAPER_CLOCK_MHZ = 800.0
CLOCK_NETWORK_MW = 1.874
MODULE_POWER_MW = {
    "activation_queue": 0.112,
    "pointer_read": 1.807,
    "spmat_read": 4.955,
    "arithmetic": 1.162,
    "act_rw": 1.122,
}
LNZD_UNIT_MW = 0.023
TABLE2 = "EIE paper Table II (per-PE power at 800 MHz)"
HOROWITZ = "EIE paper Table I (45 nm energy per operation, after Horowitz)"
PAPER_CHIP_POWER_W = 0.59
PAPER_PES = 64

#: Dynamic read energy per access (pJ) of the 128 KB sparse-matrix SRAM by line width (bits),
#: computed with CACTI 7.0 (HP Labs; Balasubramonian et al., "CACTI 7", ACM TACO 2017): a
#: 131072-byte single-bank scratchpad ("ram", one read-write port, no ECC, block = one line,
#: output width = the line) at 45 nm, ITRS high-performance cells and periphery, 360 K, with
#: CACTI's organization search optimizing energy x delay^2 (the other settings as in CACTI's
#: sample cache.cfg). CACTI re-optimizes the array for each width, hence the uneven steps.
CACTI_SPMAT_READ_PJ: dict[int, float] = {
    8: 12.18,
    16: 13.56,
    32: 21.22,
    64: 32.96,
    128: 40.53,
    256: 56.29,
    512: 77.80,
    1024: 111.74,
}
CACTI = "CACTI 7.0, 128 KB SRAM at 45 nm (see CACTI_SPMAT_READ_PJ)"


def sram_read_pj(width: int) -> float:
    """Read energy of the 128 KB sparse-matrix SRAM with ``width``-bit lines (pJ), interpolated
    log-log between the CACTI widths and extrapolated with the end segments' slopes."""
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise ValueError(f"width must be a positive int of bits, got {width!r}")
    widths = sorted(CACTI_SPMAT_READ_PJ)
    upper = next((k for k, w in enumerate(widths) if w >= width), len(widths) - 1)
    upper = min(max(upper, 1), len(widths) - 1)
    w0, w1 = widths[upper - 1], widths[upper]
    e0, e1 = CACTI_SPMAT_READ_PJ[w0], CACTI_SPMAT_READ_PJ[w1]
    slope = math.log(e1 / e0) / math.log(w1 / w0)
    return e0 * (width / w0) ** slope


def chip_power_w(config: EIEConfig) -> float:
    """The paper's chip power (0.59 W for 64 PEs at 800 MHz) scaled to ``config``'s PEs and clock."""
    return PAPER_CHIP_POWER_W * config.pes / PAPER_PES * config.clock_mhz / PAPER_CLOCK_MHZ


#: The events `SimResult.counts` reports, in the order they appear in breakdowns.
EVENTS = (
    "lnzd_cycle",
    "fifo_push",
    "pointer_read",
    "spmat_line_read",
    "mac",
    "dest_read",
    "dest_write",
    "source_read",
    "act_sram_read",
    "act_sram_write",
)


@dataclass(frozen=True)
class EnergyEntry:
    """One number of an energy table: ``value`` in ``unit``, where it comes from and its node."""

    value: float
    unit: str
    source: str
    node: str = "45 nm"

    def to_dict(self) -> dict:
        return {"value": self.value, "unit": self.unit, "source": self.source, "node": self.node}


@dataclass(frozen=True)
class EnergyTable:
    """Energy per event (pJ; ``spmat_line_read`` at ``reference_width`` bits, other widths scaled
    by `sram_read_pj`) and static power per PE (mW at ``clock_reference_mhz``)."""

    name: str
    per_event: dict[str, EnergyEntry]
    clock_mw_per_pe: EnergyEntry
    leakage_mw_per_pe: EnergyEntry
    reference_width: int = 64
    clock_reference_mhz: float = PAPER_CLOCK_MHZ
    notes: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        missing = [e for e in EVENTS if e not in self.per_event]
        if missing:
            raise ValueError(f"energy table {self.name!r} lacks entries for {missing}")
        sram_read_pj(self.reference_width)  # validates the width

    def event_pj(self, event: str, sram_width: int) -> float:
        value = self.per_event[event].value
        if event == "spmat_line_read":
            value *= sram_read_pj(sram_width) / sram_read_pj(self.reference_width)
        return value

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "per_event_pj": {k: e.to_dict() for k, e in self.per_event.items()},
            "clock_mw_per_pe": self.clock_mw_per_pe.to_dict(),
            "leakage_mw_per_pe": self.leakage_mw_per_pe.to_dict(),
            "reference_width": self.reference_width,
            "line_read_pj_by_width": {"source": CACTI, "pj": dict(CACTI_SPMAT_READ_PJ)},
            "notes": list(self.notes),
        }


def module_power_table(pes: int = 64) -> EnergyTable:
    """The default table, derived from Table II (see the module docstring)."""
    # The module figures add up to 9.158 mW (the published total, 9.157, is rounded).
    modules_mw = sum(MODULE_POWER_MW.values())
    dynamic = (modules_mw - CLOCK_NETWORK_MW) / modules_mw
    per_cycle_pj = {k: p * dynamic / PAPER_CLOCK_MHZ * 1e3 for k, p in MODULE_POWER_MW.items()}
    derived = "; clock share removed, / 800 MHz, one unit of work per cycle assumed"
    act_half = per_cycle_pj["act_rw"] / 2
    entries = {
        "lnzd_cycle": EnergyEntry(
            LNZD_UNIT_MW / PAPER_CLOCK_MHZ * 1e3 * lnzd_nodes(pes),
            "pJ",
            f"EIE paper: LNZD unit 0.023 mW at 800 MHz x {lnzd_nodes(pes)} units of the tree",
        ),
        "fifo_push": EnergyEntry(
            per_cycle_pj["activation_queue"], "pJ", TABLE2 + ": activation queue" + derived
        ),
        "pointer_read": EnergyEntry(
            per_cycle_pj["pointer_read"],
            "pJ",
            TABLE2 + ": PtrRead, p[j] and p[j+1] from both banks" + derived,
        ),
        "spmat_line_read": EnergyEntry(
            per_cycle_pj["spmat_read"] * 8,
            "pJ",
            TABLE2 + ": SpmatRead x 8 entries per 64-bit line" + derived,
        ),
        "mac": EnergyEntry(
            per_cycle_pj["arithmetic"], "pJ", TABLE2 + ": arithmetic unit (lookup, multiply, add)" + derived
        ),
        "dest_read": EnergyEntry(act_half, "pJ", TABLE2 + ": ActRW, half for the accumulator read" + derived),
        "dest_write": EnergyEntry(
            act_half, "pJ", TABLE2 + ": ActRW, half for the accumulator write" + derived
        ),
        "source_read": EnergyEntry(
            act_half, "pJ", TABLE2 + ": ActRW, as one register-file read (assumption)" + derived
        ),
        "act_sram_read": EnergyEntry(
            per_cycle_pj["act_rw"], "pJ", TABLE2 + ": whole ActRW per 2 KB SRAM access (assumption)" + derived
        ),
        "act_sram_write": EnergyEntry(
            per_cycle_pj["act_rw"], "pJ", TABLE2 + ": whole ActRW per 2 KB SRAM access (assumption)" + derived
        ),
    }
    return EnergyTable(
        "table2-module-power",
        entries,
        EnergyEntry(CLOCK_NETWORK_MW, "mW", TABLE2 + ": clock network, scales with the clock"),
        EnergyEntry(0.0, "mW", "not reported separately in the EIE paper (inside Table II's module powers)"),
    )


def per_op_45nm_table(pes: int = 64) -> EnergyTable:
    """The alternative table from the 45 nm per-operation energies (see the module docstring)."""
    sram_bit = 5.0 / 32  # pJ per bit of a 32 KB SRAM read
    mult16 = 3.1 * (16 / 32) ** 2  # a multiplier's energy grows with the square of its width
    add16 = 0.1 * 16 / 32
    entries = {
        "lnzd_cycle": EnergyEntry(
            LNZD_UNIT_MW / PAPER_CLOCK_MHZ * 1e3 * lnzd_nodes(pes),
            "pJ",
            f"EIE paper: LNZD unit 0.023 mW at 800 MHz x {lnzd_nodes(pes)} units (no per-op figure)",
        ),
        "fifo_push": EnergyEntry(
            32 * sram_bit,
            "pJ",
            HOROWITZ + ": one 32-bit (value, index) write priced as a 32 KB SRAM access (upper bound)",
        ),
        "pointer_read": EnergyEntry(5.0, "pJ", HOROWITZ + ": 32-bit read of a 32 KB SRAM (two 16-bit banks)"),
        "spmat_line_read": EnergyEntry(CACTI_SPMAT_READ_PJ[64], "pJ", CACTI + ": one 64-bit line read"),
        "mac": EnergyEntry(
            mult16 + add16,
            "pJ",
            HOROWITZ + ": 32-bit int multiply scaled by (16/32)^2 plus 32-bit add scaled by 16/32",
        ),
        "dest_read": EnergyEntry(
            16 * sram_bit, "pJ", HOROWITZ + ": 16 bits at the 32 KB SRAM rate (register file: upper bound)"
        ),
        "dest_write": EnergyEntry(
            16 * sram_bit, "pJ", HOROWITZ + ": 16 bits at the 32 KB SRAM rate (register file: upper bound)"
        ),
        "source_read": EnergyEntry(
            16 * sram_bit, "pJ", HOROWITZ + ": 16 bits at the 32 KB SRAM rate (register file: upper bound)"
        ),
        "act_sram_read": EnergyEntry(16 * sram_bit, "pJ", HOROWITZ + ": 16 bits at the 32 KB SRAM rate"),
        "act_sram_write": EnergyEntry(16 * sram_bit, "pJ", HOROWITZ + ": 16 bits at the 32 KB SRAM rate"),
    }
    return EnergyTable(
        "horowitz-45nm-per-op",
        entries,
        EnergyEntry(
            CLOCK_NETWORK_MW, "mW", TABLE2 + ": clock network (no per-op figure), scales with the clock"
        ),
        EnergyEntry(0.0, "mW", "not reported in the EIE paper"),
    )


ENERGY_TABLES = {"module": module_power_table, "45nm": per_op_45nm_table}


def energy_table(name: str, pes: int = 64) -> EnergyTable:
    """A table by name: ``module`` (default, Table II) or ``45nm`` (per-operation)."""
    if name not in ENERGY_TABLES:
        raise ValueError(f"unknown energy table {name!r}; choose one of {sorted(ENERGY_TABLES)}")
    return ENERGY_TABLES[name](pes)


@dataclass(frozen=True)
class EnergyReport:
    """Energy of one run in pJ per event type plus clock and leakage, and the derived figures."""

    table: str
    dynamic_pj: dict[str, float]
    clock_pj: float
    leakage_pj: float

    @property
    def total_pj(self) -> float:
        return sum(self.dynamic_pj.values()) + self.clock_pj + self.leakage_pj

    def to_dict(self) -> dict:
        return {
            "table": self.table,
            "total_uj": self.total_pj * 1e-6,
            "breakdown_uj": {
                **{k: v * 1e-6 for k, v in self.dynamic_pj.items()},
                "clock": self.clock_pj * 1e-6,
                "leakage": self.leakage_pj * 1e-6,
            },
        }


def run_energy(counts: dict[str, int], cycles: int, config: EIEConfig, table: EnergyTable) -> EnergyReport:
    """Energy of a run with event ``counts`` lasting ``cycles`` clock cycles on ``config``."""
    unknown = set(counts) - set(EVENTS)
    if unknown:
        raise ValueError(f"no energy for events {sorted(unknown)}")
    dynamic = {e: counts.get(e, 0) * table.event_pj(e, config.sram_width) for e in EVENTS}
    seconds = cycles / (config.clock_mhz * 1e6)
    clock_mw = table.clock_mw_per_pe.value * config.clock_mhz / table.clock_reference_mhz
    clock_pj = clock_mw * 1e-3 * seconds * config.pes * 1e12
    leakage_pj = table.leakage_mw_per_pe.value * 1e-3 * seconds * config.pes * 1e12
    return EnergyReport(table.name, dynamic, clock_pj, leakage_pj)
