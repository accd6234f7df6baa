"""The workloads the benchmarks, the EIE command line, the report and the tests run.

* `paper_layers`: the EIE paper's nine benchmark layers and LLM-sized layers (`LayerSpec`), and
  the seeded random layer and input EIE is simulated on for each benchmark;
* `synthetic`: random compressed layers of a given shape, density and code width;
* `eie_workloads`: EIE workloads generated from measured statistics (row and column density
  spread, active inputs on denser columns, activation density), with presets;
* `digits`: LeNet-300-100 on scikit-learn's digits, trained and compressed for real;
* `eie`: those workloads on the EIE model.

The library packages (`compress`, `dc_kernels`, `eie_model`) never import this package when they
are imported; `compress` and `eie_model` re-export a few names from here on first access.
"""

from compress._version import __version__
from workloads.digits import DEMO_CONFIG, DigitsLayer, DigitsWorkload, digits_workload
from workloads.eie import simulate_benchmark, simulate_digits
from workloads.eie_workloads import WORKLOADS, WorkloadStats, measure_workload_stats, workload_inputs
from workloads.paper_layers import (
    BENCHMARKS,
    LLM_LAYERS,
    PAPER_LAYERS,
    LayerSpec,
    benchmark_activations,
    benchmark_inputs,
    get_layer,
)
from workloads.synthetic import random_compressed_matrix

__all__ = [
    "BENCHMARKS",
    "DEMO_CONFIG",
    "LLM_LAYERS",
    "PAPER_LAYERS",
    "WORKLOADS",
    "DigitsLayer",
    "DigitsWorkload",
    "LayerSpec",
    "WorkloadStats",
    "__version__",
    "benchmark_activations",
    "benchmark_inputs",
    "digits_workload",
    "get_layer",
    "measure_workload_stats",
    "random_compressed_matrix",
    "simulate_benchmark",
    "simulate_digits",
    "workload_inputs",
]
