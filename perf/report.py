"""`dcomp report`: the hardware comparison report of the paper's nine FC layers.

CPU measured now (dense vs `CompressedLinear`), the newest GPU results committed under
``perf/results/`` (none: the report says so and shows no GPU numbers), EIE simulated now; per
layer the batch-1 times, speedups and energies against CPU dense, and the compression. Writes
into ``--out`` (default ``out/report``): ``report.md``, ``report.html`` (self-contained), CSV
files and PNG plots. ``--quick`` (CI): fewer timing repeats, short EIE sweeps on one layer, the
pipeline table on one small layer; ``--layers`` shrinks the layer set.

    dcomp report [--out DIR] [--quick] [--layers alex7 vgg6 ...] [--gpu-results DIR] [--eie-dump DIR]
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

from perf.gpu_results import RESULTS_ROOT
from perf.harness import Progress, doc_summary
from perf.reporting.collect import ReportConfig, ReportData, collect
from perf.reporting.document import TITLE, build_document, render_markdown_document
from perf.reporting.tables import build_tables, layer_frame, write_csvs
from workloads.eie_workloads import WORKLOADS
from workloads.paper_layers import PAPER_LAYERS

QUICK_PIPELINE_LAYERS = ("nt-lstm",)


def write_report(data: ReportData, out: Path, command: str, plots: bool = True) -> dict[str, Path]:
    """Tables, CSV, plots, report.md and report.html into ``out``; name -> path of each file."""
    from perf.reporting.html import render_html

    out.mkdir(parents=True, exist_ok=True)
    frame = layer_frame(data)
    tables = build_tables(data, frame)
    if data.digits is not None:
        tables += data.digits.tables()
    written = {p.name: p for p in write_csvs(data, frame, out)}
    if data.digits is not None:
        written.update({p.name: p for p in data.digits.write_csvs(out, data.machine)})
    images: dict[str, Path] = {}
    if plots:
        try:
            from perf.reporting.plots import write_plots
        except ModuleNotFoundError as exc:  # matplotlib is the `plots` extra
            print(f"no plots: {exc} (pip install 'deep-compression[plots]')", file=sys.stderr)
        else:
            images = write_plots(data, frame, out)
    written.update({p.name: p for p in images.values()})
    blocks = build_document(data, frame, tables, images, command)
    written["report.md"] = out / "report.md"
    written["report.md"].write_text(render_markdown_document(blocks, images), encoding="utf-8")
    written["report.html"] = out / "report.html"
    written["report.html"].write_text(render_html(TITLE, blocks, images), encoding="utf-8")
    return written


def add_eie_arguments(parser: argparse.ArgumentParser) -> None:
    """The EIE options `dcomp report` and `dcomp run` share."""
    parser.add_argument(
        "--eie-workload",
        choices=list(WORKLOADS),
        default="fc8-stats",
        help="how EIE's benchmark layers are generated (default fc8-stats: the authors' fc8 dump's stats)",
    )
    parser.add_argument(
        "--eie-dump",
        type=Path,
        default=environment_dump(),
        metavar="DIR",
        help="the EIE authors' dump folder, simulated as its own row (default: $EIE_DUMP if a folder)",
    )


def environment_dump() -> Path | None:
    """The folder the ``EIE_DUMP`` environment variable names, if it is one (else None, with a
    note on stderr when the variable is set)."""
    value = os.environ.get("EIE_DUMP")
    if not value:
        return None
    if not Path(value).is_dir():
        print(f"EIE_DUMP={value} is not a folder; the report has no real-data EIE row", file=sys.stderr)
        return None
    return Path(value)


def build_parser(prog: str = "dcomp report") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=doc_summary(__doc__))
    parser.add_argument(
        "--out", type=Path, default=Path("out/report"), help="output folder (default out/report)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="reduced size for CI: fewer repeats, short sweeps"
    )
    parser.add_argument("--layers", nargs="+", default=list(PAPER_LAYERS), choices=list(PAPER_LAYERS))
    parser.add_argument(
        "--bits", type=int, default=5, help="code width of the CPU layers and sizes (default 5)"
    )
    parser.add_argument("--index-bits", type=int, default=5, help="relative-index width (default 5)")
    parser.add_argument("--no-sweeps", action="store_true", help="skip the EIE sweeps")
    add_eie_arguments(parser)
    parser.add_argument(
        "--pipeline-layers", nargs="*", choices=list(PAPER_LAYERS), default=None,
        help="layers of the pipeline-throughput table (default alex7; nt-lstm with --quick; none if empty)",
    )  # fmt: skip
    parser.add_argument("--gpu-results", type=Path, default=None, help="read this GPU results folder")
    parser.add_argument(
        "--results-root", type=Path, default=RESULTS_ROOT, help="where committed GPU results are"
    )
    parser.add_argument("--cpu-watts", type=float, default=None, help="CPU power instead of the estimate")
    parser.add_argument("--gpu-watts", type=float, default=None, help="GPU power instead of the TDP estimate")
    parser.add_argument(
        "--threads", type=int, default=None, help="CPU threads (default: torch's; 1 on a busy machine)"
    )
    parser.add_argument(
        "--gpu-predictions", type=Path, default=ReportConfig.predictions,
        help="GPU predictions from the compiled code (dcomp predict-gpu's JSON; default: the committed one)",
    )  # fmt: skip
    parser.add_argument("--no-plots", action="store_true", help="tables only")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def config_from_args(args: argparse.Namespace, **overrides) -> ReportConfig:
    pipeline = args.pipeline_layers
    if pipeline is None:
        pipeline = QUICK_PIPELINE_LAYERS if args.quick else ("alex7",)
    fields = {
        "layers": tuple(args.layers),
        "bits": args.bits,
        "index_bits": args.index_bits,
        "seed": args.seed,
        "quick": args.quick,
        "sweeps": not args.no_sweeps,
        "pipeline_layers": tuple(pipeline),
        "results_root": args.results_root,
        "gpu_folder": args.gpu_results,
        "cpu_watts": args.cpu_watts,
        "gpu_watts": args.gpu_watts,
        "threads": args.threads,
        "eie_workload": args.eie_workload,
        "eie_dump": args.eie_dump,
        "predictions": args.gpu_predictions,
    }
    return ReportConfig(**{**fields, **overrides})


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args)
    except ValueError as exc:
        parser.error(str(exc))
    progress = Progress()
    progress(f"report: {len(config.layers)} layers{' (quick)' if config.quick else ''} -> {args.out}")
    data = collect(config, progress)
    written = write_report(data, args.out, shlex.join(["dcomp", "report", *argv]), plots=not args.no_plots)
    progress(f"wrote {len(written)} files; open {written['report.html']} or read {written['report.md']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
