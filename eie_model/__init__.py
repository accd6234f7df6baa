"""A cycle-level simulator and energy model of the EIE accelerator.

``BENCHMARKS``, ``benchmark_inputs``, ``simulate_benchmark``, ``digits_workload`` and
``simulate_digits`` live in the `workloads` package (`workloads.paper_layers`, `workloads.eie`,
`workloads.digits`); they stay importable from here and are imported from there on first access.
"""

from compress._lazy import lazy_exports
from compress._version import __version__
from eie_model.area import chip_area_mm2, pe_area_um2
from eie_model.codebook import fit_codebook
from eie_model.config import SEMANTICS, EIEConfig
from eie_model.dump import EIEDump, dump_arrays, read_eie_dump, write_eie_dump
from eie_model.dump_simulation import dump_label, simulate_dump
from eie_model.encoding import CodebookTooLargeError, EIELayer, decode_eie, encode_eie
from eie_model.energy import (
    EnergyEntry,
    EnergyTable,
    chip_power_w,
    energy_table,
    module_power_table,
    per_op_45nm_table,
    sram_read_pj,
)
from eie_model.fixed_point import FixedPointFormat
from eie_model.simulator import SimResult, simulate_encoded, simulate_layer
from eie_model.sweep import SWEEPS, plot_sweep, run_sweep

#: Workload names re-exported from `workloads` (see the module docstring).
_WORKLOAD_NAMES = {
    "BENCHMARKS": "workloads.paper_layers",
    "benchmark_inputs": "workloads.paper_layers",
    "digits_workload": "workloads.digits",
    "simulate_benchmark": "workloads.eie",
    "simulate_digits": "workloads.eie",
}
__getattr__, __dir__ = lazy_exports(__name__, _WORKLOAD_NAMES, globals())

__all__ = [
    "BENCHMARKS",
    "SEMANTICS",
    "SWEEPS",
    "CodebookTooLargeError",
    "EIEConfig",
    "EIEDump",
    "EIELayer",
    "EnergyEntry",
    "EnergyTable",
    "FixedPointFormat",
    "SimResult",
    "__version__",
    "benchmark_inputs",
    "chip_area_mm2",
    "chip_power_w",
    "decode_eie",
    "digits_workload",
    "dump_arrays",
    "dump_label",
    "encode_eie",
    "energy_table",
    "fit_codebook",
    "module_power_table",
    "pe_area_um2",
    "per_op_45nm_table",
    "plot_sweep",
    "read_eie_dump",
    "run_sweep",
    "simulate_benchmark",
    "simulate_digits",
    "simulate_dump",
    "simulate_encoded",
    "simulate_layer",
    "sram_read_pj",
    "write_eie_dump",
]
