"""One warp issuing a loop alone: the cycles a pass of its body takes, replayed from the control
ptxas encoded in each instruction (`perf.cost.listing.Control`).

A warp issues in program order, at most one instruction a cycle. After an instruction it waits
that instruction's stall count: ptxas sets it so that the fixed-latency results the next
instructions read are ready (4-6 cycles on a dependent integer chain). An instruction whose wait
mask names a scoreboard waits until the variable-latency instructions that set it are done: their
result written (a load: the latency of the level it reads, from ``latency``) or their operands read
(``read_cycles``). A barrier (``BAR``) waits for the warp's shared-memory loads that set no
scoreboard, which ptxas leaves to the barrier, and then ``barrier_cycles``.

The body is replayed until a pass takes as long as the one before (a load issued late in one pass
and read in the next delays that one; a prefetch issued a pass ahead shows as no wait). Where
several warps share a scheduler, each fills the others' stalls and waits, so the pass is the
shortest a warp's iteration can take, not the scheduler's time for all of them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from perf.cost.listing import Instruction

SCOREBOARDS = 6
MAX_PASSES = 8


def pass_cycles(
    body: Sequence[Instruction],
    latency: Callable[[Instruction], float],
    read_cycles: float,
    barrier_cycles: float,
) -> float:
    """Cycles of a steady pass of ``body`` (the loop's instructions in program order, each with
    its control) issued by one warp alone; ``latency(instruction)``: cycles from the issue of an
    instruction that sets a write scoreboard until its result is written."""
    missing = [i.opcode for i in body if i.control is None]
    if missing or not body:
        raise ValueError(f"every instruction needs its control (nvdisasm -hex); missing on {missing[:3]}")
    ready = [0.0] * SCOREBOARDS  # when each scoreboard is released
    unsignalled = 0.0  # when the shared-memory loads that set no scoreboard are done
    clock, stall, previous = 0.0, 0, None
    for _ in range(MAX_PASSES):
        start = clock
        for ins in body:
            c = ins.control
            clock += max(stall, 1)
            for b in range(SCOREBOARDS):
                if c.wait_mask >> b & 1:
                    clock = max(clock, ready[b])
            if ins.base == "BAR":
                clock = max(clock, unsignalled) + barrier_cycles
            if c.write_barrier is not None:
                ready[c.write_barrier] = max(ready[c.write_barrier], clock + latency(ins))
            elif ins.base == "LDS":
                unsignalled = max(unsignalled, clock + latency(ins))
            if c.read_barrier is not None:
                ready[c.read_barrier] = max(ready[c.read_barrier], clock + read_cycles)
            stall = c.stall
        cycles = clock - start
        if cycles == previous:
            break
        previous = cycles
    return cycles
