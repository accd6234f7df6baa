"""Compile a recorded launch for an architecture and count its main loop's SASS.

`compile_launch` specializes the launch as Triton's JIT would (`perf.cost.specialize`) and runs
`triton.compile` for ``sm_<arch>`` (cached like any Triton build); the cubin is what a GPU would
run. `analyze` disassembles it with ``nvdisasm -hex`` (each instruction with its scheduling
control), finds the main loop from the control flow (`perf.cost.cfg`) and counts its instructions
by class. ptxas may unroll a small loop; the factor
is the ratio of the loop's memory operations in SASS to those of the same loop in the PTX (ptxas
keeps them one-for-one), and counts are per iteration of the source loop. Registers and the local
memory frame come from the cubin's ``.nv.info`` attributes; spill bytes are the widths of the
local-memory loads and stores (``LDL``/``STL``) in the SASS.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import struct
import subprocess
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from perf.cost.cfg import control_flow
from perf.cost.errors import CompilerToolsMissing, ListingError
from perf.cost.listing import FLOW_BRANCH, FLOW_CALL, Instruction, Listing, parse_ptx, parse_sass
from perf.cost.machines import arch_limits
from perf.cost.sass_classes import class_sort_key, is_lsu, ptx_memory_op, sass_class, sass_memory_op
from perf.cost.specialize import Specialization, specialize
from perf.cost.tools import check_arch, find_tool

_EIATTR_REGCOUNT = 0x2F
_EIATTR_FRAME_SIZE = 0x11
_EIFMT_SVAL = 4
_EIFMT_SIZES = {1: 2, 2: 4, 3: 4}  # attribute bytes of the fixed-size formats (none, byte, half)
_NVDISASM_TIMEOUT_S = 120


@dataclass(frozen=True)
class CompiledKernel:
    """One configuration compiled for ``sm_<arch>``: the cubin, its PTX, shared memory bytes,
    warps per CTA and the specialization it was compiled with."""

    name: str
    arch: int
    cubin: bytes
    ptx: str
    shared_bytes: int
    num_warps: int
    specialization: Specialization


@dataclass(frozen=True)
class LoopCounts:
    """Instructions by class: per iteration of the main loop (source iterations: divided by the
    unroll factor) and outside it, once per program (prologue, epilogue, other code).
    ``closing``: the part of ``outside`` in blocks after the loop that some programs skip and
    that multiply (a closing partial iteration: the Huffman kernel's ``K / 2`` and ``K / 4``
    steps, which its trips count as fractions of an iteration; masked loads and stores behind a
    branch hold no multiply); ``before``: the part of ``outside`` placed before the loop (the
    prologue); ``body``: the loop's instructions in program order, with their control (what
    `perf.cost.warp_issue` replays); ``closing_bodies``: the instructions of each block counted in
    ``closing``, in program order."""

    per_iteration: dict[str, float]
    outside: dict[str, int]
    unroll: int
    unroll_ratio: float
    loops_found: int
    depth: int
    internal_branches: int
    closing: dict[str, int] = field(default_factory=dict)
    before: dict[str, int] = field(default_factory=dict)
    body: tuple[Instruction, ...] = field(default=(), repr=False)
    closing_bodies: tuple[tuple[Instruction, ...], ...] = field(default=(), repr=False)

    @property
    def instructions(self) -> float:
        return sum(self.per_iteration.values())

    @property
    def lsu(self) -> float:
        return _lsu(self.per_iteration)

    @property
    def outside_instructions(self) -> int:
        return sum(self.outside.values())

    @property
    def outside_lsu(self) -> int:
        return _lsu(self.outside)

    @property
    def closing_instructions(self) -> int:
        return sum(self.closing.values())

    @property
    def closing_lsu(self) -> int:
        return _lsu(self.closing)

    @property
    def before_instructions(self) -> int:
        return sum(self.before.values())


def _lsu(classes: dict) -> float:
    """The load/store-pipe instructions among ``classes`` (class -> count)."""
    return sum(v for k, v in classes.items() if is_lsu(k))


@dataclass(frozen=True)
class KernelCost:
    """The compiled code's cost figures of one configuration (see `analyze`)."""

    kernel: str
    arch: int
    num_warps: int
    registers: int
    frame_bytes: int
    spill_store_bytes: int
    spill_load_bytes: int
    shared_bytes: int
    ctas_per_sm: int
    counts: LoopCounts | None
    items_per_iteration: int
    batch_columns: int
    specialization: dict = field(default_factory=dict)

    @property
    def warps_per_sm(self) -> int:
        return self.ctas_per_sm * self.num_warps

    @property
    def warp_instructions_per_iteration(self) -> float | None:
        return None if self.counts is None else self.counts.instructions * self.num_warps

    @property
    def warp_instructions_per_item(self) -> float | None:
        """Warp-instructions the main loop issues per item it handles (a kept weight, or a symbol)."""
        per_iteration = self.warp_instructions_per_iteration
        return None if per_iteration is None else per_iteration / self.items_per_iteration

    @property
    def warp_instructions_per_item_column(self) -> float | None:
        """The same per batch column (divided by the batch bucket)."""
        per_item = self.warp_instructions_per_item
        return None if per_item is None else per_item / max(self.batch_columns, 1)

    def as_dict(self) -> dict:
        """Flat JSON-ready figures (classes per iteration under ``loop_<class>``)."""
        out = {
            "kernel": self.kernel,
            "arch": self.arch,
            "num_warps": self.num_warps,
            "registers": self.registers,
            "frame_bytes": self.frame_bytes,
            "spill_store_bytes": self.spill_store_bytes,
            "spill_load_bytes": self.spill_load_bytes,
            "shared_bytes": self.shared_bytes,
            "ctas_per_sm": self.ctas_per_sm,
            "warps_per_sm": self.warps_per_sm,
            "items_per_iteration": self.items_per_iteration,
            "batch_columns": self.batch_columns,
            "warp_instructions_per_item": _round(self.warp_instructions_per_item),
            "warp_instructions_per_item_column": _round(self.warp_instructions_per_item_column),
            **self.specialization,
        }
        c = self.counts
        if c is not None:
            out.update(
                loop_instructions=_round(c.instructions),
                loop_lsu=_round(c.lsu),
                unroll=c.unroll,
                unroll_ratio=_round(c.unroll_ratio),
                loops_found=c.loops_found,
                loop_depth=c.depth,
                loop_internal_branches=c.internal_branches,
                outside_instructions=c.outside_instructions,
                outside_lsu=c.outside_lsu,
                closing_instructions=c.closing_instructions,
                before_instructions=c.before_instructions,
            )
            out.update({f"loop_{k}": _round(v) for k, v in c.per_iteration.items()})
        return out


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def compile_launch(kernel, args: tuple, kwargs: dict, arch: int) -> CompiledKernel:
    """`triton.compile` of the launch ``kernel[grid](*args, **kwargs)`` for ``sm_<arch>``."""
    check_arch(arch)
    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        raise RuntimeError("TRITON_INTERPRET=1 replaces compilation; unset it to compile kernels")
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    spec = specialize(kernel, args, kwargs, arch)
    source = ASTSource(fn=kernel, signature=spec.signature, constexprs=spec.constexprs, attrs=spec.attrs)
    compiled = triton.compile(source, target=GPUTarget("cuda", arch, 32), options=spec.options)
    return CompiledKernel(
        name=kernel.__name__,
        arch=arch,
        cubin=compiled.asm["cubin"],
        ptx=compiled.asm["ptx"],
        shared_bytes=int(getattr(compiled.metadata, "shared", 0)),
        num_warps=int(compiled.metadata.num_warps),
        specialization=spec,
    )


def sass_cache_dir() -> Path:
    """Where disassemblies are cached: ``$DCOMP_CACHE_DIR/sass`` (default ``~/.cache/dcomp``)."""
    root = os.environ.get("DCOMP_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "dcomp")
    return Path(root) / "sass"


def disassemble(cubin: bytes) -> str:
    """``nvdisasm -c -hex`` of a cubin (without data-flow analysis unless an indirect branch needs
    it), cached by the hash of the cubin and of the tool (nvdisasm takes ~0.2 s a call to start)."""
    nvdisasm = find_tool("nvdisasm")
    tool = os.stat(nvdisasm)
    key = hashlib.sha256(cubin + f"{nvdisasm}:{tool.st_size}:{tool.st_mtime_ns}:hex".encode()).hexdigest()
    cached = sass_cache_dir() / f"{key[:40]}.sass.gz"
    if cached.is_file():
        with contextlib.suppress(OSError, EOFError, gzip.BadGzipFile):
            return gzip.decompress(cached.read_bytes()).decode()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "kernel.cubin")
        with open(path, "wb") as f:
            f.write(cubin)
        text = _run([nvdisasm, "-c", "-hex", "-ndf", path])
        if any(op in text for op in (" BRX ", " JMX ")):
            text = _run([nvdisasm, "-c", "-hex", path])
    with contextlib.suppress(OSError):
        cached.parent.mkdir(parents=True, exist_ok=True)
        partial = cached.with_suffix(f".{os.getpid()}.tmp")
        partial.write_bytes(gzip.compress(text.encode(), compresslevel=1))
        partial.replace(cached)
    return text


def _run(command: list[str]) -> str:
    try:
        proc = subprocess.run(
            command, capture_output=True, text=True, timeout=_NVDISASM_TIMEOUT_S, check=False
        )
    except OSError as exc:
        raise CompilerToolsMissing(f"cannot run {command[0]}: {exc}") from exc
    if proc.returncode != 0:
        raise ListingError(f"{os.path.basename(command[0])} failed: {proc.stderr.strip()[:500]}")
    return proc.stdout


def cubin_resources(cubin: bytes) -> tuple[int, int]:
    """(registers per thread, local-memory frame bytes) from the cubin's ``.nv.info`` section."""
    if cubin[:4] != b"\x7fELF" or cubin[4] != 2:
        raise ListingError("not a 64-bit ELF cubin")
    shoff = struct.unpack_from("<Q", cubin, 0x28)[0]
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", cubin, 0x3A)

    def section(i: int) -> tuple[str, int, int]:
        name, _, _, _, offset, size = struct.unpack_from("<IIQQQQ", cubin, shoff + i * shentsize)
        return name, offset, size

    strings = section(shstrndx)[1]
    values: dict[int, int] = {}
    for i in range(shnum):
        name_offset, offset, size = section(i)
        name = cubin[strings + name_offset : cubin.index(b"\0", strings + name_offset)]
        if name != b".nv.info":
            continue
        p = offset
        while p + 4 <= offset + size:
            fmt, attr, length = cubin[p], cubin[p + 1], struct.unpack_from("<H", cubin, p + 2)[0]
            if fmt != _EIFMT_SVAL:
                if fmt not in _EIFMT_SIZES:
                    break
                p += _EIFMT_SIZES[fmt]
                continue
            if attr in (_EIATTR_REGCOUNT, _EIATTR_FRAME_SIZE) and length >= 8:
                values[attr] = struct.unpack_from("<I", cubin, p + 8)[0]
            p += 4 + length
    if _EIATTR_REGCOUNT not in values:
        raise ListingError("the cubin's .nv.info section has no register count")
    return values[_EIATTR_REGCOUNT], values.get(_EIATTR_FRAME_SIZE, 0)


def analyze(compiled: CompiledKernel, items_per_iteration: int, batch_columns: int = 1) -> KernelCost:
    """Registers, spills, occupancy and the main loop's instructions per item of ``compiled``;
    ``items_per_iteration``: the kept weights (or symbols) one iteration of its source loop
    handles; ``batch_columns``: the batch bucket (for the per-column figure)."""
    if items_per_iteration < 1:
        raise ValueError(f"items_per_iteration must be >= 1, got {items_per_iteration}")
    sass = parse_sass(disassemble(compiled.cubin), compiled.name)
    registers, frame = cubin_resources(compiled.cubin)
    spill_store = sum(_local_bytes(i.opcode) for i in sass.instructions if i.base == "STL")
    spill_load = sum(_local_bytes(i.opcode) for i in sass.instructions if i.base == "LDL")
    ctas = arch_limits(compiled.arch).resident_ctas(registers, compiled.num_warps, compiled.shared_bytes)
    spec = compiled.specialization
    return KernelCost(
        kernel=compiled.name,
        arch=compiled.arch,
        num_warps=compiled.num_warps,
        registers=registers,
        frame_bytes=frame,
        spill_store_bytes=spill_store,
        spill_load_bytes=spill_load,
        shared_bytes=compiled.shared_bytes,
        ctas_per_sm=ctas,
        counts=loop_counts(sass, parse_ptx(compiled.ptx, compiled.name)),
        items_per_iteration=items_per_iteration,
        batch_columns=batch_columns,
        specialization={
            "specialization": spec.source,
            "constant_one": ",".join(spec.constant_one()),
            "divisible_by_16": ",".join(spec.divisible()),
        },
    )


def _local_bytes(opcode: str) -> int:
    return int(sass_class(opcode.replace("LDL", "LDG").replace("STL", "STG")).split(".")[1]) // 8


def loop_counts(sass: Listing, ptx: Listing | None = None) -> LoopCounts | None:
    """Instructions by class of the SASS main loop per source iteration and outside it; None
    when the code has no loop. ``ptx``: the same function's PTX, for the unroll factor."""
    flow = control_flow(sass)
    loop = flow.main_loop()
    if loop is None:
        return None
    in_loop = set(loop.instructions)
    loop_classes = Counter(sass_class(sass.instructions[i].opcode) for i in loop.instructions)
    for i in loop.instructions:
        ins = sass.instructions[i]
        if ins.flow == FLOW_CALL and ins.target in sass.labels:
            loop_classes.update(_callee_classes(sass, sass.labels[ins.target]))
    outside = Counter(
        sass_class(sass.instructions[i].opcode) for i in flow.reachable_instructions() if i not in in_loop
    )
    first = min(loop.instructions)  # the loop's first instruction in program order
    before = Counter(
        sass_class(sass.instructions[i].opcode) for i in flow.reachable_instructions() if i < first
    )
    closing = Counter()
    closing_bodies = []
    for b in sorted(flow.skippable_after(loop), key=lambda b: flow.blocks[b].start):
        block = sass.instructions[flow.blocks[b].start : flow.blocks[b].end]
        classes = [sass_class(ins.opcode) for ins in block]
        if "ffma" in classes:
            closing.update(classes)
            closing_bodies.append(tuple(block))
    unroll, ratio = _unroll(sass, loop.instructions, ptx)
    branches = sum(
        1
        for i in loop.instructions
        if sass.instructions[i].flow == FLOW_BRANCH and sass.instructions[i].conditional
    )
    per_iteration = {k: loop_classes[k] / unroll for k in sorted(loop_classes, key=class_sort_key)}
    return LoopCounts(
        per_iteration=per_iteration,
        outside={k: outside[k] for k in sorted(outside, key=class_sort_key)},
        unroll=unroll,
        unroll_ratio=ratio,
        loops_found=len(flow.loops),
        depth=loop.depth,
        internal_branches=max(0, branches - 1),
        closing={k: closing[k] for k in sorted(closing, key=class_sort_key)},
        before={k: before[k] for k in sorted(before, key=class_sort_key)},
        body=tuple(sass.instructions[i] for i in sorted(loop.instructions)),
        closing_bodies=tuple(closing_bodies),
    )


def _callee_classes(sass: Listing, entry: int) -> Counter:
    """Instruction classes of a called subroutine (every reachable instruction once)."""
    flow = control_flow(sass, entry)
    return Counter(sass_class(sass.instructions[i].opcode) for i in flow.reachable_instructions())


def _unroll(sass: Listing, loop: tuple[int, ...], ptx: Listing | None) -> tuple[int, float]:
    """(unroll factor, measured ratio) of the SASS main loop against the PTX main loop: unrolling
    multiplies every kind of memory operation by the factor, while ptxas may merge or drop loads
    (never shuffles or barriers), so the ratio is the largest over the kinds the PTX loop holds;
    1 when either loop has no memory operations (or no PTX is given)."""
    if ptx is None:
        return 1, 1.0
    ptx_loop = control_flow(ptx).main_loop()
    if ptx_loop is None:
        return 1, 1.0
    sass_ops = Counter(sass_memory_op(sass.instructions[i].opcode) for i in loop)
    ptx_ops = Counter(ptx_memory_op(ptx.instructions[i].opcode) for i in ptx_loop.instructions)
    ratios = [sass_ops[kind] / n for kind, n in ptx_ops.items() if kind is not None]
    if not ratios or not max(ratios):
        return 1, 1.0
    ratio = max(ratios)
    return max(1, round(ratio)), ratio
