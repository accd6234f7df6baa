"""The digits network in the report (`dcomp run`): LeNet-300-100 on scikit-learn's digits.

Two parts, both real trained networks rather than random layers:

* compression: `dcomp demo` (`perf.demo` on `workloads.digits.demo`: train, prune with
  retraining, share weights, fine-tune centroids, Huffman-code) writes ``demo.json``; the report
  shows its accuracy and per-layer sizes;
* speed: `workloads.digits_workload` trains the same network at a shorter schedule with EIE's
  4-bit codebooks (15 non-zero centroids) and takes one test image's activations; each layer runs
  on the CPU (dense vs `CompressedLinear`, batch 1) and on EIE with those real activations.

Needs scikit-learn (the ``examples`` extra).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from eie_model import EIEConfig, simulate_layer
from perf.demo import main as demo_main
from perf.harness import ProgressFn, write_csv
from perf.reporting.cpu import CpuConfig, measure_layer
from perf.reporting.tables import Table
from workloads.digits import digits_workload


@dataclass(frozen=True)
class DigitsResults:
    """The demo's JSON result and the per-layer CPU and EIE rows of the EIE-ready network."""

    demo: dict
    workload_accuracy: float
    image: int
    cpu_rows: list[dict]
    eie_rows: list[dict]

    def summary(self) -> list[str]:
        d = self.demo
        lines = [
            f"Compressed by `dcomp demo` ({d['seeds']} seed(s)): test accuracy {d['dense_accuracy']:.2f}% "
            f"dense, {d['compressed_accuracy']:.2f}% compressed; {d['compression_rate_pq']:.1f}x smaller "
            f"than dense float32 pruned + quantized, {d['compression_rate_pqh']:.1f}x with Huffman coding.",
            f"Speed (one test image, #{self.image}): the network retrained at a short schedule with EIE's "
            f"4-bit codebooks ({self.workload_accuracy:.2f}% test accuracy), its real activations fed to "
            "EIE.",
        ]
        dense = sum(r["dense_us"] for r in self.cpu_rows)
        compressed = sum(r["compressed_us"] for r in self.cpu_rows)
        eie = sum(r["time_us"] for r in self.eie_rows)
        lines.append(
            f"Whole network, batch 1: CPU dense {dense:.0f} us, CPU compressed {compressed:.0f} us, EIE "
            f"{eie:.2f} us (layers this small are dominated by per-call overheads on the CPU)."
        )
        return lines

    def tables(self) -> list[Table]:
        layers = pd.DataFrame(self.demo["layers"]).set_index("layer")
        sizes = pd.DataFrame(
            {
                "weights": layers["weights"],
                "density": layers["density"],
                "code bits": layers["bits"],
                "index bits": layers["index_bit_width"],
                "dense KB": layers["dense_bytes"] / 1e3,
                "P+Q KB": layers["bytes_pq"] / 1e3,
                "P+Q+H KB": layers["bytes_pqh"] / 1e3,
                "P+Q x": 1 / layers["rate_pq"],
                "P+Q+H x": 1 / layers["rate_pqh"],
            }
        )
        cpu = pd.DataFrame(self.cpu_rows).set_index("layer")
        eie = pd.DataFrame(self.eie_rows).set_index("layer")
        speed = pd.DataFrame(
            {
                "activation density": eie["activation_density"],
                "CPU dense us": cpu["dense_us"],
                "CPU compressed us": cpu["compressed_us"],
                "EIE us": eie["time_us"],
                "EIE load efficiency": eie["load_efficiency"],
                "EIE useful efficiency": eie["useful_efficiency"],
                "EIE energy uJ": eie["energy_uj"],
                "EIE speedup over CPU dense": cpu["dense_us"] / eie["time_us"],
            }
        )
        return [
            Table(
                "digits_sizes",
                "Digits network: sizes after Deep Compression (dcomp demo)",
                sizes,
                "Mean over the demo's seeds; the exact encoded bits of compress.size_table.",
            ),
            Table(
                "digits_speed",
                "Digits network: batch 1 on CPU and EIE (real activations)",
                speed,
                "activation density: share of non-zero inputs of each layer for the test image (EIE skips "
                "the zeros).",
            ),
        ]

    def write_csvs(self, out: Path, machine: dict[str, str]) -> list[Path]:
        return [
            write_csv(out / "digits_cpu.csv", self.cpu_rows, machine),
            write_csv(out / "digits_eie.csv", self.eie_rows, machine),
        ]


def collect_digits(
    out: Path,
    *,
    seeds: int = 1,
    epochs_scale: float = 1.0,
    cpu: CpuConfig | None = None,
    eie: EIEConfig | None = None,
    image: int = 0,
    progress: ProgressFn | None = None,
) -> DigitsResults:
    """Run `dcomp demo` into ``out`` (it prints its own report), then time and simulate the
    EIE-ready network layer by layer."""
    say = progress or (lambda message: None)
    cpu = CpuConfig(batches=(1,)) if cpu is None else cpu
    eie = EIEConfig() if eie is None else eie
    code = demo_main(["--seeds", str(seeds), "--out", str(out), "--epochs-scale", str(epochs_scale)])
    if code != 0:
        raise RuntimeError(f"dcomp demo failed with exit code {code}")
    demo = json.loads((out / "demo.json").read_text())
    say(
        f"digits: compressed {demo['compression_rate_pqh']:.1f}x (P+Q+H) at "
        f"{demo['compressed_accuracy']:.2f}% test accuracy (dense {demo['dense_accuracy']:.2f}%)"
    )
    workload = digits_workload(eie.weight_bits, seed=0, image=image)
    say(f"digits: EIE-ready network trained ({workload.accuracy:.2f}% test accuracy)")
    cpu_rows, eie_rows = [], []
    for layer in workload.layers:
        cpu_rows += measure_layer(layer.name, layer.matrix, cpu, batches=(1,))
        result = simulate_layer(layer.matrix, layer.activations, eie, name=layer.name)
        eie_rows.append(
            {
                "layer": layer.name,
                "inputs": layer.matrix.in_features,
                "outputs": layer.matrix.out_features,
                "weight_density": layer.matrix.density,
                "activation_density": float(np.count_nonzero(layer.activations)) / layer.activations.size,
                "cycles": result.cycles,
                "time_us": result.time_us,
                "load_efficiency": result.load_efficiency,
                "useful_efficiency": result.useful_efficiency,
                "energy_uj": result.energy_uj,
                "power_mw": result.power_mw,
                "output_max_abs_error": result.output.max_abs_error,
            }
        )
    say(f"digits: timed on the CPU and simulated on EIE ({len(eie_rows)} layers)")
    return DigitsResults(demo, workload.accuracy, image, cpu_rows, eie_rows)
