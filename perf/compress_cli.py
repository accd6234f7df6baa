"""`dcomp compress SRC --config cfg.json --out DST`: compress a checkpoint from the shell.

SRC is a Hugging Face model folder or a plain safetensors file (`perf.compress_sources` says
what each becomes); the config is a `compress.DeepCompressionConfig` as JSON
(``DeepCompressionConfig.to_json()``; without ``--config`` the defaults). The layers are
compressed one-shot (`dc_kernels.compress_`) with a progress bar on stderr; at the end a table
gives each layer's shape, settings and bytes (dense, in memory, on disk), the whole model's
bytes in memory and on disk before and after, and the weight files' measured sizes.
``--dry-run`` prints the plan (what would be compressed with which settings, what skipped and
why) without reading any weight. ``--calibration FILE`` (a file of example inputs written by
`compress.save_calibration`) compresses a Hugging Face model layer by layer on those inputs with
the config's ``pruning`` and ``quantization`` methods (`compress.calibrated_compress`), and the
report gives each layer's output error.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from compress.calibration_data import load_calibration
from compress.config import DeepCompressionConfig
from compress.errors import CalibrationError, ConfigError
from compress.size import compare_bytes, format_bytes
from perf.compress_sources import SourceError, open_source


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="dcomp compress",
        description="Compress the Linear layers of a Hugging Face model folder or a safetensors file.",
    )
    parser.add_argument("source", type=Path, help="a Hugging Face model folder or a .safetensors file")
    parser.add_argument("--config", type=Path, help="a DeepCompressionConfig as JSON (default: the defaults)")
    parser.add_argument("--out", type=Path, help="where to write the compressed model (a folder)")
    parser.add_argument("--dry-run", action="store_true", help="print the plan only; read no weight")
    parser.add_argument(
        "--calibration",
        type=Path,
        help="example inputs (compress.save_calibration) for calibrated one-shot compression",
    )
    args = parser.parse_args(argv)
    if not args.dry_run and args.out is None:
        parser.error("--out is required (or --dry-run)")
    if args.out is not None and args.out.resolve() == args.source.resolve():
        parser.error("--out must differ from the source")
    return args


def read_config(path: Path | None) -> DeepCompressionConfig:
    if path is None:
        return DeepCompressionConfig()
    try:
        return DeepCompressionConfig.from_json(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read the config {path}: {exc}") from exc


def plan_table(plan) -> str:
    """The plan as a table: compressed layers with their settings, then the skipped ones."""
    width = max([len("layer"), *(len(p.name) for p in plan)])
    lines = [f"{'layer':<{width}} {'shape':>11} {'prune':>20} {'bits':>4} {'index':>5} {'gpu_form':>8}"]
    chosen = [p for p in plan if p.settings is not None]
    for p in chosen:
        s = p.settings
        prune = f"density {s.density:g}" if s.quality is None else f"quality {s.quality:g}"
        prune += "" if s.pruning == "magnitude" else f" {s.pruning}"
        shape = "x".join(map(str, p.shape))
        lines.append(
            f"{p.name:<{width}} {shape:>11} {prune:>20} {s.bits:>4} {s.index_bits:>5} {s.gpu_form:>8}"
        )
    weights = sum(p.shape[0] * p.shape[1] for p in chosen)
    lines.append(f"{len(chosen)} layers to compress ({weights:,} weights)")
    lines += [f"skip {p.name}: {p.reason}" for p in plan if p.reason is not None]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    import dc_kernels  # the module API loads on first use

    try:
        config = read_config(args.config)
        source = open_source(args.source, meta=args.dry_run)
        calibration = None if args.calibration is None else load_calibration(args.calibration)
        if calibration is not None and source.kind != "huggingface":
            raise SourceError(
                f"--calibration needs a model that runs (a Hugging Face folder), not a {source.kind} file"
            )
    except (ConfigError, SourceError, CalibrationError, OSError) as exc:
        print(f"dcomp compress: error: {exc}", file=sys.stderr)
        return 2
    if args.dry_run:
        print(f"plan for {args.source} ({source.kind}):")
        print(plan_table(dc_kernels.plan_compression(source.model, config)))
        return 0
    try:
        report = dc_kernels.compress_(source.model, config, progress=True, calibration=calibration)
    except (ConfigError, CalibrationError) as exc:
        print(f"dcomp compress: error: {exc}", file=sys.stderr)
        return 2
    before, after = source.weight_bytes(), source.save(args.out)
    print(report)
    print(
        f"weight files: {args.source} {format_bytes(before)} -> {args.out} {format_bytes(after)} "
        f"({compare_bytes(before, after, 'the source')})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
