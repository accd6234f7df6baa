"""Cycle timing of one pass of EIE: broadcast of the non-zero activations into the PEs' FIFOs and
the PEs working through their columns, computed exactly with vectorized max-plus recurrences.

Microarchitecture modelled (cycles are numbered from 0 at the start of the pass):

* Leading non-zero detection (LNZD). The input vector is scanned in groups of N activations
  (group g = inputs gN .. gN+N-1, one per PE). The LNZD emits one non-zero per cycle; moving on
  to the next group is free after the last non-zero of a group, while an all-zero group costs
  one cycle. The tree has ``ceil(log4 N)`` registered levels, so the first group is examined
  in cycle ``lnzd_latency``. After finding a non-zero, the LNZD holds it until it can be
  broadcast (it does not scan ahead). Non-zero m is therefore ready at
  ``r_m = b_{m-1} + 1 + e_m`` (``e_m`` all-zero groups between it and its predecessor).
* Broadcast. Non-zero m is broadcast in cycle ``b_m >= r_m`` and written into every PE's FIFO at
  the end of that cycle, unless some FIFO is full at the start of the cycle (a pop in the same
  cycle does not free the slot in time: the full flag is registered). A FIFO of depth D holding
  items m-D .. m-1 is full until item m-D has been popped, so ``b_m >= max_p s^p_{m-D} + 1``.
* PE. Item m is popped from PE p's FIFO in cycle ``s^p_m``, when its pointer stage reads p[j]
  and p[j+1] from the even and odd banks in one cycle. The column's n entries pass the
  sparse-matrix read stage in cycles s+1 .. s+n, one per cycle, and the pointer stage takes the
  next item in cycle s+n (its read overlaps the last entry), or s+1 for an empty column, which
  thus costs its pointer slot: ``s^p_m = max(b_m + 1, s^p_{m-1} + max(n^p_{m-1}, 1))``. A line of
  W bits holds at least one entry and one line is read per cycle, so the SRAM never slows this
  stage (the width changes energy and area only). Each entry then takes ``arith_stages``
  more cycles in the arithmetic unit (lookup, multiply, shift-and-add, write); the bypass
  makes back-to-back updates of one row hazard-free, so the arithmetic never stalls.
* The pass ends after the last PE's last write and the LNZD's last group.

The two coupled recurrences are solved exactly in blocks of D broadcasts: inside a block the
FIFO bound refers only to pops of earlier blocks, and each recurrence of the form
``x_m = max(x_{m-1} + c_m, l_m)`` is a prefix sum plus a cumulative maximum. The Python loop
therefore runs ceil(M / D) times, each step vectorized over the D broadcasts and the N PEs.

Per-PE cycle accounting of a pass: ``busy`` = cycles the pointer/sparse-matrix stage works
(entries plus empty-column pointer slots); idle cycles are ``stalled`` while the broadcast is
blocked by some full FIFO (load imbalance: this PE waits because another is behind) and
``starved`` otherwise (the LNZD has nothing for it yet, or the PE is done and waits for the
pass to end).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def lnzd_levels(pes: int) -> int:
    """Registered levels of the 4-ary leading-non-zero-detection tree over ``pes`` PEs."""
    levels, span = 0, 1
    while span < pes:
        span *= 4
        levels += 1
    return levels


def lnzd_nodes(pes: int) -> int:
    """LNZD units of the 4-ary tree (21 for 64 PEs, as in the paper)."""
    nodes, width = 0, pes
    while width > 1:
        width = -(-width // 4)
        nodes += width
    return nodes


@dataclass(frozen=True)
class BroadcastPlan:
    """The non-zero activations of one input vector, in broadcast order, and the LNZD's
    all-zero groups before each (``gaps``) and after the last (``tail_groups``)."""

    columns: np.ndarray  # int64[M], ascending
    gaps: np.ndarray  # int64[M]
    tail_groups: int
    groups: int


def plan_broadcast(nonzero: np.ndarray, pes: int) -> BroadcastPlan:
    """Broadcast plan for a boolean mask of non-zero input activations."""
    nonzero = np.asarray(nonzero, dtype=bool)
    groups = -(-nonzero.size // pes)
    columns = np.flatnonzero(nonzero).astype(np.int64)
    group = columns // pes
    previous = np.concatenate(([-1], group[:-1]))
    gaps = np.maximum(group - previous - 1, 0)
    tail = groups - 1 - int(group[-1]) if columns.size else groups
    return BroadcastPlan(columns, gaps.astype(np.int64), tail, groups)


@dataclass(frozen=True)
class PassSchedule:
    """The timing of one pass: broadcast cycles ``b`` (int64[M]), LNZD-ready cycles ``ready``
    (int64[M]), pop cycles ``s`` (int64[M, N]), the pass length and per-PE accounting."""

    ready: np.ndarray
    b: np.ndarray
    s: np.ndarray
    cycles: int
    busy: np.ndarray
    stalled: np.ndarray
    starved: np.ndarray


def schedule_pass(
    entries: np.ndarray, plan: BroadcastPlan, fifo_depth: int, lnzd_latency: int, arith_stages: int
) -> PassSchedule:
    """Solve the timing of one pass; ``entries[m, p]`` is PE p's entry count (padding included)
    in the m-th broadcast column."""
    entries = np.asarray(entries, dtype=np.int64)
    m_total, pes = entries.shape
    if plan.columns.size != m_total:
        raise ValueError(f"{m_total} rows of entries for {plan.columns.size} broadcasts")
    depth = int(fifo_depth)
    service = np.maximum(entries, 1)
    # Exclusive prefix sums: chain[m] = cycles the LNZD chain alone needs up to m, work[m, p] =
    # pointer-stage cycles of PE p before item m.
    chain = np.cumsum(1 + plan.gaps)
    work = np.zeros((m_total + 1, pes), dtype=np.int64)
    np.cumsum(service, axis=0, out=work[1:])
    b = np.empty(m_total, dtype=np.int64)
    s = np.empty((m_total, pes), dtype=np.int64)
    s_max = np.empty(m_total, dtype=np.int64)
    x_prev = lnzd_latency - 1  # b_m - chain[m], carried across blocks
    y_prev = np.full(pes, np.iinfo(np.int64).min // 4, dtype=np.int64)  # s_m - work[m], per PE
    for m0 in range(0, m_total, depth):
        m1 = min(m0 + depth, m_total)
        lower = np.full(m1 - m0, x_prev, dtype=np.int64)
        if m0 >= depth:  # FIFO space: item m - D must have been popped
            lower = np.maximum(lower, s_max[m0 - depth : m1 - depth] + 1 - chain[m0:m1])
        x = np.maximum.accumulate(lower)
        x_prev = int(x[-1])
        b[m0:m1] = x + chain[m0:m1]
        y = np.maximum(b[m0:m1, None] + 1 - work[m0:m1], y_prev)
        np.maximum.accumulate(y, axis=0, out=y)
        y_prev = y[-1]
        s[m0:m1] = y + work[m0:m1]
        s_max[m0:m1] = s[m0:m1].max(axis=1)

    ready = np.empty(m_total, dtype=np.int64)
    if m_total:
        ready[0] = lnzd_latency + plan.gaps[0]
        ready[1:] = b[:-1] + 1 + plan.gaps[1:]
    lnzd_last = (int(b[-1]) if m_total else lnzd_latency - 1) + plan.tail_groups
    if m_total:
        done = np.where(entries > 0, s + entries + arith_stages, s).max(axis=0)
        cycles = max(lnzd_last, int(done.max())) + 1
    else:
        cycles = lnzd_last + 1
    busy = work[-1]
    stalled = _stalled_cycles(s, service, ready, b, cycles)
    starved = cycles - busy - stalled
    return PassSchedule(ready, b, s, cycles, busy, stalled, starved)


def _stalled_cycles(
    s: np.ndarray, service: np.ndarray, ready: np.ndarray, b: np.ndarray, cycles: int
) -> np.ndarray:
    """Per PE, idle cycles of the pointer stage that fall in a blocked broadcast interval."""
    pes = s.shape[1]
    blocked = b > ready
    if not blocked.any():
        return np.zeros(pes, dtype=np.int64)
    starts, ends = ready[blocked], b[blocked]
    before = np.concatenate(([0], np.cumsum(ends - starts)))

    def blocked_before(t: np.ndarray) -> np.ndarray:
        i = np.searchsorted(starts, t, side="right") - 1
        inside = np.clip(t - starts[np.maximum(i, 0)], 0, (ends - starts)[np.maximum(i, 0)])
        return np.where(i >= 0, before[np.maximum(i, 0)] + inside, 0)

    # Idle intervals of PE p: [free_{m-1}, s_m) for every m, then [free_{M-1}, cycles).
    free = s + service
    idle_start = np.vstack((np.zeros((1, pes), dtype=np.int64), free))
    idle_end = np.vstack((s, np.full((1, pes), cycles, dtype=np.int64)))
    return (blocked_before(idle_end) - blocked_before(idle_start)).sum(axis=0)
