"""`dcomp run`: the main job. Compress, benchmark what this machine has, simulate EIE, report.

1. compress the digits LeNet-300-100 (`dcomp demo`, one seed) and run it on the CPU and on EIE
   with real activations (`perf.reporting.digits`);
2. on a CUDA machine, time the GPU kernels on the paper's layers (`perf/bench_gpu_huffman.py`:
   cuBLAS float16, the fixed-width and the Huffman kernels) into ``OUT/gpu``; elsewhere the report
   takes the newest GPU results committed under ``perf/results/``, if any;
3. the hardware comparison report of the paper's nine layers (`dcomp report`) with the digits
   section, into ``OUT/report`` (``report.md``, ``report.html``, CSV, PNG).

About 2 minutes of CPU time on 2 cores, more when other work shares them; progress is printed
as it goes. ``--quick`` is the reduced size CI runs.

    dcomp run [--out out] [--quick] [--threads N] [--layers alex7 vgg6 ...] [--no-gpu] [--eie-dump DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import shlex
import sys
import time
from pathlib import Path

from perf.gpu_results import RESULTS_ROOT
from perf.harness import Progress, doc_summary
from perf.report import QUICK_PIPELINE_LAYERS, add_eie_arguments, write_report
from perf.reporting.collect import ReportConfig, collect
from perf.reporting.cpu import CpuConfig
from perf.reporting.digits import collect_digits
from workloads.paper_layers import PAPER_LAYERS

TARGET_SECONDS = 300.0
QUICK_EPOCHS_SCALE = 0.25


def gpu_available() -> bool:
    """A CUDA device and Triton to run the kernels (never initializes CUDA without a device)."""
    import torch

    return importlib.util.find_spec("triton") is not None and torch.cuda.is_available()


def measure_gpu(out: Path, layers: tuple[str, ...], progress: Progress) -> Path | None:
    """Run the GPU benchmark into ``out``; its folder, or None when it failed (the report then
    falls back to the committed results)."""
    from perf.bench_gpu_huffman import main as bench_gpu_main

    try:
        code = bench_gpu_main(["--out", str(out), "--layers", *layers])
    except Exception as exc:  # a GPU failure must not lose the CPU and EIE report
        progress(f"GPU benchmark failed ({type(exc).__name__}: {exc}); using committed GPU results")
        return None
    if code != 0 or not (out / "huffman_gpu.csv").is_file():
        progress(f"GPU benchmark exited with {code}; using committed GPU results")
        return None
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dcomp run", description=doc_summary(__doc__))
    parser.add_argument("--out", type=Path, default=Path("out"), help="output folder (default out/)")
    parser.add_argument("--quick", action="store_true", help="reduced size (CI): short training and sweeps")
    parser.add_argument("--layers", nargs="+", default=list(PAPER_LAYERS), choices=list(PAPER_LAYERS))
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    parser.add_argument("--no-gpu", action="store_true", help="do not run the GPU benchmark even with a GPU")
    parser.add_argument("--seeds", type=int, default=1, help="seeds of the digits compression (default 1)")
    parser.add_argument(
        "--results-root",
        type=Path,
        default=RESULTS_ROOT,
        help="where committed GPU results are (perf/results)",
    )
    add_eie_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error(f"--seeds must be >= 1, got {args.seeds}")
    try:
        config = ReportConfig(
            layers=tuple(args.layers),
            quick=args.quick,
            pipeline_layers=QUICK_PIPELINE_LAYERS if args.quick else ("alex7",),
            threads=args.threads,
            results_root=args.results_root,
            eie_workload=args.eie_workload,
            eie_dump=args.eie_dump,
        )
        cpu = CpuConfig(batches=(1,), threads=args.threads)
    except ValueError as exc:
        parser.error(str(exc))
    progress = Progress()
    started = time.perf_counter()

    progress("[1/3] digits network: compress (dcomp demo), then CPU and EIE")
    phase = time.perf_counter()
    digits = None
    if importlib.util.find_spec("sklearn") is None:
        progress("digits: skipped, scikit-learn is not installed (pip install 'deep-compression[examples]')")
    else:
        digits = collect_digits(
            args.out / "demo",
            seeds=args.seeds,
            epochs_scale=QUICK_EPOCHS_SCALE if args.quick else 1.0,
            cpu=CpuConfig.quick(batches=(1,), threads=args.threads) if args.quick else cpu,
            progress=progress,
        )

    seconds = {"digits": time.perf_counter() - phase}

    if args.no_gpu or not gpu_available():
        why = "--no-gpu" if args.no_gpu else "no CUDA GPU on this machine"
        progress(f"[2/3] GPU: skipped ({why}); the report reads committed results under perf/results/")
    else:
        progress("[2/3] GPU: timing cuBLAS, the fixed-width and the Huffman kernels on the paper's layers")
        phase = time.perf_counter()
        folder = measure_gpu(args.out / "gpu", config.layers, progress)
        seconds["gpu"] = time.perf_counter() - phase
        if folder is not None:
            config = dataclasses.replace(config, gpu_folder=folder, gpu_origin="measured now")

    progress(f"[3/3] report: {len(config.layers)} paper layers on the CPU, GPU results, EIE")
    data = collect(config, progress)
    data.digits = digits
    data.phase_seconds = {**seconds, **data.phase_seconds}
    report_dir = args.out / "report"
    written = write_report(data, report_dir, shlex.join(["dcomp", "run", *argv]))

    elapsed = time.perf_counter() - started
    print()
    print((report_dir / "report.md").read_text(encoding="utf-8").split("## Machine and sources")[0].strip())
    print()
    verdict = "within" if elapsed <= TARGET_SECONDS else "over"
    progress(
        f"done in {elapsed:.0f} s ({verdict} the {TARGET_SECONDS / 60:.0f}-minute target); "
        f"{len(written)} files in {report_dir}: open report.html, or read report.md"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
