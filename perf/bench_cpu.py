"""CPU benchmark of CompressedLinear against nn.Linear on the paper's FC layers, side by side.

    python -m perf.bench_cpu                 # the paper's FC shapes, batch 1 and 64
    python -m perf.bench_cpu --sweep         # batch sweep: where the sparse kernels stop paying
    python -m perf.bench_cpu --forms         # both forms on MiniLM- and LLM-shaped layers
    python -m perf.bench_cpu --sweep-codes   # batch sweep of the dense-codes form

Default run: float32, 5-bit codes, layers Alex-6 (9216->4096, 9%), Alex-7 (4096->4096, 9%),
VGG-6 (25088->4096, 4%) and Alex-8 (4096->1000, 25%); batch 1 and 64; 1 thread and all of
torch's threads. Each row times nn.Linear on the decoded weights, CompressedLinear with its
default backend (``auto``: the compiled sparse kernels, or decode + dense GEMM past the measured
crossover) and torch's sparse CSR matmul on float32 values, interleaved over rounds so that all
three see the same machine load; medians over all calls, and ``speedup_best``: the ratio of each
one's fastest round (its median there), which a machine whose speed drifts from round to round
(shared cores, a last-level cache shared with other tenants) leaves steadier. Targets: >= 3x
faster than nn.Linear at batch 1 on the first three layers, module memory <= 1/8 of the dense
layer's on the 9% layers.

``--sweep`` times the two CPU paths (sparse kernels, decode + GEMM) and nn.Linear on a
4096x4096 layer at several densities over batch 1..256, and writes a CSV and a plot; the
crossover it shows sets `dc_kernels.cpu.launch.dense_from` (per vector width).

``--forms`` times nn.Linear against a layer forced into each form (``sparse``, ``dense_codes``)
and the ``auto`` choice, on MiniLM-shaped (384x384, 384->1536, 1536->384) and LLM-shaped
(4096x4096, 4096->14336) layers at density 0.5 and 0.8 with 4-bit codes, batch 1 and 32, and
checks the targets: resident bytes <= 1/6 of float32; batch 1 >= 1.5x dense on the LLM shapes and
>= 1.0x on the MiniLM shapes; batch 32 >= 0.9x (on the medians; ``auto_speedup_best`` gives the
``auto`` layer's ratio of fastest rounds beside them).

``--stacks`` runs the paper's FC stacks as a model runs them (AlexNet fc6 -> fc7 -> fc8, VGG-16
fc6 -> fc7 -> fc8, ReLU between), dense and compressed in alternating rounds, and times every
layer inside its stack: there a layer's weights are not left in the cache by the call before, as
they are when one layer is called over and over (the default run), so a dense weight that fits
the last-level cache (Alex-8's and VGG-8's 16 MB) comes from memory, as it does in a model.

``--sweep-codes`` times the dense-codes form's two paths (the lookup kernels, decode + GEMM, each
forced through `dc_kernels.dense_codes.cpu.codes_linear_cpu`), its dispatch (a
`CompressedLinear` in the form, as users call it) and nn.Linear over batch 1..2048 on layers of
``--codes-shapes`` (384x384, 1536x384, 384x1536 and 4096x4096 by default, density 0.8); the
crossovers set `dc_kernels.dense_codes.cpu.kernel_max_batch` (row kernel below 24 rows, tile
kernel from there).

Timings depend on the machine's load: the conditions (CPU, threads, load average before and
after, SIMD path of the kernels) are printed and written with every CSV row.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from dc_kernels.cpu import build as cpu_build
from dc_kernels.cpu import launch as cpu_launch
from dc_kernels.cpu import native as cpu_native
from dc_kernels.cpu.layout import SparseLayout
from dc_kernels.dense_codes import cpu as codes_cpu
from dc_kernels.dense_codes.layout import DenseCodesLayout
from dc_kernels.linear import CompressedLinear
from perf.harness import REPO_ROOT, doc_summary, machine_info, print_table, time_interleaved, write_csv
from workloads.paper_layers import get_layer
from workloads.synthetic import random_compressed_matrix

DEFAULT_LAYERS = ("alex6", "alex7", "vgg6", "alex8")
STACKS = {"alexnet": ("alex6", "alex7", "alex8"), "vgg16": ("vgg6", "vgg7", "vgg8")}
NEVER_SLOWER = 0.9  # the dispatch's goal: never slower than nn.Linear by more than 10%
SPEED_TARGET = 3.0  # x faster than nn.Linear at batch 1 (alex6, alex7, vgg6)
MEMORY_TARGET = 1 / 8  # module bytes / dense bytes on the 9% layers
SWEEP_DENSITIES = (0.04, 0.09, 0.25, 0.4, 0.6)
SWEEP_BATCHES = (1, 2, 4, 8, 16, 64, 128, 256)


def medians(timings: dict) -> dict[str, float]:
    """Median seconds per call of each of `time_interleaved`'s timings."""
    return {name: t.median for name, t in timings.items()}


def interleaved(fns: dict[str, callable], rounds: int, repeat: int) -> dict[str, float]:
    """Median seconds per call of each function, timed in alternating rounds."""
    return medians(time_interleaved(fns, rounds=rounds, repeat=repeat))


def build(name: str, bits: int, seed: int = 0):
    spec = get_layer(name)
    matrix = spec.random_matrix(bits, seed=seed)
    bias = torch.randn(spec.outputs, generator=torch.Generator().manual_seed(seed)) * 0.01
    module = CompressedLinear.from_matrix(matrix, bias)
    dense = nn.Linear(spec.inputs, spec.outputs, device="meta")
    dense.weight = nn.Parameter(torch.from_numpy(matrix.to_dense()), requires_grad=False)
    dense.bias = nn.Parameter(bias.clone(), requires_grad=False)
    values = torch.from_numpy(matrix.values.copy())
    csr = torch.sparse_csr_tensor(
        torch.from_numpy(matrix.row_ptr.copy()), torch.from_numpy(matrix.col_idx.copy()), values, matrix.shape
    )
    return spec, module, dense, csr


def conditions() -> dict[str, str]:
    return {
        "load_avg_1min": f"{os.getloadavg()[0]:.2f}",
        "kernel_simd_bits": str(cpu_build.vector_bits()),
        "native_route": "built" if cpu_native.module() is not None else f"absent: {cpu_native.failure()}",
        "logical_cpus": str(os.cpu_count()),
    }


def layer_contenders(dense: nn.Linear, module: CompressedLinear, csr: torch.Tensor, x: torch.Tensor) -> dict:
    return {
        "dense": lambda: dense(x),
        "compressed": lambda: module(x),
        "torch_csr": lambda: (csr @ x.t()).t() + dense.bias,
    }


def time_layer(name: str, args, threads_to_run: list[int]) -> list[dict]:
    spec, module, dense, csr = build(name, args.bits)
    memory_ratio = module.memory_bytes() / module.dense_bytes()
    rows = []
    for threads in threads_to_run:
        torch.set_num_threads(threads)
        for batch in args.batches:
            x = torch.randn(batch, spec.inputs)
            with torch.no_grad():
                reference = dense(x)
                error = float((module(x) - reference).norm() / reference.norm())
                timings = time_interleaved(
                    layer_contenders(dense, module, csr, x), rounds=args.rounds, repeat=args.repeat
                )
                times = medians(timings)
            row = {
                "layer": name,
                "shape": f"{spec.inputs}->{spec.outputs}",
                "density": spec.weight_density,
                "bits": args.bits,
                "batch": batch,
                "threads": threads,
                "dense_ms": times["dense"] * 1e3,
                "compressed_ms": times["compressed"] * 1e3,
                "speedup": times["dense"] / times["compressed"],
                "dense_best_ms": timings["dense"].low * 1e3,
                "compressed_best_ms": timings["compressed"].low * 1e3,
                "speedup_best": timings["dense"].low / timings["compressed"].low,
                "torch_csr_ms": times["torch_csr"] * 1e3,
                "path": "sparse" if cpu_launch.uses_sparse(batch, module.density) else "decode+gemm",
                "module_MB": module.memory_bytes() / 1e6,
                "dense_MB": module.dense_bytes() / 1e6,
                "memory_ratio": memory_ratio,
                "rel_error": error,
                **conditions(),
            }
            rows.append(row)
            print_table([row], COLUMNS, file=sys.stderr)  # progress
    return rows


def thread_counts(args) -> list[int]:
    """``--threads``, by default 1 and torch's count."""
    return sorted({1, torch.get_num_threads()}) if args.threads is None else args.threads


def run_layers(args) -> list[dict]:
    return [row for name in args.layers for row in time_layer(name, args, thread_counts(args))]


COLUMNS = (
    "layer", "shape", "density", "batch", "threads", "dense_ms", "compressed_ms", "speedup",
    "speedup_best", "torch_csr_ms", "path", "memory_ratio", "rel_error", "load_avg_1min",
)  # fmt: skip


def verdicts(rows: list[dict]) -> list[str]:
    lines = []
    for row in rows:
        if row["batch"] == 1 and row["layer"] in ("alex6", "alex7", "vgg6"):
            ok = row["speedup"] >= SPEED_TARGET
            lines.append(
                f"{row['layer']} batch 1, {row['threads']} thread(s): {row['speedup']:.1f}x faster "
                f"than nn.Linear (target >= {SPEED_TARGET:.0f}x: {'met' if ok else 'MISSED'})"
            )
    seen = set()
    for row in rows:
        if row["density"] == 0.09 and row["layer"] not in seen:
            seen.add(row["layer"])
            ok = row["memory_ratio"] <= MEMORY_TARGET
            lines.append(
                f"{row['layer']} memory: {row['module_MB']:.2f} MB vs {row['dense_MB']:.1f} MB dense = "
                f"1/{1 / row['memory_ratio']:.1f} (target <= 1/8: {'met' if ok else 'MISSED'})"
            )
    return lines


def stack_forward(layers: list, x: torch.Tensor, seconds: list[list[float]]) -> None:
    """One forward pass through ``layers`` (ReLU between them), each call's seconds appended to
    its list in ``seconds``."""
    for i, layer in enumerate(layers):
        if i:
            x = F.relu(x)
        start = time.perf_counter()
        x = layer(x)
        seconds[i].append(time.perf_counter() - start)


def time_stack(stack: str, args, threads_to_run: list[int]) -> list[dict]:
    """Every layer of ``stack`` timed inside it, dense against compressed: per round, ``repeat``
    passes of the dense stack, then of the compressed one (medians over all passes)."""
    built = [build(name, args.bits) for name in STACKS[stack]]
    models = {"dense": [b[2] for b in built], "compressed": [b[1] for b in built]}
    rows = []
    for threads in threads_to_run:
        torch.set_num_threads(threads)
        for batch in args.batches:
            x = torch.randn(batch, built[0][0].inputs)
            seconds = {name: [[] for _ in built] for name in models}
            with torch.inference_mode():
                for layers in models.values():  # warm-up pass
                    stack_forward(layers, x, [[] for _ in built])
                for _ in range(args.rounds):
                    for name, layers in models.items():
                        for _ in range(args.repeat):
                            stack_forward(layers, x, seconds[name])
            for i, (spec, module, _, _) in enumerate(built):
                dense_s, compressed_s = (statistics.median(seconds[name][i]) for name in models)
                row = {
                    "stack": stack,
                    "layer": spec.name,
                    "shape": f"{spec.inputs}->{spec.outputs}",
                    "density": spec.weight_density,
                    "bits": args.bits,
                    "batch": batch,
                    "threads": threads,
                    "dense_ms": dense_s * 1e3,
                    "compressed_ms": compressed_s * 1e3,
                    "speedup": dense_s / compressed_s,
                    "memory_ratio": module.memory_bytes() / module.dense_bytes(),
                    **conditions(),
                }
                rows.append(row)
                print_table([row], STACK_COLUMNS, file=sys.stderr)  # progress
    return rows


def run_stacks(args) -> list[dict]:
    return [row for stack in args.stacks for row in time_stack(stack, args, thread_counts(args))]


STACK_COLUMNS = (
    "stack", "layer", "shape", "density", "batch", "threads", "dense_ms", "compressed_ms", "speedup",
    "memory_ratio", "load_avg_1min",
)  # fmt: skip


def stack_verdicts(rows: list[dict]) -> list[str]:
    """Per stack and thread count: the slowest layer against `NEVER_SLOWER`, and which layers and
    batches fall below it."""
    lines = []
    for stack, threads in dict.fromkeys((r["stack"], r["threads"]) for r in rows):
        mine = [r for r in rows if (r["stack"], r["threads"]) == (stack, threads)]
        slow = ", ".join(f"{r['layer']} batch {r['batch']}" for r in mine if r["speedup"] < NEVER_SLOWER)
        low = min(r["speedup"] for r in mine)
        lines.append(
            f"{stack}, {threads} thread(s): slowest layer {low:.2f}x nn.Linear "
            f"(goal >= {NEVER_SLOWER}x: {f'MISSED: {slow}' if slow else 'met'})"
        )
    return lines


def sweep_contenders(weight: torch.Tensor, layout: SparseLayout, x: torch.Tensor) -> dict:
    return {
        "dense": lambda: F.linear(x, weight),
        "sparse": lambda: cpu_launch.cpu_linear(x, layout, path="sparse"),
        "decode_gemm": lambda: cpu_launch.cpu_linear(x, layout, path="dense"),
    }


def run_sweep(args) -> list[dict]:
    if args.threads:
        torch.set_num_threads(args.threads[0])
    rows = []
    for density in SWEEP_DENSITIES:
        matrix = random_compressed_matrix(args.sweep_size, args.sweep_size, density, args.bits, seed=1)
        layout = SparseLayout.from_matrix(matrix, cpu_launch.packing_index_bits(matrix))
        weight = torch.from_numpy(matrix.to_dense())
        for batch in SWEEP_BATCHES:
            x = torch.randn(batch, args.sweep_size)
            times = interleaved(sweep_contenders(weight, layout, x), args.rounds, max(1, args.repeat // 2))
            row = {
                "size": args.sweep_size,
                "density": density,
                "batch": batch,
                **{f"{k}_ms": v * 1e3 for k, v in times.items()},
                "sparse_vs_decode": times["decode_gemm"] / times["sparse"],
                "auto_path": "sparse" if cpu_launch.uses_sparse(batch, density) else "decode+gemm",
                "threads": torch.get_num_threads(),
                **conditions(),
            }
            rows.append(row)
            print_table([row], SWEEP_COLUMNS, file=sys.stderr)
    return rows


def plot_layers(rows: list[dict], path: Path, where: str = "each called alone") -> None:
    """Speed against nn.Linear over the batch, a line per layer, a panel per thread count (rows as
    `run_layers` or `time_stack` return them or as read back from their CSV); 0.9x marks "never
    slower than dense by more than 10%"; ``where`` says how the layers ran."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    thread_counts = sorted({int(r["threads"]) for r in rows})
    fig, axes = plt.subplots(
        1, len(thread_counts), figsize=(6 * len(thread_counts), 4.5), squeeze=False, sharey=True
    )
    for ax, threads in zip(axes[0], thread_counts):
        mine = [r for r in rows if int(r["threads"]) == threads]
        for layer in dict.fromkeys(r["layer"] for r in mine):
            sel = sorted((int(r["batch"]), float(r["speedup"])) for r in mine if r["layer"] == layer)
            ax.plot([b for b, _ in sel], [v for _, v in sel], marker="o", label=layer)
        ax.axhline(1.0, color="gray", lw=0.8)
        ax.axhline(NEVER_SLOWER, color="red", ls="--", lw=0.8, label=f"{NEVER_SLOWER}x")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        for axis in (ax.xaxis, ax.yaxis):  # plain numbers, not powers
            axis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        ax.yaxis.set_minor_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        ax.set_xlabel("batch")
        ax.set_title(f"{threads} thread(s)")
    axes[0][0].set_ylabel("speed against nn.Linear (x)")
    axes[0][-1].legend(fontsize="small", loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.suptitle(f"CompressedLinear against nn.Linear, float32,\nlayers {where} (above 1: faster)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


SWEEP_COLUMNS = (
    "density", "batch", "dense_ms", "sparse_ms", "decode_gemm_ms", "sparse_vs_decode", "auto_path",
    "load_avg_1min",
)  # fmt: skip


def plot_sweep(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for density in SWEEP_DENSITIES:
        sel = [r for r in rows if r["density"] == density]
        ratios = [r["sparse_vs_decode"] for r in sel]
        ax.plot([r["batch"] for r in sel], ratios, marker="o", label=f"{density:.0%}")
    ax.axhline(1.0, color="gray", lw=0.8)
    min_density, min_batch = cpu_launch.dense_from()
    ax.axvline(min_batch, color="red", ls="--", lw=0.8, label="decode + GEMM from this batch")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("batch")
    ax.set_ylabel("time(decode + GEMM) / time(sparse kernels)")
    ax.set_title(
        f"{rows[0]['size']}x{rows[0]['size']}, float32, {rows[0]['threads']} thread(s): sparse wins above 1\n"
        f"auto: decode + GEMM at density >= {min_density} and batch >= {min_batch}"
    )
    ax.legend(title="density")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


FORM_SHAPES = {
    # name: (in_features, out_features)
    "minilm-attn": (384, 384),
    "minilm-up": (384, 1536),
    "minilm-down": (1536, 384),
    "llm-attn": (4096, 4096),
    "llm-up": (4096, 14336),
}
FORM_DENSITIES = (0.5, 0.8)
FORM_BITS = 4
FORM_BATCHES = (1, 32)
FORM_MEMORY_TARGET = 1 / 6  # resident bytes / float32 bytes
FORM_SPEED_TARGETS = {1: {"minilm": 1.0, "llm": 1.5}, 32: {"minilm": 0.9, "llm": 0.9}}
FORM_CONTENDERS = ("sparse", "dense_codes", "auto")


def form_module(matrix, bias: torch.Tensor, form: str) -> CompressedLinear:
    return CompressedLinear.from_matrix(matrix, bias, form=form)


def run_forms(args) -> list[dict]:
    """Each target shape and density: nn.Linear and the layer in each form, interleaved."""
    if args.threads:
        torch.set_num_threads(args.threads[0])
    rows = []
    for name in args.shapes:
        inputs, outputs = FORM_SHAPES[name]
        for density in FORM_DENSITIES:
            # 2**bits - 1 shared values: the dense-codes form keeps one code for zero.
            matrix = random_compressed_matrix(
                outputs, inputs, density, args.form_bits, seed=1, codebook_size=(1 << args.form_bits) - 1
            )
            bias = torch.randn(outputs, generator=torch.Generator().manual_seed(1)) * 0.01
            dense = nn.Linear(inputs, outputs, device="meta")
            dense.weight = nn.Parameter(torch.from_numpy(matrix.to_dense()), requires_grad=False)
            dense.bias = nn.Parameter(bias.clone(), requires_grad=False)
            modules = {form: form_module(matrix, bias, form) for form in FORM_CONTENDERS}
            for batch in FORM_BATCHES:
                x = torch.randn(batch, inputs)
                fns = {"dense": lambda x=x, dense=dense: dense(x)}
                fns.update({form: (lambda m=m, x=x: m(x)) for form, m in modules.items()})
                repeat = max(1, args.repeat if outputs * inputs < 1 << 24 else args.repeat // 5)
                with torch.no_grad():
                    timings = time_interleaved(fns, rounds=args.rounds, repeat=repeat)
                times = medians(timings)
                row = {
                    "shape": name,
                    "in_features": inputs,
                    "out_features": outputs,
                    "density": density,
                    "bits": args.form_bits,
                    "batch": batch,
                    "threads": torch.get_num_threads(),
                    "dense_ms": times["dense"] * 1e3,
                    "auto_form": modules["auto"].effective_form,
                }
                for form, m in modules.items():
                    row[f"{form}_ms"] = times[form] * 1e3
                    row[f"{form}_speedup"] = times["dense"] / times[form]
                    row[f"{form}_bytes_ratio"] = m.memory_bytes() / (4 * (inputs * outputs + outputs))
                row["auto_speedup_best"] = timings["dense"].low / timings["auto"].low  # fastest rounds
                row.update(conditions())
                rows.append(row)
                print_table([row], FORM_COLUMNS, file=sys.stderr)
    return rows


FORM_COLUMNS = (
    "shape", "density", "batch", "dense_ms", "sparse_speedup", "dense_codes_speedup", "auto_speedup",
    "auto_speedup_best", "auto_form", "sparse_bytes_ratio", "dense_codes_bytes_ratio", "load_avg_1min",
)  # fmt: skip


def form_verdicts(rows: list[dict]) -> list[str]:
    """The targets, judged on the ``auto`` layer (the form a user gets)."""
    lines = []
    for row in rows:
        family = row["shape"].split("-")[0]
        target = FORM_SPEED_TARGETS[row["batch"]][family] if row["batch"] in FORM_SPEED_TARGETS else None
        memory = row["auto_bytes_ratio"]
        ok_memory = memory <= FORM_MEMORY_TARGET
        line = (
            f"{row['shape']} density {row['density']} batch {row['batch']}: auto ({row['auto_form']}) "
            f"{row['auto_speedup']:.2f}x dense"
        )
        if target is not None:
            line += f" (target >= {target}: {'met' if row['auto_speedup'] >= target else 'MISSED'})"
        line += f", bytes 1/{1 / memory:.1f} of float32 (target <= 1/6: {'met' if ok_memory else 'MISSED'})"
        lines.append(line)
    return lines


def plot_forms(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(FORM_BATCHES), figsize=(12, 4.5), sharey=True)
    for ax, batch in zip(axes, FORM_BATCHES):
        sel = [r for r in rows if r["batch"] == batch]
        labels = [f"{r['shape']}\n{r['density']}" for r in sel]
        width = 0.27
        for i, form in enumerate(FORM_CONTENDERS):
            ax.bar([k + (i - 1) * width for k in range(len(sel))], [r[f"{form}_speedup"] for r in sel], width,
                   label=form)  # fmt: skip
        ax.axhline(1.0, color="gray", lw=0.8)
        ax.set_xticks(range(len(sel)), labels, rotation=60, fontsize=7)
        ax.set_yscale("log")
        ax.set_title(f"batch {batch}")
    axes[0].set_ylabel("speed vs nn.Linear float32 (x, higher is faster)")
    axes[0].legend()
    fig.suptitle(f"4-bit codes, float32, {rows[0]['threads']} thread(s); label: shape, density")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


CODES_SWEEP_DENSITY = 0.8
CODES_SWEEP_BATCHES = (1, 2, 4, 8, 16, 24, 32, 48, 64, 128, 256, 512, 1024, 2048)
CODES_SWEEP_SHAPES = ("384x384", "1536x384", "384x1536", "4096x4096")  # out x in
# Calls of up to this many multiply-adds (tens of microseconds) take SHORT_CALL_ROUNDS times the
# rounds: with 5 rounds of 5 calls the sweep's first point (384x384 at batch 1) read 0.66-0.70x of
# nn.Linear where 25 rounds read 0.95x, as did 5 rounds of 50 calls (1 thread).
SHORT_CALL_WORK = 1 << 20
SHORT_CALL_ROUNDS = 5


def layer_shape(text: str) -> tuple[int, int]:
    """(out_features, in_features) from ``OUTxIN``."""
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(f"a layer shape is OUTxIN with positive integers, got {text!r}")
    return int(parts[0]), int(parts[1])


def auto_path(batch: int, in_features: int) -> str:
    return "codes" if batch <= codes_cpu.kernel_max_batch(in_features) else "decode+gemm"


def run_codes_sweep(args) -> list[dict]:
    if args.threads:
        torch.set_num_threads(args.threads[0])
    rows = []
    for outputs, inputs in args.codes_shapes:
        # 2**bits - 1 shared values: the dense-codes form keeps one code for zero.
        matrix = random_compressed_matrix(
            outputs,
            inputs,
            CODES_SWEEP_DENSITY,
            args.form_bits,
            seed=1,
            codebook_size=(1 << args.form_bits) - 1,
        )
        lay, weight = DenseCodesLayout.from_matrix(matrix), torch.from_numpy(matrix.to_dense())
        module = CompressedLinear.from_matrix(matrix, form="dense_codes")
        for batch in CODES_SWEEP_BATCHES:
            x = torch.randn(batch, inputs)
            fns = {
                "dense": lambda x=x, w=weight: F.linear(x, w),
                "codes": lambda x=x, lay=lay: codes_cpu.codes_linear_cpu(x, lay, path="codes"),
                "decode_gemm": lambda x=x, lay=lay: codes_cpu.codes_linear_cpu(x, lay, path="dense"),
                "auto": lambda x=x, module=module: module(x),
            }
            short = outputs * inputs * batch <= SHORT_CALL_WORK
            with torch.no_grad():
                times = interleaved(
                    fns, args.rounds * (SHORT_CALL_ROUNDS if short else 1), max(1, args.repeat // 2)
                )
            row = {
                "out": outputs,
                "in": inputs,
                "density": CODES_SWEEP_DENSITY,
                "bits": args.form_bits,
                "batch": batch,
                **{f"{k}_ms": v * 1e3 for k, v in times.items()},
                "codes_vs_dense": times["dense"] / times["codes"],
                "decode_gemm_vs_dense": times["dense"] / times["decode_gemm"],
                "auto_vs_dense": times["dense"] / times["auto"],
                "auto_path": auto_path(batch, inputs),
                "threads": torch.get_num_threads(),
                **conditions(),
            }
            rows.append(row)
            print_table([row], CODES_SWEEP_COLUMNS, file=sys.stderr)
    return rows


CODES_SWEEP_COLUMNS = (
    "out", "in", "batch", "dense_ms", "codes_ms", "decode_gemm_ms", "codes_vs_dense", "decode_gemm_vs_dense",
    "auto_vs_dense", "auto_path", "load_avg_1min",
)  # fmt: skip


def plot_codes_sweep(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shapes = list(dict.fromkeys((r["out"], r["in"]) for r in rows))
    fig, axes = plt.subplots(1, len(shapes), figsize=(4.5 * len(shapes), 4.5), squeeze=False, sharey=True)
    for ax, (outputs, inputs) in zip(axes[0], shapes):
        mine = [r for r in rows if (r["out"], r["in"]) == (outputs, inputs)]
        batches = [r["batch"] for r in mine]
        for key, label in (("codes_vs_dense", "lookup kernels"), ("decode_gemm_vs_dense", "decode + GEMM"),
                           ("auto_vs_dense", "dispatch")):  # fmt: skip
            ax.plot(batches, [r[key] for r in mine], marker="o", label=label)
        ax.axhline(1.0, color="gray", lw=0.8)
        ax.axhline(0.9, color="gray", lw=0.8, ls=":")
        ax.axvline(23.5, color="gray", ls="--", lw=0.8, label="tile kernel from 24 rows")
        ax.axvline(
            codes_cpu.kernel_max_batch(inputs) + 0.5, color="red", ls="--", lw=0.8, label="kernel_max_batch"
        )
        ax.set_xscale("log", base=2)
        ax.set_yscale("log", base=2)
        ax.set_xlabel("batch")
        ax.set_title(f"{outputs}x{inputs} (out x in)")
    axes[0][0].set_ylabel("speed vs nn.Linear float32 (x)")
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"dense codes, density {rows[0]['density']}, 4-bit, {rows[0]['threads']} thread(s)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=doc_summary(__doc__))
    parser.add_argument(
        "--layers", nargs="+", default=list(DEFAULT_LAYERS), help="layer names (workloads.get_layer)"
    )
    parser.add_argument("--bits", type=int, default=5)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 64])
    parser.add_argument(
        "--threads", type=int, nargs="+", default=None, help="default: 1 and torch's count (sweep: the first)"
    )
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (median over rounds)")
    parser.add_argument("--repeat", type=int, default=10, help="calls per round")
    parser.add_argument("--sweep", action="store_true", help="batch sweep of the two CPU paths instead")
    parser.add_argument("--sweep-size", type=int, default=4096, help="the sweep's square layer size")
    parser.add_argument("--forms", action="store_true", help="both forms on MiniLM/LLM shapes instead")
    parser.add_argument("--shapes", nargs="+", default=list(FORM_SHAPES), choices=list(FORM_SHAPES))
    parser.add_argument("--sweep-codes", action="store_true", help="batch sweep of the dense-codes form")
    parser.add_argument(
        "--stacks", nargs="+", choices=list(STACKS), default=None,
        help="time every layer inside these FC stacks instead (as a model runs them)",
    )  # fmt: skip
    parser.add_argument(
        "--form-bits",
        type=int,
        default=FORM_BITS,
        choices=range(1, 9),
        help=f"code bits of --forms and --sweep-codes layers, 2**bits - 1 values (targets: {FORM_BITS})",
    )
    parser.add_argument(
        "--codes-shapes", type=layer_shape, nargs="+", default=[layer_shape(s) for s in CODES_SWEEP_SHAPES],
        help="the codes sweep's layers, OUTxIN",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "perf" / "results" / "cpu")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
    if cpu_build.library() is None:
        print(
            f"note: compiled kernels unavailable ({cpu_build.failure()}); timing the fallback",
            file=sys.stderr,
        )
    info = machine_info("cpu")
    start = conditions()
    threads = torch.get_num_threads()
    try:
        if args.forms:
            rows = run_forms(args)
            csv_path = write_csv(args.out / "bench_cpu_forms.csv", rows, info)
            plot_forms(rows, args.out / "bench_cpu_forms.png")
            print_table(rows, FORM_COLUMNS)
            print()
            print("\n".join(form_verdicts(rows)))
        elif args.sweep_codes:
            rows = run_codes_sweep(args)
            csv_path = write_csv(args.out / "bench_cpu_codes_sweep.csv", rows, info)
            plot_codes_sweep(rows, args.out / "bench_cpu_codes_sweep.png")
            print_table(rows, CODES_SWEEP_COLUMNS)
        elif args.stacks:
            rows = run_stacks(args)
            csv_path = write_csv(args.out / "bench_cpu_stacks.csv", rows, info)
            if len({r["batch"] for r in rows}) > 1:
                plot_layers(rows, args.out / "bench_cpu_stacks.png", "inside their stacks")
            print_table(rows, STACK_COLUMNS)
            print()
            print("\n".join(stack_verdicts(rows)))
        elif args.sweep:
            rows = run_sweep(args)
            csv_path = write_csv(args.out / "bench_cpu_sweep.csv", rows, info)
            plot_sweep(rows, args.out / "bench_cpu_sweep.png")
            print_table(rows, SWEEP_COLUMNS)
        else:
            rows = run_layers(args)
            csv_path = write_csv(args.out / "bench_cpu.csv", rows, info)
            if len({r["batch"] for r in rows}) > 1:
                plot_layers(rows, args.out / "bench_cpu.png")
            print_table(rows, COLUMNS)
            print()
            print("\n".join(verdicts(rows)))
    finally:
        torch.set_num_threads(threads)  # the runs set their own thread counts
    end = conditions()
    print(
        f"\nconditions: {info['cpu']}, {start['logical_cpus']} logical CPUs, torch {info['torch']}, "
        f"kernel SIMD {start['kernel_simd_bits']} bits, load average {start['load_avg_1min']} before / "
        f"{end['load_avg_1min']} after (other processes share these cores)\nCSV: {csv_path}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
