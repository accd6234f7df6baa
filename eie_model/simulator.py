"""Simulate one layer on EIE: cycles, per-PE accounting, memory activity, output and energy.

`simulate_layer` encodes a canonical layer for the configuration and runs it;
`simulate_encoded` runs an already encoded layer (e.g. one read from the authors' dump);
`prepare` and `simulate_prepared` let a sweep share what every design point of one encoding
has in common. Timing comes from `eie_model.timing`, activity from `eie_model.activity`, the
output from `eie_model.arithmetic` and the energy from `eie_model.energy`; their docstrings
state every modelling assumption. Nothing is fitted to published timings.

Batches (hardware semantics, a PE owning more output rows than its destination register file
holds): each batch is a full pass (every non-zero activation broadcast again, the batch's own
pointers), after which the PEs write the batch's accumulators to the activation SRAM, one row
per cycle in parallel, before the next pass starts. A layer of one batch leaves its result in
the destination register file (it becomes the next layer's source), so nothing is written back.
The paper-simulator semantics (`EIEConfig.semantics`) always make one pass. Input vectors
longer than the source register files (``pes * rf_size``) are read by the LNZD from the
activation SRAM instead, which costs energy but no cycles.

Two efficiencies: ``load_efficiency`` = ideal cycles (every processed entry, padding included,
spread evenly over the PEs at one per cycle) / cycles, how well the work is balanced; and
``useful_efficiency`` = useful multiplies (real entries of broadcast columns) / (cycles x PEs),
the "efficiency" the EIE authors' simulator prints and their FIFO-depth and PE sweeps plot.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

import numpy as np

from compress import CompressedMatrix
from eie_model.activity import bypasses, column_geometry, entry_prefix_sums, line_reads
from eie_model.area import chip_area_mm2, pe_area_um2
from eie_model.arithmetic import LayerOutput, compute_output
from eie_model.codebook import fit_codebook
from eie_model.config import EIEConfig
from eie_model.encoding import EIELayer, check_layer, encode_eie
from eie_model.energy import EnergyReport, EnergyTable, chip_power_w, module_power_table, run_energy
from eie_model.fixed_point import FixedPointFormat
from eie_model.timing import lnzd_levels, plan_broadcast, schedule_pass


@dataclass(frozen=True, eq=False)
class SimResult:
    """Everything one simulated layer produced; `to_dict` gives the JSON form."""

    name: str
    config: EIEConfig
    shape: tuple[int, int]
    batches: int
    broadcasts: int
    cycles: int
    ideal_cycles: int
    writeback_cycles: int
    stall_cycles: int
    entries: int
    padding_entries: int
    processed_entries: int
    processed_padding: int
    bypasses: int
    empty_column_slots: int
    pe_busy: np.ndarray
    pe_stalled: np.ndarray
    pe_starved: np.ndarray
    pe_processed: np.ndarray
    counts: dict[str, int]
    energy: EnergyReport
    output: LayerOutput
    memory: dict
    sim_seconds: float

    @property
    def time_us(self) -> float:
        return self.cycles / self.config.clock_mhz

    @property
    def theoretical_us(self) -> float:
        return self.ideal_cycles / self.config.clock_mhz

    @property
    def load_efficiency(self) -> float:
        """Ideal cycles (processed entries over the PEs) over actual cycles."""
        return self.ideal_cycles / self.cycles if self.cycles else 1.0

    @property
    def useful_multiplies(self) -> int:
        """Multiplies with a real weight: processed entries less padding."""
        return self.processed_entries - self.processed_padding

    @property
    def useful_efficiency(self) -> float:
        """Useful multiplies over cycles x PEs (the EIE authors' "efficiency")."""
        return self.useful_multiplies / (self.cycles * self.config.pes) if self.cycles else 1.0

    @property
    def chip_power_w(self) -> float:
        """The paper's chip power scaled to this design (`eie_model.energy.chip_power_w`)."""
        return chip_power_w(self.config)

    @property
    def energy_at_chip_power_uj(self) -> float:
        """Time x the paper's chip power: the paper's way of giving a layer's energy."""
        return self.time_us * self.chip_power_w

    @property
    def energy_uj(self) -> float:
        return self.energy.total_pj * 1e-6

    @property
    def power_mw(self) -> float:
        return self.energy_uj / self.time_us * 1e3 if self.cycles else 0.0

    @property
    def gops(self) -> float:
        """Useful operations per second (2 per multiply-add with a kept weight), in GOP/s."""
        return 2 * self.useful_multiplies / self.time_us * 1e-3 if self.cycles else 0.0

    @property
    def gops_dense_equivalent(self) -> float:
        """2 x in x out operations of the dense layer per second, in GOP/s."""
        return 2 * self.shape[0] * self.shape[1] / self.time_us * 1e-3 if self.cycles else 0.0

    @property
    def output_checksum(self) -> str:
        """SHA-256 (first 16 hex digits) of the output as little-endian int32 codes."""
        return hashlib.sha256(self.output.codes.astype("<i4").tobytes()).hexdigest()[:16]

    def to_dict(self, per_pe: bool = False) -> dict:
        seconds = self.time_us * 1e-6
        joules = self.energy_uj * 1e-6
        pe = {
            name: {"min": int(a.min()), "mean": float(a.mean()), "max": int(a.max())}
            for name, a in (
                ("busy", self.pe_busy),
                ("stalled", self.pe_stalled),
                ("starved", self.pe_starved),
                ("processed_entries", self.pe_processed),
            )
        }
        out = {
            "layer": self.name,
            "shape": list(self.shape),
            "cycles": self.cycles,
            "time_us": self.time_us,
            "ideal_cycles": self.ideal_cycles,
            "theoretical_us": self.theoretical_us,
            "load_efficiency": self.load_efficiency,
            "useful_efficiency": self.useful_efficiency,
            "semantics": self.config.semantics,
            "entries": self.entries,
            "padding_entries": self.padding_entries,
            "processed_entries": self.processed_entries,
            "processed_padding": self.processed_padding,
            "broadcasts": self.broadcasts,
            "batches": self.batches,
            "writeback_cycles": self.writeback_cycles,
            "stall_cycles": self.stall_cycles,
            "useful_multiplies": self.useful_multiplies,
            "bypasses": self.bypasses,
            "empty_column_slots": self.empty_column_slots,
            "energy_uj": self.energy_uj,
            "power_mw": self.power_mw,
            "chip_power_w": self.chip_power_w,
            "energy_at_chip_power_uj": self.energy_at_chip_power_uj,
            "gops": self.gops,
            "gops_dense_equivalent": self.gops_dense_equivalent,
            "frames_per_s": 1.0 / seconds if seconds else None,
            "frames_per_j": 1.0 / joules if joules else None,
            "output_checksum": self.output_checksum,
            "output_sum": float(self.output.values.sum()),
            "output_max_abs_error": self.output.max_abs_error,
            "output_max_abs": float(np.abs(self.output.reference).max(initial=0.0)),
            "fixed_point": self.output.fmt.to_dict(),
            "counts": dict(self.counts),
            "energy": self.energy.to_dict(),
            "pe_area_um2": pe_area_um2(self.config)["total"],
            "chip_area_mm2": chip_area_mm2(self.config),
            "memory": self.memory,
            "per_pe": pe,
            "config": self.config.to_dict(),
            "sim_seconds": self.sim_seconds,
        }
        if per_pe:
            out["per_pe_cycles"] = {
                "busy": self.pe_busy.tolist(),
                "stalled": self.pe_stalled.tolist(),
                "starved": self.pe_starved.tolist(),
                "processed_entries": self.pe_processed.tolist(),
            }
        return out


def simulate_layer(
    matrix: CompressedMatrix,
    activations,
    config: EIEConfig | None = None,
    *,
    name: str = "layer",
    fmt: FixedPointFormat | None = None,
    energy_table: EnergyTable | None = None,
    fit: bool = False,
) -> SimResult:
    """Encode ``matrix`` for ``config`` (default: the paper's design) and simulate ``W @ activations``.

    ``fit=True`` re-clusters a codebook too large for the weight index (`fit_codebook`);
    otherwise such a layer raises `CodebookTooLargeError`. ``fmt`` fixes the fixed-point
    formats (default: chosen for this layer and input).
    """
    config = EIEConfig() if config is None else config
    if fit:
        matrix = fit_codebook(matrix, config.max_centroids)
    layer = encode_eie(
        matrix, config.pes, config.weight_bits, config.index_bits, config.batch_rows(matrix.shape[0])
    )
    return simulate_encoded(layer, activations, config, name=name, fmt=fmt, energy_table=energy_table)


def simulate_encoded(
    layer: EIELayer,
    activations,
    config: EIEConfig | None = None,
    *,
    name: str = "layer",
    fmt: FixedPointFormat | None = None,
    energy_table: EnergyTable | None = None,
) -> SimResult:
    """Simulate an encoded layer; ``config`` must match its PEs and bit widths, and its batches
    must fit the register file (default: the paper's design with the layer's PEs, bit widths
    and a register file holding its batches)."""
    started = time.perf_counter()
    if config is None:
        rf_size = max(EIEConfig().rf_size, min(layer.batch_rows, layer.rows_per_pe))
        config = EIEConfig(
            pes=layer.pes, weight_bits=layer.weight_bits, index_bits=layer.index_bits, rf_size=rf_size
        )
    run = prepare(layer, activations)
    output = compute_output(layer, run.activations, fmt, config.act_bits)
    return simulate_prepared(run, config, output, name=name, energy_table=energy_table, started=started)


@dataclass(frozen=True, eq=False)
class PreparedLayer:
    """An encoded layer with a checked input vector and the per-entry prefix sums every design
    point of this encoding shares (`prepare`)."""

    layer: EIELayer
    activations: np.ndarray
    prefix: tuple[np.ndarray, np.ndarray]


def prepare(layer: EIELayer, activations) -> PreparedLayer:
    """Check an encoded layer and its input vector once for many `simulate_prepared` runs."""
    check_layer(layer)
    acts = _check_activations(activations, layer.in_features)
    return PreparedLayer(layer, acts, entry_prefix_sums(layer))


def simulate_prepared(
    run: PreparedLayer,
    config: EIEConfig,
    output: LayerOutput,
    *,
    name: str = "layer",
    energy_table: EnergyTable | None = None,
    started: float | None = None,
) -> SimResult:
    """Simulate a prepared layer on ``config`` with its ``output`` (`compute_output`, which depends
    only on the matrix, the input and ``config.act_bits``, so one output serves every design
    point of a sweep); ``started`` is the `time.perf_counter` the simulation time counts from."""
    started = time.perf_counter() if started is None else started
    layer = run.layer
    _check_match(layer, config)
    if output.codes.shape != (layer.out_features,):
        raise ValueError(f"output has shape {output.codes.shape} for a layer of {layer.out_features} rows")
    table = module_power_table(config.pes) if energy_table is None else energy_table

    pes = config.pes
    plan = plan_broadcast(run.activations != 0, pes)
    per_pass_reads = layer.in_features
    in_rf = layer.in_features <= pes * config.rf_size
    totals = dict.fromkeys(("cycles", "stall", "lines", "bypass", "padding", "empty", "writeback"), 0)
    busy = np.zeros(pes, dtype=np.int64)
    stalled = np.zeros(pes, dtype=np.int64)
    starved = np.zeros(pes, dtype=np.int64)
    processed = np.zeros(pes, dtype=np.int64)
    for batch in range(layer.batches):
        geometry = column_geometry(layer, batch, plan.columns, run.prefix)
        sched = schedule_pass(
            geometry.entries, plan, config.queue_capacity, lnzd_levels(pes), config.arith_stages
        )
        writeback = 0
        if layer.batches > 1:
            writeback = min(layer.batch_rows, layer.rows_per_pe - batch * layer.batch_rows)
        totals["cycles"] += sched.cycles + writeback
        totals["writeback"] += writeback
        totals["stall"] += int((sched.b - sched.ready).sum())
        totals["lines"] += int(line_reads(geometry, config.entries_per_line).sum())
        totals["bypass"] += int(bypasses(geometry, sched.s).sum())
        totals["padding"] += int(geometry.padding.sum())
        totals["empty"] += int((geometry.entries == 0).sum())
        busy += sched.busy
        stalled += sched.stalled
        starved += sched.starved
        processed += geometry.entries.sum(axis=0)
    processed_total = int(processed.sum())
    useful = processed_total - totals["padding"]
    m = plan.columns.size
    counts = {
        "lnzd_cycle": (m + int(plan.gaps.sum()) + plan.tail_groups) * layer.batches,
        "fifo_push": m * pes * layer.batches,
        "pointer_read": m * pes * layer.batches,
        "spmat_line_read": totals["lines"],
        "mac": useful,
        "dest_read": useful - totals["bypass"],
        "dest_write": useful,
        "source_read": per_pass_reads * layer.batches if in_rf else 0,
        "act_sram_read": 0 if in_rf else per_pass_reads * layer.batches,
        "act_sram_write": layer.out_features if layer.batches > 1 else 0,
    }
    energy = run_energy(counts, totals["cycles"], config, table)
    return SimResult(
        name=name,
        config=config,
        shape=layer.shape,
        batches=layer.batches,
        broadcasts=m,
        cycles=totals["cycles"],
        ideal_cycles=-(-processed_total // pes),
        writeback_cycles=totals["writeback"],
        stall_cycles=totals["stall"],
        entries=layer.entries,
        padding_entries=layer.padding_entries,
        processed_entries=processed_total,
        processed_padding=totals["padding"],
        bypasses=totals["bypass"],
        empty_column_slots=totals["empty"],
        pe_busy=busy,
        pe_stalled=stalled,
        pe_starved=starved,
        pe_processed=processed,
        counts=counts,
        energy=energy,
        output=output,
        memory=memory_requirements(layer, config),
        sim_seconds=time.perf_counter() - started,
    )


def memory_requirements(layer: EIELayer, config: EIEConfig) -> dict:
    """Per-PE storage the layer needs against the configured memories (reported, not enforced:
    the paper's own VGG-6 needs more pointer storage than 32 KB)."""
    inputs_per_pe = -(-layer.in_features // config.pes)
    spmat_bytes = int(layer.pe_entries().max()) * config.entry_bits / 8
    pointer_bytes = layer.batches * (layer.in_features + 1) * config.pointer_bits / 8
    act_words = (inputs_per_pe if inputs_per_pe > config.rf_size else 0) + (
        layer.rows_per_pe if layer.batches > 1 else 0
    )
    act_bytes = act_words * config.act_bits / 8
    largest_pointer = int(layer.pe_entries().max())
    return {
        "spmat_bytes_per_pe": spmat_bytes,
        "pointer_bytes_per_pe": pointer_bytes,
        "act_sram_bytes_per_pe": act_bytes,
        "fits_spmat_sram": spmat_bytes <= config.spmat_sram_kb * 1024,
        "fits_pointer_sram": pointer_bytes <= config.ptr_sram_kb * 1024,
        "fits_act_sram": act_bytes <= config.act_sram_kb * 1024,
        "pointers_fit_width": largest_pointer < 1 << config.pointer_bits,
    }


def _check_match(layer: EIELayer, config: EIEConfig) -> None:
    for field in ("pes", "weight_bits", "index_bits"):
        if getattr(layer, field) != getattr(config, field):
            raise ValueError(
                f"the layer was encoded with {field}={getattr(layer, field)} but the config has "
                f"{field}={getattr(config, field)}; encode it for this config"
            )
    if config.single_pass:
        if layer.batches > 1:
            raise ValueError(
                f"semantics='paper-simulator' makes one pass but the layer was encoded in {layer.batches} "
                "batches; encode it with batch_rows=None"
            )
        return
    batch_rows = min(layer.batch_rows, layer.rows_per_pe)
    if batch_rows > config.rf_size:
        raise ValueError(
            f"the layer computes {batch_rows} rows per PE in one pass but the register file holds "
            f"rf_size={config.rf_size}; encode it with batch_rows={config.rf_size}"
        )


def _check_activations(activations, in_features: int) -> np.ndarray:
    if hasattr(activations, "detach"):
        activations = activations.detach().cpu().numpy()
    acts = np.asarray(activations)
    if acts.ndim != 1 or acts.size != in_features:
        raise ValueError(f"activations must be a vector of {in_features} values, got shape {acts.shape}")
    if not np.issubdtype(acts.dtype, np.number) or np.iscomplexobj(acts):
        raise TypeError(f"activations must be real numbers, got dtype {acts.dtype}")
    acts = acts.astype(np.float64)
    if not np.all(np.isfinite(acts)):
        raise ValueError("activations hold NaN or inf")
    return acts
