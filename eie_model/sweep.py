"""Design-space sweeps of EIE: one parameter varied over a set of layers, to CSV and plots.

The caller names the layers and passes the function that gives each one's matrix and input
activations (e.g. `workloads.benchmark_inputs` for the paper's benchmark layers, or a lookup into
layers it holds). A layer is fetched once per sweep, and only one is held at a time; an encoding
is reused by every design point with the same PEs, bit widths and passes, so a FIFO-depth or
SRAM-width sweep encodes each layer once, and the layer's fixed-point output (the same for every
design point) is computed once.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from compress.matrix import CompressedMatrix
from eie_model.area import chip_area_mm2
from eie_model.arithmetic import LayerOutput, compute_output
from eie_model.config import EIEConfig
from eie_model.encoding import encode_eie
from eie_model.energy import EnergyTable
from eie_model.simulator import PreparedLayer, prepare, simulate_prepared

#: Sweep name -> (EIEConfig field, default values: the ranges of the paper's design-space study).
SWEEPS: dict[str, tuple[str, tuple[int, ...]]] = {
    "fifo": ("fifo_depth", (1, 2, 4, 8, 16, 32, 64, 128, 256)),
    "pes": ("pes", (1, 2, 4, 8, 16, 32, 64, 128, 256)),
    "sram-width": ("sram_width", (16, 32, 64, 128, 256, 512)),
    "index-bits": ("index_bits", (2, 3, 4, 5, 6, 7, 8)),
}
#: Each swept EIEConfig field in words, for axis labels.
PARAMETER_WORDS = {
    "fifo_depth": "FIFO depth (activation queue entries per PE)",
    "pes": "number of PEs",
    "sram_width": "sparse-matrix SRAM width (bits)",
    "index_bits": "relative index width (bits)",
}

COLUMNS = (
    "benchmark",
    "parameter",
    "value",
    "cycles",
    "time_us",
    "ideal_cycles",
    "theoretical_us",
    "load_efficiency",
    "useful_efficiency",
    "useful_multiplies",
    "entries",
    "padding_entries",
    "spmat_line_reads",
    "spmat_read_uj",
    "energy_uj",
    "power_mw",
    "energy_at_chip_power_uj",
    "chip_area_mm2",
    "semantics",
)


#: ``layer_inputs(name, weight_bits)``: the layer called ``name`` and its input activations.
LayerInputs = Callable[[str, int], tuple[CompressedMatrix, np.ndarray]]


def run_sweep(
    sweep: str,
    layers: Sequence[str],
    layer_inputs: LayerInputs,
    values: Sequence[int] | None = None,
    base: EIEConfig | None = None,
    *,
    energy_table: EnergyTable | None = None,
    progress: Callable[[str], None] | None = None,
) -> pd.DataFrame:
    """Simulate every layer at every value of one parameter; one row per design point.

    ``layer_inputs(name, base.weight_bits)`` gives each layer of ``layers`` (the ``benchmark``
    column) and its input; ``values`` default to the sweep's full range in `SWEEPS` (FIFO depths
    from 2 with the paper-simulator semantics); ``energy_table`` defaults to `module_power_table`.
    """
    if sweep not in SWEEPS:
        raise ValueError(f"unknown sweep {sweep!r}; choose one of {sorted(SWEEPS)}")
    field, defaults = SWEEPS[sweep]
    base = EIEConfig() if base is None else base
    if values is None:
        # The authors' queue of size 1 holds nothing: their semantics start the range at 2.
        values = [v for v in defaults if not (field == "fifo_depth" and base.single_pass and v < 2)]
    values = tuple(values)
    if not values:
        raise ValueError("a sweep needs at least one value")
    configs = [dataclasses.replace(base, **{field: int(v)}) for v in values]  # validates every value
    rows = []
    if not layers:
        raise ValueError("a sweep needs at least one layer")
    total = len(layers) * len(configs)
    done = 0
    for name in layers:
        matrix, activations = layer_inputs(name, base.weight_bits)
        prepared: dict[tuple[int, int, int, int | None], PreparedLayer] = {}
        outputs: dict[int, LayerOutput] = {}
        for value, config in zip(values, configs):
            started = time.perf_counter()
            key = (config.pes, config.weight_bits, config.index_bits, config.batch_rows(matrix.shape[0]))
            if key not in prepared:
                prepared[key] = prepare(encode_eie(matrix, *key), activations)
            run = prepared[key]
            if config.act_bits not in outputs:
                outputs[config.act_bits] = compute_output(run.layer, run.activations, bits=config.act_bits)
            result = simulate_prepared(
                run, config, outputs[config.act_bits], name=name, energy_table=energy_table, started=started
            )
            rows.append(
                {
                    "benchmark": name,
                    "parameter": field,
                    "value": int(value),
                    "cycles": result.cycles,
                    "time_us": result.time_us,
                    "ideal_cycles": result.ideal_cycles,
                    "theoretical_us": result.theoretical_us,
                    "load_efficiency": result.load_efficiency,
                    "useful_efficiency": result.useful_efficiency,
                    "useful_multiplies": result.useful_multiplies,
                    "entries": result.entries,
                    "padding_entries": result.padding_entries,
                    "spmat_line_reads": result.counts["spmat_line_read"],
                    "spmat_read_uj": result.energy.dynamic_pj["spmat_line_read"] * 1e-6,
                    "energy_uj": result.energy_uj,
                    "power_mw": result.power_mw,
                    "energy_at_chip_power_uj": result.energy_at_chip_power_uj,
                    "chip_area_mm2": chip_area_mm2(config),
                    "semantics": config.semantics,
                }
            )
            done += 1
            if progress is not None:
                progress(
                    f"[{done}/{total}] {name} {field}={value}: {result.cycles} cycles "
                    f"({result.sim_seconds:.2f} s)"
                )
    return pd.DataFrame(rows, columns=list(COLUMNS))


def plot_sweep(table: pd.DataFrame, path: str | Path) -> Path:
    """Load and useful efficiency, time and energy against the swept value, one line per
    benchmark (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if table.empty:
        raise ValueError("the sweep table is empty")
    field = str(table["parameter"].iloc[0])
    fig, axes = plt.subplots(1, 4, figsize=(19, 4.2))
    panels = (
        ("load_efficiency", "load efficiency (ideal / actual cycles)"),
        ("useful_efficiency", "useful efficiency (useful MACs / (cycles x PEs))"),
        ("time_us", "time per layer (us)"),
        ("energy_uj", "energy per layer (uJ)"),
    )
    for ax, (column, label) in zip(axes, panels):
        for name, group in table.groupby("benchmark", sort=False):
            ax.plot(group["value"], group[column], marker="o", label=name)
        ax.set_xscale("log", base=2)
        ax.set_xlabel(PARAMETER_WORDS.get(field, field))
        ax.set_ylabel(label)
        if not column.endswith("efficiency"):
            ax.set_yscale("log")
        ax.grid(True, alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"EIE model: sweep of the {PARAMETER_WORDS.get(field, field)} (other parameters fixed)")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
