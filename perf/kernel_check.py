"""`dcomp check-kernels`: compile every kernel configuration the dispatcher can choose, ahead of
time, for sm_80 and sm_90 (no GPU needed), and report registers, shared memory and spills.

Registers and spill bytes come from ``ptxas -v`` (the ptxas shipped inside the Triton wheel) run
on the PTX Triton produced; shared memory from Triton's compiled metadata.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass

from perf.harness import doc_summary

ARCHS = (80, 90)
DTYPES = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}
# (code_bits, index_bits): the widest entry and gather lookup (8+8), a word-straddling entry with
# the global-load lookup (5+6), the narrowest codebook (1+1) and EIE's 4+4.
WIDTHS = ((8, 8), (5, 6), (1, 1), (4, 4))
ALL_WIDTHS = tuple((c, i) for c in range(1, 9) for i in range(1, 9))


@dataclass
class CompileResult:
    kernel: str
    arch: int
    dtype: str
    code_bits: int
    index_bits: int
    batch_bucket: int
    block: int
    num_warps: int
    registers: int
    spill_stores: int
    spill_loads: int
    shared_bytes: int
    seconds: float


def _ptxas(arch: int) -> str:
    """The ptxas Triton itself uses for ``sm_<arch>`` (newer wheels ship two)."""
    import triton

    try:
        from triton.backends.nvidia.compiler import get_ptxas

        try:
            return get_ptxas(arch).path
        except TypeError:  # older Triton: get_ptxas() takes no arch
            return get_ptxas().path
    except (ImportError, AttributeError):
        path = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")
        if not os.path.exists(path):
            raise FileNotFoundError(f"ptxas not found inside the triton wheel at {path}") from None
        return path


def _ptxas_usage(ptx: str, arch: int) -> tuple[int, int, int]:
    """(registers, spill store bytes, spill load bytes) from ``ptxas -v``."""
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "k.ptx")
        with open(src, "w") as f:
            f.write(ptx)
        arch_name = f"sm_{arch}a" if arch == 90 else f"sm_{arch}"
        proc = subprocess.run(
            [_ptxas(arch), "-v", f"--gpu-name={arch_name}", src, "-o", os.path.join(tmp, "k.cubin")],
            capture_output=True,
            text=True,
            check=False,
        )
    if proc.returncode != 0:
        raise RuntimeError(f"ptxas failed for sm_{arch}: {proc.stderr.strip()}")
    text = proc.stderr + proc.stdout
    regs = re.search(r"Used (\d+) registers", text)
    spills = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", text)
    if regs is None or spills is None:
        raise RuntimeError(f"cannot parse ptxas -v output: {text}")
    return int(regs.group(1)), int(spills.group(1)), int(spills.group(2))


def _signature(fn, dtype: str, consts: dict) -> dict[str, str]:
    """The fixed-width kernels' argument types as `dc_kernels.fixed.launch` passes them."""
    ty = DTYPES[dtype]
    pointers = {
        "words_ptr": "*i32",
        "slice_ptr_ptr": "*i64",
        "row_ids_ptr": "*i32",
        "codebook_ptr": "*fp32",
        "x_ptr": f"*{ty}",
        "bias_ptr": "*fp32",
        "y_ptr": f"*{ty}",
        "w_ptr": f"*{ty}",
    }
    sig = {}
    for name in fn.arg_names:
        if name in consts:
            sig[name] = "constexpr"
        elif name in pointers:
            sig[name] = pointers[name]
        elif name.startswith("stride"):
            sig[name] = "i64"
        else:
            sig[name] = "i32"
    return sig


def _compile(fn, signature: dict, consts: dict, num_warps: int, arch: int) -> tuple[int, int, int, int]:
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    src = ASTSource(fn=fn, signature=signature, constexprs=consts)
    compiled = triton.compile(src, target=GPUTarget("cuda", arch, 32), options={"num_warps": num_warps})
    regs, spill_st, spill_ld = _ptxas_usage(compiled.asm["ptx"], arch)
    shared = int(getattr(compiled.metadata, "shared", 0))
    return regs, spill_st, spill_ld, shared


def run_check(
    dtypes: list[str] | None = None, widths=WIDTHS, archs=ARCHS, progress=None
) -> list[CompileResult]:
    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        raise RuntimeError("TRITON_INTERPRET=1 replaces compilation; unset it for the compile check")
    from dc_kernels.fixed.launch import aot_configs as fixed_configs
    from dc_kernels.huffman.launch import aot_configs as huffman_configs

    results = []
    dtype_map = {d: DTYPES[d] for d in dtypes or DTYPES}
    for fn, consts, warps, dtype, bb in fixed_configs(dtype_map, widths):
        for arch in archs:
            t0 = time.perf_counter()
            regs, st, ld, shared = _compile(fn, _signature(fn, dtype, consts), consts, warps, arch)
            res = CompileResult(
                fn.__name__, arch, dtype, consts["CODE_BITS"], consts["INDEX_BITS"], bb, consts["BLOCK"],
                warps, regs, st, ld, shared, round(time.perf_counter() - t0, 2),
            )  # fmt: skip
            results.append(res)
            if progress:
                progress(res)
    # The Huffman kernels: code/index bits 0, block = lanes per program.
    for fn, signature, consts, warps, dtype, bb in huffman_configs(dtype_map):
        for arch in archs:
            t0 = time.perf_counter()
            regs, st, ld, shared = _compile(fn, signature, consts, warps, arch)
            lanes = consts["ROWS"] * consts["NCB"]
            res = CompileResult(
                fn.__name__, arch, dtype, 0, 0, bb, lanes, warps, regs, st, ld, shared,
                round(time.perf_counter() - t0, 2),
            )  # fmt: skip
            results.append(res)
            if progress:
                progress(res)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dcomp check-kernels", description=doc_summary(__doc__))
    parser.add_argument("--json", action="store_true", help="print one JSON list instead of a table")
    parser.add_argument("--dtypes", nargs="+", choices=list(DTYPES), default=list(DTYPES))
    parser.add_argument(
        "--all-widths",
        action="store_true",
        help="every (code bits, index bits) in 1..8 x 1..8 instead of the representative "
        f"{WIDTHS} (about 2,300 compilations, ~12 minutes on 2 cores)",
    )
    args = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        print("check-kernels: unset TRITON_INTERPRET to compile", file=sys.stderr)
        return 2
    header = "kernel                 sm dtype     bits  BB block warps  regs spill_st spill_ld  smem"

    def show(r: CompileResult) -> None:
        print(
            f"{r.kernel:<22} {r.arch:>2} {r.dtype:<9} {r.code_bits}+{r.index_bits} {r.batch_bucket:>3} "
            f"{r.block:>5} {r.num_warps:>5} {r.registers:>5} {r.spill_stores:>8} {r.spill_loads:>8} "
            f"{r.shared_bytes:>5}",
            flush=True,
        )

    if not args.json:
        print(header, flush=True)
    widths = ALL_WIDTHS if args.all_widths else WIDTHS
    results = run_check(args.dtypes, widths, progress=None if args.json else show)
    if args.json:
        print(json.dumps([asdict(r) for r in results], indent=1))
    spills = [r for r in results if r.spill_stores or r.spill_loads]
    if spills:
        print(f"check-kernels: {len(spills)} configurations spill registers", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
