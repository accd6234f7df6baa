"""Independent references for the EIE model's tests: a literal cycle-by-cycle simulation of the
broadcast, FIFOs and PEs (one Python step per cycle and PE, for tiny layers), and a dense NumPy
fixed-point matrix-vector product."""

from __future__ import annotations

from collections import deque

import numpy as np


def cycle_by_cycle(entries, nonzero, pes: int, depth: int, latency: int, arith_stages: int) -> dict:
    """Simulate one pass cycle by cycle. ``entries[m][p]``: PE p's entries in the m-th broadcast
    column; ``nonzero``: the input's non-zero mask. Returns broadcast cycles, pop cycles, total
    cycles and per-PE busy / stalled / starved counts."""
    entries = np.asarray(entries, dtype=np.int64).reshape(-1, pes)
    nonzero = np.asarray(nonzero, dtype=bool)
    columns = np.flatnonzero(nonzero)
    groups = -(-nonzero.size // pes)
    fifos = [deque() for _ in range(pes)]
    free = [0] * pes  # first cycle the pointer stage may take the next item
    busy_until = [0] * pes
    done = [-1] * pes
    pops = [[None] * pes for _ in range(len(columns))]
    broadcast = []
    group, next_item, held = 0, 0, None
    lnzd_last = latency - 1
    busy = np.zeros(pes, dtype=np.int64)
    stalled = np.zeros(pes, dtype=np.int64)
    starved = np.zeros(pes, dtype=np.int64)
    t = 0
    while True:
        lnzd_active = t >= latency and (held is not None or group < groups)
        finished = not lnzd_active and next_item == len(columns) and all(not f for f in fifos)
        if finished and t > max([*done, lnzd_last]):
            return {
                "b": broadcast,
                "s": pops,
                "cycles": t,
                "busy": busy,
                "stalled": stalled,
                "starved": starved,
            }
        full = any(len(f) >= depth for f in fifos)  # registered: state at the start of the cycle
        blocked = False
        push = None
        if lnzd_active:
            lnzd_last = t
            if held is None:
                in_group = [j for j in columns[next_item:] if j // pes == group]
                if in_group:
                    held = next_item
                else:  # an all-zero group costs this cycle
                    group += 1
            if held is not None:
                if full:
                    blocked = True
                else:
                    push = held
                    broadcast.append(t)
                    next_item += 1
                    held = None
                    remaining = [j for j in columns[next_item:] if j // pes == group]
                    if not remaining:
                        group += 1
        for p in range(pes):
            if t >= free[p] and fifos[p]:
                m = fifos[p].popleft()
                pops[m][p] = t
                n = int(entries[m, p])
                free[p] = t + max(n, 1)
                busy_until[p] = free[p]
                done[p] = max(done[p], t + n + arith_stages if n else t)
            if t < busy_until[p]:
                busy[p] += 1
            elif blocked:
                stalled[p] += 1
            else:
                starved[p] += 1
        if push is not None:
            for f in fifos:
                f.append(push)
        t += 1


def dense_fixed_point(weights_q: np.ndarray, acts_q: np.ndarray, shift: int, bits: int) -> np.ndarray:
    """y = W a in fixed point, column by column in ascending order, each product rounded to
    nearest (ties up) by ``shift`` and added with saturation; plain integer arithmetic."""
    low, high = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    y = np.zeros(weights_q.shape[0], dtype=np.int64)
    for j in np.flatnonzero(acts_q):
        product = weights_q[:, j].astype(np.int64) * int(acts_q[j])
        if shift > 0:
            product = np.floor_divide(product + 2 ** (shift - 1), 2**shift)
        else:
            product = product * 2**-shift
        y = np.clip(y + product, low, high)
    return y
