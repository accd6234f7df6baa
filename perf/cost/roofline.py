"""A roofline prediction of one layer's compressed GEMV / small-batch GEMM from the compiled code.

For a layer, a kernel form (``fixed`` or ``huffman``) and a batch, the launches the dispatcher
makes are recorded (`perf.cost.launches`), compiled as they specialize (`perf.cost.compiled`)
and combined with the layer's exact layout summary (`perf.cost.layer_stats`):

* **work**: each program runs its loop trips (fixed: ``ceil(groups per row / chunks)`` of its
  block; Huffman: its stored step count), every warp issuing the loop body per trip and the code
  outside the loop once; summed over programs this gives the warp-instructions and the
  load/store-pipe instructions of the launch;
* **bytes** from HBM: the layout's exact bits as the kernel reads them, plus x and y;
* **L1 wavefronts** of the data-dependent gathers (x at decoded columns, the Huffman decode table,
  the codebook, each lane's stream words): a warp's access costs one wavefront per distinct
  128-byte line. The fixed-width form's x loads are counted exactly on its layout (its lanes are
  scheduled to read neighbouring columns); elsewhere the 32 lanes' addresses are modelled as
  independent uniform draws over the gathered array's lines (expected distinct lines
  ``L (1 - (1 - 1/L)^32)``);
* **latency**: an iteration cannot be shorter than one warp takes to issue its body alone, nor
  than its warps need to issue it together, nor than the latency its prefetched loads must cover
  over their lead. Where the kernel's model names the memory level of every global load in the
  loop (`KernelModel.loop_loads`), the first is the compiled body replayed with its scheduling
  control (`perf.cost.warp_issue`: the stall counts of its dependent instructions and its waits
  on loads at their levels' latencies); elsewhere it is the chain of dependent loads plus the
  issue cycles. A closing partial iteration after the loop (the Huffman kernel's ``K / 2`` and
  ``K / 4`` steps) is replayed the same way, not taken as its share of a whole one: it waits on
  its own barriers and gathers. The prefetched loads: the fixed-width kernel's next group, one
  iteration ahead;
  the Huffman lanes' stream words, four refills ahead, a line each. Before the loop a program
  waits on its first loads (the Huffman lanes' first steps, on their heads, overlap the last), and
  after it on the loads and atomics its stores need that it issues only then;
  programs run in ``SMs x resident CTAs`` slots, so the floor is the longest program's chain or
  the slots' average, whichever is longer (under-filled grids are latency-bound).

Bounds: issue = warp-instructions / (SMs used x 4 x clock), load/store pipe = its instructions /
(SMs used x 1 x clock), L1 = wavefronts / (SMs used x 1 x clock), HBM = bytes / bandwidth, each at
the machine's stated efficiency; the prediction is the launch overhead plus the binding bound.
cuBLAS fp16 on the dense layer is the dense bytes at 88% of the HBM bandwidth plus the same launch
overhead. The share of the byte limit is the time the layer's bytes take at the bandwidth a
device copy reaches over the predicted kernel time (launch overhead excluded). All of it is
**predicted from the compiled code, not measured**.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from math import factorial

import numpy as np

from dc_kernels.huffman.layout import HEAD_WORDS, ROWS_AHEAD
from perf.cost.compiled import KernelCost
from perf.cost.launches import Launch
from perf.cost.layer_stats import LayerStats
from perf.cost.machines import Machine
from perf.cost.sass_classes import sass_class
from perf.cost.warp_issue import pass_cycles

LINE_BYTES = 128
LANES = 32
MAX_ACCESS_BYTES = 16  # one lane's widest load (LDG.128)
BOUNDS = ("issue", "lsu", "l1", "hbm", "latency")


def distinct_lines(lines: float, draws: int = LANES) -> float:
    """Expected distinct lines among ``draws`` uniform draws over ``lines`` lines."""
    if lines <= 1:
        return 1.0
    return lines * (1.0 - (1.0 - 1.0 / lines) ** draws)


@dataclass(frozen=True)
class KernelModel:
    """What the roofline needs to know about a kernel family beyond its compiled code.

    ``trips(stats, constexprs)``: loop trips -> programs; ``chain``: memory levels (``l1``,
    ``l2``, ``hbm``) of the dependent loads on one iteration's critical path, or a function of
    ``(stats, constexprs)`` giving each level's count (possibly fractional: a load that misses one
    iteration in n); ``floor``: the level whose latency a one-iteration prefetch must cover, or
    such a function (the latency of loads issued ahead, per iteration of their lead; None: no
    prefetch); ``prologue``: the dependent loads before the loop; ``layout_bits``: the layout's
    ``bit_counts`` fields the kernel reads; ``copies(stats, launch, element_bytes)``: bytes a
    device copy made by the launcher before the launch moves (one more launch when not 0);
    ``closing_in_trips``: ``trips`` counts the closing partial iterations after the loop as
    fractions of one, so their code (`LoopCounts.closing`) is left out of the once-per-program
    count; ``epilogue(constexprs)``: the dependent memory trips after the loop that the store
    waits on (loads first issued there, atomics), one after another; ``prologue_overlaps``: the
    kernel issues every load before the loop ahead of its first wait on one, so the
    instructions before the loop issue while the prologue's trips are in flight (a program's
    start takes the longer of the two, not their sum); ``steps_before_last_trip(stats,
    constexprs)``: the loop steps a program runs before it waits on the prologue's last trip
    (which they overlap; a step lasts an iteration over ``K``); ``loop_loads(constexprs, opcode)``: the
    memory level (``l1``, ``l2``, ``hbm``) a global load of the loop body reads, None where the
    model cannot tell (the chain then stands in for the replayed body)."""

    trips: Callable[[LayerStats, dict], dict[float, int]]
    chain: tuple[str, ...] | Callable[[LayerStats, dict], dict[str, float]]
    floor: str | Callable[[LayerStats, dict], dict[str, float]] | None
    prologue: tuple[str, ...]
    layout_bits: Callable[[LayerStats], dict[str, int]]
    gathers: Callable[[LayerStats, Launch, int], dict[str, float]]
    copies: Callable[[LayerStats, Launch, int], int] | None = None
    closing_in_trips: bool = False
    epilogue: Callable[[dict], tuple[str, ...]] = lambda constexprs: ()
    prologue_overlaps: bool = False
    steps_before_last_trip: Callable[[LayerStats, dict], float] | None = None
    loop_loads: Callable[[dict, str], str | None] | None = None


def _fixed_trips(stats: LayerStats, constexprs: dict) -> dict[int, int]:
    chunks = int(constexprs["T"])
    trips: dict[int, int] = {}
    for groups, blocks in stats.fixed.block_groups.items():
        t = -(-groups // chunks)
        trips[t] = trips.get(t, 0) + blocks
    return trips


def _huffman_trips(stats: LayerStats, constexprs: dict) -> dict[float, int]:
    """Iterations of ``K`` steps (the decoder: one step) covering each program's steps, closing
    iterations of ``K / 2`` and ``K / 4`` steps counted as fractions of one (their compiled code,
    after the loop, is not counted again once per program: ``closing_in_trips``)."""
    from dc_kernels.huffman.launch import steps_granularity

    per = int(constexprs.get("K", 1))
    unit = steps_granularity(per)
    trips: dict[float, int] = {}
    for steps, programs in stats.huffman.program_steps.items():
        t = -(-steps // unit) * unit / per
        trips[t] = trips.get(t, 0) + programs
    return trips


def _huffman_bits_per_symbol(stats: LayerStats) -> float:
    return stats.huffman.total_bits / max(stats.huffman.symbols, 1)


def _huffman_chain(stats: LayerStats, constexprs: dict) -> dict[str, float]:
    """Per iteration of ``K`` steps: a table lookup a step (an L1 hit); the stream word a refill
    takes was loaded by the refill before from L1, where it was asked for `ROWS_AHEAD` refills
    earlier, off the chain (`_huffman_floor` bounds that lead)."""
    return {"l1": int(constexprs.get("K", 1))}


def _huffman_steps_on_heads(stats: LayerStats, constexprs: dict) -> float:
    """Steps a lane decodes from its head before a refill waits on its first word past it: the
    reader starts with the head's `HEAD_WORDS` words, refills after every two steps once 32 bits
    are read, and the second refill takes the word the first loaded, past the head; at the
    layer's mean bits per symbol."""
    pair_bits = 2 * _huffman_bits_per_symbol(stats)
    return 2 * math.ceil(32 * (HEAD_WORDS - 1) / pair_bits) if pair_bits else 0.0


def _huffman_floor(stats: LayerStats, constexprs: dict) -> dict[str, float]:
    """An iteration of ``K`` steps takes ``K x bits-per-symbol / 32`` stream words per lane. A
    warp's words are interleaved (word ``j`` of lane ``l`` at ``32 j + l``), so each word row is a
    128-byte line of its own, read from HBM into L1 by the prefetch of the refill `ROWS_AHEAD`
    refills before the one that loads it (`dc_kernels.huffman.kernels._refill`): the iteration
    lasts at least its words' HBM latency spread over that lead."""
    steps = int(constexprs.get("K", 1))
    return {"hbm": steps * _huffman_bits_per_symbol(stats) / 32 / ROWS_AHEAD}


def bank_conflict_wavefronts(lanes: int = LANES, banks: int = 32) -> float:
    """Expected wavefronts of a shared-memory gather of ``lanes`` independent uniformly random
    4-byte words over ``banks`` banks: the expected largest number of lanes on one bank (exact,
    from the multinomial distribution; lanes on the same word, which the hardware merges, are
    counted apart, so this is an upper estimate for narrow tables)."""

    def p_max_at_most(m: int) -> float:
        # P(every bank <= m) = lanes! / banks**lanes * [x**lanes] (sum_{j<=m} x**j / j!)**banks
        poly = np.zeros(lanes + 1)
        poly[: m + 1] = [1 / factorial(j) for j in range(min(m, lanes) + 1)]
        total = np.zeros(lanes + 1)
        total[0] = 1.0
        for _ in range(banks):
            total = np.convolve(total, poly)[: lanes + 1]
        return float(total[lanes] * factorial(lanes) / banks**lanes)

    return sum(1.0 - p_max_at_most(m) for m in range(lanes))


def _huffman_gathers(stats: LayerStats, launch: Launch, element_bytes: int) -> dict[str, float]:
    """L1 (and shared memory) wavefronts: the decode table (global, 4-byte entries) looked up every
    lane-step; the weights, one ``tl.gather`` from the on-chip codebook per ``K`` steps (the lanes
    of a warp hit at most ``k`` words: bank conflicts only beyond 32 entries) plus its refresh; x
    (on chip: bank conflicts of a second ``tl.gather`` over random columns, the refresh of the
    window it reads and the window's load; from memory: as `_x_wavefronts`); and the stream
    refills (the lines counted on the layout: `perf.cost.layer_stats.refill_lines`)."""
    h = stats.huffman
    consts = launch.constexprs
    steps_per_iteration = int(consts.get("K", 1))
    lanes = consts["ROWS"] * consts["PIECES"]
    trips = _huffman_trips(stats, consts)
    iterations = sum(t * n for t, n in trips.items())
    lane_steps = iterations * steps_per_iteration * lanes
    programs = sum(trips.values())
    window = int(consts.get("XW", 0))
    if window:
        x = (
            lane_steps / LANES * bank_conflict_wavefronts()
            + iterations * window * element_bytes / LINE_BYTES  # the refresh, once an iteration
            + programs * window * element_bytes / LINE_BYTES  # the window's load
        )
    else:
        x = _x_wavefronts(stats, launch, element_bytes)
    from dc_kernels.huffman.layout import CODEBOOK_INDICES as codebook_words

    weights = (
        lane_steps / LANES * max(1.0, h.codebook_size / 32) + iterations * codebook_words * 4 / LINE_BYTES
    )
    table_lines = (1 << h.table_bits) * 4 / LINE_BYTES
    return {
        "x": x,
        "table": lane_steps / LANES * distinct_lines(table_lines),
        "weights": weights,
        "stream": h.refill_lines,
    }


def _huffman_copies(stats: LayerStats, launch: Launch, element_bytes: int) -> int:
    """A batch above 1 is handed over transposed: x read, the padded copy written."""
    bb = int(launch.constexprs.get("BB", 1))
    return 0 if bb == 1 else stats.inputs * (bb + bb) * element_bytes


def _x_wavefronts(stats: LayerStats, launch: Launch, element_bytes: int) -> float:
    """L1 wavefronts of the x gather: one access of every batch column per kept weight."""
    args = dict(zip(launch.kernel.arg_names, launch.args))
    bb = int(launch.constexprs["BB"])
    column_major = args.get("stride_xb") == 1 and bb > 1
    if column_major:  # a column's BB values are contiguous: one or two 16-byte accesses
        accesses = -(-bb * element_bytes // MAX_ACCESS_BYTES)
        lines = stats.inputs * bb * element_bytes / LINE_BYTES
    else:  # each batch row is its own access over that row's lines
        accesses = bb
        lines = stats.inputs * element_bytes / LINE_BYTES
    return stats.nnz * accesses * distinct_lines(lines) / LANES


def _fixed_gathers(stats: LayerStats, launch: Launch, element_bytes: int) -> dict[str, float]:
    """The x loads counted exactly on the layout (`FixedStats.x_lines`: each warp's kept lanes
    read neighbouring columns), the groups (two 128-bit loads per lane and step, each a
    contiguous run of the warp), and the codebook loads of every slot when it is not a shuffle."""
    f = stats.fixed
    consts = launch.constexprs
    bb = int(consts["BB"]) if "BB" in consts else 0
    groups = f.steps * f.block_rows
    out = {"stream": groups * 2 * MAX_ACCESS_BYTES / LINE_BYTES}
    if bb:
        # x in pieces of at most 16 bytes per column (`dc_kernels.fixed.launch`): one load each.
        column_bytes = element_bytes * bb
        pieces = -(-column_bytes // MAX_ACCESS_BYTES)
        out["x"] = pieces * f.x_lines[min(column_bytes, MAX_ACCESS_BYTES)]
    if not consts.get("GATHER"):
        slots = groups * (256 // (f.code_bits + f.index_bits))
        out["codebook"] = slots / LANES * distinct_lines(f.codebook_size * 4 / LINE_BYTES)
    return out


def _fixed_bits(stats: LayerStats) -> dict[str, int]:
    return dict(stats.fixed.bit_counts)


def _huffman_bits(stats: LayerStats) -> dict[str, int]:
    # The code lengths are stored for rebuilding the table, the codebook for the module; the
    # kernel reads the table (which holds the weights) instead.
    unread = ("code_length_bits", "codebook_bits")
    return {k: v for k, v in stats.huffman.bit_counts.items() if k not in unread}


def _codes_rows(constexprs: dict) -> int:
    """Rows of one program of a dense-codes kernel."""
    return int(constexprs["R"] if "R" in constexprs else constexprs["BLOCK_N"])


def _codes_trips(stats: LayerStats, constexprs: dict) -> dict[int, int]:
    """Every program walks its rows' columns: the GEMV kernel ``G`` groups of 16 a trip over the
    whole groups (the rest is one step outside the loop), the others ``BLOCK_K`` columns a trip."""
    programs = -(-stats.outputs // _codes_rows(constexprs))
    if "G" in constexprs:
        trips = (stats.inputs // 16) // int(constexprs["G"])
    else:
        trips = -(-stats.inputs // int(constexprs["BLOCK_K"]))
    return {trips: programs}


def _codes_bits(stats: LayerStats) -> dict[str, int]:
    from dc_kernels.dense_codes.layout import row_stride
    from dc_kernels.planes import planes_bytes
    from perf.cost.launches import DENSE_CODE_WIDTHS

    width = DENSE_CODE_WIDTHS[0]
    return {
        "planes_bits": 8 * planes_bytes(stats.outputs * row_stride(stats.inputs), width),
        "codebook_bits": 32 * ((1 << width) - 1),
    }


def _codes_gathers(stats: LayerStats, launch: Launch, element_bytes: int) -> dict[str, float]:
    """The code stream (contiguous), x (each program's rows read all of it: per row with the GEMV
    kernel, per program and batch column with the others) and the table (a warp's lookups of one
    value each fall in the table's few lines: one wavefront per 32 codes)."""
    consts = launch.constexprs
    codes = stats.outputs * stats.inputs
    out = {"stream": sum(_codes_bits(stats).values()) / 8 / LINE_BYTES, "codebook": codes / LANES}
    x_row = stats.inputs * element_bytes / LINE_BYTES
    if "G" in consts:
        out["x"] = stats.outputs * x_row
    else:
        out["x"] = -(-stats.outputs // _codes_rows(consts)) * x_row * int(consts["BB"])
    return out


def _fixed_epilogue(constexprs: dict) -> tuple[str, ...]:
    """The GEMV/GEMM kernel (the decoder stores inside its loop): the rows' places, loaded after
    the loop (a register less across it) from L2, where the program asked for them before the
    loop, then the bias at them from HBM."""
    if "FRESH_PID" not in constexprs:
        return ()
    return ("l2", "hbm") if constexprs.get("HAS_BIAS") else ("l2",)


def _huffman_epilogue(constexprs: dict) -> tuple[str, ...]:
    """The fused kernel (the decoder stores inside its loop): with x read from memory (``XW`` 0)
    the rows' places and the bias at them, loaded after the loop (batch 1 loads them before it);
    column slabs: then the count's atomic add and the partial sums read from L2 (`_slab_sums`)."""
    if "XW" not in constexprs:
        return ()
    rows = () if int(constexprs["XW"]) > 0 else ("hbm", "hbm") if constexprs.get("HAS_BIAS") else ("hbm",)
    return rows + (("l2", "l2") if int(constexprs.get("SLABS", 1)) > 1 else ())


def _fixed_loop_loads(constexprs: dict, opcode: str) -> str | None:
    """Batch 1, float16 x: the next group's words (128-bit loads, first read from HBM, used an
    iteration later) and x at the decoded columns (16-bit loads, L2 hits)."""
    if int(constexprs.get("BB", 1)) != 1:
        return None
    return {"LDG.E.128": "hbm", "LDG.E.U16": "l2"}.get(opcode.replace(".CONSTANT", ""))


def _huffman_loop_loads(constexprs: dict, opcode: str) -> str | None:
    """x on chip (batch 1): every global load of the loop is a decode-table lookup or a stream
    word asked into L1 beforehand (`_huffman_floor` bounds that lead): L1 hits."""
    return "l1" if int(constexprs.get("XW", 0)) > 0 and opcode.startswith("LDG") else None


KERNEL_MODELS: dict[str, KernelModel] = {
    # The next group's words are loaded one iteration ahead (HBM latency per iteration at least);
    # the x loads at the decoded columns (L2 hits: x is shared by all programs) are consumed in
    # the same iteration; before the loop: the chunks' first groups, whose addresses need no
    # load, together with the block's group count and the start columns (one HBM latency).
    "fixed": KernelModel(
        _fixed_trips,
        ("l2",),
        "hbm",
        ("hbm",),
        _fixed_bits,
        _fixed_gathers,
        epilogue=_fixed_epilogue,
        loop_loads=_fixed_loop_loads,
    ),
    # Each iteration: K steps of table lookups and refills (`_huffman_chain`), at least the HBM
    # latency of its stream words over the refills' lead (`_huffman_floor`); before the loop: two
    # HBM latencies, one after the other: the warps' word offsets (beside them the lanes' heads,
    # whose addresses need no load, the spans, x and the codebook, and the decode table asked
    # into L1 by `dc_kernels.huffman.kernels._warm_table`), then the first word rows past the
    # heads, at places the offsets give, which the second refill waits on: the steps before it,
    # decoded from the heads, overlap that trip (`_huffman_steps_on_heads`).
    "huffman": KernelModel(
        _huffman_trips,
        _huffman_chain,
        _huffman_floor,
        ("hbm", "hbm"),
        _huffman_bits,
        _huffman_gathers,
        _huffman_copies,
        closing_in_trips=True,
        epilogue=_huffman_epilogue,
        prologue_overlaps=True,
        steps_before_last_trip=_huffman_steps_on_heads,
        loop_loads=_huffman_loop_loads,
    ),
    # Each trip loads its codes (no prefetch: an HBM latency) and then looks them up in the L1
    # table; x (an L2 hit) does not depend on them; nothing is loaded before the loop but the
    # bias, nothing after it.
    "dense_codes": KernelModel(_codes_trips, ("hbm", "l1"), None, (), _codes_bits, _codes_gathers),
}


@dataclass(frozen=True)
class LaunchPrediction:
    """One launch's work and bounds (seconds, each at its stated efficiency)."""

    programs: int
    ctas_per_sm: int
    waves: float
    trips_max: float
    warp_instructions: float
    lsu_instructions: float
    l1_wavefronts: float
    layout_bytes: int
    x_bytes: int
    y_bytes: int
    bounds_s: dict[str, float]
    extra_launches: int = 0  # device copies the launcher makes before the kernel

    @property
    def total_bytes(self) -> int:
        return self.layout_bytes + self.x_bytes + self.y_bytes


def _level_cycles(machine: Machine) -> dict[str, int]:
    """A load's latency at each memory level."""
    m = machine
    return {"l1": m.l1_latency_cycles, "l2": m.l2_latency_cycles, "hbm": m.hbm_latency_cycles}


def _latency_cycles(machine: Machine, levels) -> float:
    """Cycles of dependent loads: a sequence of levels, or a mapping level -> count."""
    latency = _level_cycles(machine)
    counts = levels if isinstance(levels, dict) else {level: levels.count(level) for level in set(levels)}
    return sum(latency[level] * n for level, n in counts.items())


def _replay(machine: Machine, model: KernelModel, body, consts: dict) -> float | None:
    """Cycles of a pass of ``body`` for a warp issuing alone (`perf.cost.warp_issue`), or None
    where the model cannot name the level of every global load in it, where it has no control (a
    listing without ``-hex``), or where it waits on a scoreboard's count (``DEPBAR``: the replay
    keeps when a scoreboard is released, not how many loads hold it)."""
    if model.loop_loads is None or not body or any(i.control is None or i.base == "DEPBAR" for i in body):
        return None
    levels = _level_cycles(machine)
    global_loads = {i.opcode for i in body if i.base == "LDG" and i.control.write_barrier is not None}
    named = {op: model.loop_loads(consts, op) for op in global_loads}
    if any(level is None for level in named.values()):
        return None

    def latency(ins) -> float:
        if ins.base == "LDG":
            return levels[named[ins.opcode]]
        if ins.base in ("LDS", "SHFL"):
            return machine.shared_latency_cycles
        return machine.other_latency_cycles

    return pass_cycles(body, latency, machine.operand_read_cycles, machine.barrier_cycles)


def warp_alone_cycles(machine: Machine, model: KernelModel, counts, consts: dict) -> float | None:
    """Cycles of one source iteration of the loop for a warp issuing alone (`_replay` of its
    body), or None where the body cannot be replayed."""
    cycles = _replay(machine, model, counts.body, consts)
    return None if cycles is None else cycles / counts.unroll


def closing_cycles(machine: Machine, model: KernelModel, counts, consts: dict) -> list[tuple[float, float]]:
    """(share of an iteration, cycles of a warp issuing it alone) of each closing partial
    iteration after the loop (`LoopCounts.closing_bodies`; its share: its multiply-adds over the
    loop's), largest first; empty where one cannot be replayed. A closing iteration of ``K / 4``
    steps still waits on its barriers and its on-chip gathers like a whole one: replayed, NT-LSTM's
    (``K`` = 16) take 933 and 511 cycles where a half and a quarter of its iteration are 836 and
    418."""
    per_iteration = counts.per_iteration.get("ffma", 0) * counts.unroll
    parts = []
    for body in counts.closing_bodies:
        cycles = _replay(machine, model, body, consts)
        if cycles is None or not per_iteration:
            return []
        parts.append((sum(sass_class(i.opcode) == "ffma" for i in body) / per_iteration, cycles))
    return sorted(parts, reverse=True)


def _trip_cycles(trips: float, iteration: float, closings: list[tuple[float, float]], floor: float) -> float:
    """Cycles of a program's ``trips`` iterations: the whole ones at ``iteration`` each, the rest
    as the closing iterations that make it up (`closing_cycles`, each at least its share of the
    iteration's ``floor``: issue and prefetch), or its share of an iteration where none is known."""
    whole = math.floor(trips + 1e-9)
    rest, cycles = trips - whole, whole * iteration
    for share, closing in closings:
        if rest >= share - 1e-9:
            rest -= share
            cycles += max(closing, share * floor)
    return cycles + max(rest, 0.0) * iteration


def predict_launch(
    machine: Machine,
    stats: LayerStats,
    model: KernelModel,
    launch: Launch,
    cost: KernelCost,
    element_bytes: int,
) -> LaunchPrediction:
    """The bounds of one launch of ``model``'s kernel on ``machine`` (see the module docstring)."""
    if cost.counts is None:
        raise ValueError(f"{cost.kernel}: the compiled code has no loop to model")
    counts = cost.counts
    consts = launch.constexprs
    programs = int(launch.grid[0])
    trips = model.trips(stats, consts)
    total_trips = sum(t * n for t, n in trips.items())
    trips_max = max(trips, default=0)
    warps = cost.num_warps
    outside, outside_lsu = counts.outside_instructions, counts.outside_lsu
    if model.closing_in_trips:
        outside, outside_lsu = outside - counts.closing_instructions, outside_lsu - counts.closing_lsu
    warp_instructions = warps * (programs * outside + total_trips * counts.instructions)
    lsu = warps * (programs * outside_lsu + total_trips * counts.lsu)
    wavefronts = sum(model.gathers(stats, launch, element_bytes).values())
    layout_bytes = (sum(model.layout_bits(stats).values()) + 7) // 8
    bb_rows = int(consts.get("BB", 1))
    batch = int(dict(zip(launch.kernel.arg_names, launch.args)).get("batch", bb_rows) or bb_rows)
    x_bytes = batch * stats.inputs * element_bytes
    y_bytes = batch * stats.outputs * element_bytes
    copy_bytes = model.copies(stats, launch, element_bytes) if model.copies else 0
    sms_used = max(1, min(machine.sms, programs))
    clock = machine.clock_hz
    eff = machine.pipe_efficiency
    ctas = max(cost.ctas_per_sm, 1)
    slots = machine.sms * ctas
    per_warp = -(-warps // machine.issue_per_sm_clock)  # issue cycles of an instruction of every warp
    issue_cycles = counts.instructions * per_warp
    chain = model.chain(stats, consts) if callable(model.chain) else model.chain
    floor = model.floor(stats, consts) if callable(model.floor) else (model.floor,) if model.floor else ()
    warp_alone = warp_alone_cycles(machine, model, counts, consts)
    if warp_alone is None:
        warp_alone = _latency_cycles(machine, chain) + issue_cycles
    iteration_floor = max(issue_cycles, _latency_cycles(machine, floor))
    iteration = max(warp_alone, iteration_floor)
    closings = closing_cycles(machine, model, counts, consts) if model.closing_in_trips else []
    program = {t: _trip_cycles(t, iteration, closings, iteration_floor) for t in trips}
    start = _latency_cycles(machine, model.prologue)
    if model.steps_before_last_trip is not None and model.prologue:
        step = iteration / int(consts.get("K", 1))
        overlapped = model.steps_before_last_trip(stats, consts) * step
        start -= min(_latency_cycles(machine, model.prologue[-1:]), overlapped)
    if model.prologue_overlaps:  # the instructions before the loop issue during its trips
        before = counts.before_instructions * per_warp
        start = max(start, before) - before
    once = (  # a program's cycles outside its iterations
        start + _latency_cycles(machine, model.epilogue(consts)) + outside * per_warp
    )
    longest = max(program.values(), default=0.0)
    all_programs = sum(program[t] * n for t, n in trips.items())
    latency_cycles = max(longest + once, (all_programs + programs * once) / slots)
    bounds = {
        "issue": warp_instructions / (sms_used * machine.issue_per_sm_clock * clock * eff),
        "lsu": lsu / (sms_used * machine.lsu_per_sm_clock * clock * eff),
        "l1": wavefronts / (sms_used * machine.l1_wavefronts_per_sm_clock * clock * eff),
        "hbm": (layout_bytes + x_bytes + y_bytes + copy_bytes)
        / (machine.hbm_tb_s * 1e12 * machine.hbm_efficiency),
        "latency": latency_cycles / clock,
    }
    return LaunchPrediction(
        programs=programs,
        ctas_per_sm=ctas,
        waves=programs / slots,
        trips_max=trips_max,
        warp_instructions=warp_instructions,
        lsu_instructions=lsu,
        l1_wavefronts=wavefronts,
        layout_bytes=layout_bytes,
        x_bytes=x_bytes,
        y_bytes=y_bytes,
        bounds_s=bounds,
        extra_launches=1 if copy_bytes else 0,
    )


def cublas_fp16_us(machine: Machine, stats: LayerStats, batch: int) -> float:
    """cuBLAS fp16 on the dense layer: its bytes at the machine's HBM efficiency, plus a launch."""
    dense = 2 * (stats.inputs * stats.outputs + batch * (stats.inputs + stats.outputs))
    return machine.launch_us + dense / (machine.hbm_tb_s * 1e12 * machine.hbm_efficiency) * 1e6


def combine(
    machine: Machine,
    stats: LayerStats,
    form: str,
    batch: int,
    launches: list[LaunchPrediction],
    dense_gemm: bool = False,
) -> dict:
    """One table row: the launches' bounds summed (they run one after the other), the binding
    bound, the predicted time, cuBLAS fp16 beside it, the speedup and the share of the byte limit.
    ``dense_gemm``: the launches decode the weight and cuBLAS multiplies it afterwards (its time as
    `cublas_fp16_us`, launch included, added to the prediction; its bytes to the byte limit)."""
    bounds = {b: sum(p.bounds_s[b] for p in launches) * 1e6 for b in BOUNDS}
    binding = max(bounds, key=bounds.get)
    kernel_us = bounds[binding]
    predicted = kernel_us + machine.launch_us * (len(launches) + sum(p.extra_launches for p in launches))
    total_bytes = sum(p.total_bytes for p in launches)
    cublas = cublas_fp16_us(machine, stats, batch)
    if dense_gemm:
        predicted += cublas
        total_bytes += 2 * (stats.inputs * stats.outputs + batch * (stats.inputs + stats.outputs))
        kernel_us += cublas - machine.launch_us
    byte_limit_us = total_bytes / (machine.copy_tb_s * 1e12) * 1e6
    warp_instructions = sum(p.warp_instructions for p in launches)
    first = launches[0]
    return {
        "machine": machine.key,
        "layer": stats.name,
        "inputs": stats.inputs,
        "outputs": stats.outputs,
        "density": stats.density,
        "kept_weights": stats.nnz,
        "form": form,
        "batch": batch,
        "launches": len(launches) + dense_gemm,
        "programs": first.programs,
        "ctas_per_sm": first.ctas_per_sm,
        "waves": round(first.waves, 3),
        "trips_max": first.trips_max,
        "layout_bytes": sum(p.layout_bytes for p in launches),
        "x_bytes": sum(p.x_bytes for p in launches),
        "y_bytes": sum(p.y_bytes for p in launches),
        "bits_per_kept_weight": round(8 * first.layout_bytes / max(stats.nnz, 1), 3),
        "warp_instructions": round(warp_instructions),
        "warp_instructions_per_kept_weight": round(warp_instructions / max(stats.nnz, 1), 4),
        "warp_instructions_per_kept_weight_column": round(warp_instructions / max(stats.nnz, 1) / batch, 4),
        "l1_wavefronts_per_kept_weight": round(sum(p.l1_wavefronts for p in launches) / max(stats.nnz, 1), 4),
        **{f"{b}_us": round(v, 3) for b, v in bounds.items()},
        "bound": binding,
        "predicted_us": round(predicted, 3),
        "cublas_fp16_us": round(cublas, 3),
        "predicted_speedup": round(cublas / predicted, 4),
        "byte_limit_us": round(byte_limit_us, 3),
        "byte_limit_share": round(byte_limit_us / kernel_us, 4) if kernel_us > 0 else math.nan,
    }
