"""Independent references for the EIE model's tests: a literal cycle-by-cycle simulation of the
broadcast, activation queues and PEs (one Python step per cycle and PE), with either queue the
model knows, and a dense NumPy fixed-point matrix-vector product."""

from __future__ import annotations

from collections import deque

import numpy as np


class BoundedQueue:
    """The hardware queue: ``depth`` slots, full when it holds ``depth`` activations."""

    def __init__(self, depth: int) -> None:
        self.items: deque = deque()
        self.depth = depth

    def full(self) -> bool:
        return len(self.items) >= self.depth

    def empty(self) -> bool:
        return not self.items

    def push(self, item) -> None:
        self.items.append(item)

    def pop(self):
        return self.items.popleft()


class RingQueue:
    """The EIE authors' queue: a circular buffer of ``size`` slots with a read and a write
    position; empty when they are equal, full when the write position is one behind the read
    position, so it holds at most ``size - 1`` activations."""

    def __init__(self, size: int) -> None:
        self.slots = [None] * size
        self.size = size
        self.read = 0
        self.write = 0

    def full(self) -> bool:
        return (self.write + 1) % self.size == self.read

    def empty(self) -> bool:
        return self.write == self.read

    def push(self, item) -> None:
        self.slots[self.write] = item
        self.write = (self.write + 1) % self.size

    def pop(self):
        item = self.slots[self.read]
        self.read = (self.read + 1) % self.size
        return item


def cycle_by_cycle(
    entries, nonzero, pes: int, depth: int, latency: int, arith_stages: int, *, ring: bool = False
) -> dict:
    """Simulate one pass cycle by cycle. ``entries[m][p]``: PE p's entries in the m-th broadcast
    column; ``nonzero``: the input's non-zero mask; ``depth``: each PE's queue, a `BoundedQueue`
    of that depth or, with ``ring``, a `RingQueue` of that size. Returns broadcast cycles, pop
    cycles, total cycles and per-PE busy / stalled / starved counts."""
    entries = np.asarray(entries, dtype=np.int64).reshape(-1, pes).tolist()
    nonzero = np.asarray(nonzero, dtype=bool)
    columns = np.flatnonzero(nonzero).tolist()
    groups = -(-nonzero.size // pes)
    fifos = [RingQueue(depth) if ring else BoundedQueue(depth) for _ in range(pes)]
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

    def next_in_group() -> bool:  # the next non-zero input lies in the LNZD's current group
        return next_item < len(columns) and columns[next_item] // pes == group

    t = 0
    while True:
        lnzd_active = t >= latency and (held is not None or group < groups)
        finished = not lnzd_active and next_item == len(columns) and all(f.empty() for f in fifos)
        if finished and t > max([*done, lnzd_last]):
            return {
                "b": broadcast,
                "s": pops,
                "cycles": t,
                "busy": busy,
                "stalled": stalled,
                "starved": starved,
            }
        full = any(f.full() for f in fifos)  # registered: state at the start of the cycle
        blocked = False
        push = None
        if lnzd_active:
            lnzd_last = t
            if held is None:
                if next_in_group():
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
                    if not next_in_group():
                        group += 1
        for p in range(pes):
            if t >= free[p] and not fifos[p].empty():
                m = fifos[p].pop()
                pops[m][p] = t
                n = entries[m][p]
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
                f.push(push)
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
