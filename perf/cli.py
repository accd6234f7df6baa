"""`dcomp`: one entry point, each subcommand in the module that owns it (imported lazily)."""

from __future__ import annotations

import importlib
import sys

from compress._version import __version__

# subcommand -> (module, function taking argv, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str, str]] = {
    "compress": (
        "perf.compress_cli",
        "main",
        "compress a Hugging Face model folder or a safetensors file (--dry-run: the plan)",
    ),
    "demo": ("perf.demo", "main", "Deep Compression of LeNet-300-100 on scikit-learn's digits"),
    "check-kernels": (
        "perf.kernel_check",
        "main",
        "compile every Triton kernel configuration for sm_80/sm_90; registers and spills",
    ),
    "predict-gpu": (
        "perf.cost.predict",
        "main",
        "per-layer GPU time predicted from the compiled kernels (roofline), beside cuBLAS fp16",
    ),
    "report": ("perf.report", "main", "the hardware comparison report (CPU, GPU results, EIE)"),
    "run": ("perf.main_job", "main", "the main job: compress, benchmark, simulate EIE, report"),
}


def _usage() -> str:
    lines = ["usage: dcomp COMMAND [options]  |  dcomp --version", "", "commands:"]
    lines += [f"  {name:<14} {help_}" for name, (_, _, help_) in SUBCOMMANDS.items()]
    lines.append("\n`dcomp COMMAND --help` describes a command's options.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    if argv[0] == "--version":
        print(f"dcomp (deep-compression) {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        print(f"dcomp: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module_name, function, _ = SUBCOMMANDS[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        print(f"dcomp {name}: not available in this version ({module_name} is missing)", file=sys.stderr)
        return 2
    return int(getattr(module, function)(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
