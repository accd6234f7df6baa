"""Control-flow graph and natural loops of a `Listing`; the main loop is chosen by structure.

Basic blocks start at the entry, at every label and after every branch, exit or return. Edges
follow branches (both ways when the branch is predicated) and fall-through. Only blocks reachable
from the entry count: the padding after a function's last ``EXIT`` (a branch to itself) is not a
loop. A back edge is an edge ``u -> h`` whose head ``h`` dominates ``u``; its natural loop is
``h`` plus every block that reaches ``u`` without passing ``h`` (loops sharing a header merge).
The **main loop** is an innermost loop (it contains no other loop) of the greatest nesting depth,
the largest such one when there are several: the kernels' hot loop over their stream.
"""

from __future__ import annotations

from dataclasses import dataclass

from perf.cost.errors import ListingError
from perf.cost.listing import FLOW_BRANCH, FLOW_EXIT, FLOW_INDIRECT, Listing


@dataclass(frozen=True)
class Block:
    """Instructions ``start .. end - 1`` of the listing and the indices of the successor blocks."""

    start: int
    end: int
    successors: tuple[int, ...]
    exits: bool = False  # ends with an EXIT (a predicated one also falls through)


@dataclass(frozen=True)
class Loop:
    """A natural loop: its header block, its blocks, the instruction indices they hold, and its
    nesting depth (1 = outermost)."""

    header: int
    blocks: frozenset[int]
    instructions: tuple[int, ...]
    depth: int


@dataclass(frozen=True)
class ControlFlow:
    """The blocks of a listing, which are reachable from the entry, and the natural loops."""

    blocks: tuple[Block, ...]
    reachable: frozenset[int]
    loops: tuple[Loop, ...]

    def reachable_instructions(self) -> list[int]:
        return sorted(i for b in self.reachable for i in range(self.blocks[b].start, self.blocks[b].end))

    def main_loop(self) -> Loop | None:
        """The innermost loop of the greatest depth (the largest among equals), None without loops."""
        innermost = [
            loop
            for loop in self.loops
            if not any(o.blocks < loop.blocks for o in self.loops if o is not loop)
        ]
        if not innermost:
            return None
        return max(innermost, key=lambda loop: (loop.depth, len(loop.instructions), -loop.header))

    def skippable_after(self, loop: Loop) -> frozenset[int]:
        """The blocks after ``loop`` (reached from its exits without re-entering it) that some
        path from an exit of the loop to a function exit avoids: code that runs only on some
        programs, such as a closing partial iteration or a masked load behind a branch."""
        blocks = self.blocks
        exits = {s for b in loop.blocks for s in blocks[b].successors if s not in loop.blocks}
        after = _reach_avoiding(blocks, exits, loop.blocks)
        # A function exit: no successor, or a predicated EXIT (its fall-through is the other path).
        ends = {b for b in after if not blocks[b].successors or blocks[b].exits}
        return frozenset(b for b in after if _reach_avoiding(blocks, exits - {b}, loop.blocks | {b}) & ends)


def control_flow(listing: Listing, entry: int = 0) -> ControlFlow:
    """Blocks, reachability from the instruction ``entry`` and natural loops of ``listing``."""
    blocks = _blocks(listing)
    start_of = {b.start: k for k, b in enumerate(blocks)}
    if entry not in start_of:
        raise ListingError(f"instruction {entry} does not start a basic block")
    root = start_of[entry]
    reachable = _reach(blocks, root)
    preds: dict[int, list[int]] = {b: [] for b in reachable}
    for b in reachable:
        for s in blocks[b].successors:
            preds[s].append(b)
    dominators = _dominators(preds, root)
    by_header: dict[int, set[int]] = {}
    for u in reachable:
        for h in blocks[u].successors:
            if h in dominators[u]:
                by_header.setdefault(h, {h}).update(_natural_loop(preds, h, u))
    loops = []
    for header, members in by_header.items():
        depth = sum(1 for other in by_header.values() if members <= other)
        instructions = tuple(i for b in sorted(members) for i in range(blocks[b].start, blocks[b].end))
        loops.append(Loop(header, frozenset(members), instructions, depth))
    loops.sort(key=lambda loop: blocks[loop.header].start)
    return ControlFlow(tuple(blocks), frozenset(reachable), tuple(loops))


def _blocks(listing: Listing) -> list[Block]:
    instructions = listing.instructions
    n = len(instructions)
    leaders = {0, *(i for i in listing.labels.values() if i < n)}
    for i, ins in enumerate(instructions):
        if ins.flow in (FLOW_BRANCH, FLOW_EXIT, FLOW_INDIRECT) and not ins.never and i + 1 < n:
            leaders.add(i + 1)
    starts = sorted(leaders)
    index = {s: k for k, s in enumerate(starts)}
    blocks = []
    for k, start in enumerate(starts):
        end = starts[k + 1] if k + 1 < len(starts) else n
        last = instructions[end - 1]
        successors: list[int] = []
        falls_through = True
        if last.never:
            pass
        elif last.flow == FLOW_BRANCH:
            if last.target not in listing.labels:
                raise ListingError(f"branch to unknown label {last.target!r}")
            target = listing.labels[last.target]
            if target < n:
                successors.append(index[target])
            falls_through = last.conditional
        elif last.flow == FLOW_INDIRECT:
            raise ListingError(f"indirect branch {last.opcode} at instruction {end - 1}: targets unknown")
        elif last.flow == FLOW_EXIT:
            falls_through = last.conditional
        if falls_through and end < n:
            successors.append(index[end])
        blocks.append(
            Block(start, end, tuple(dict.fromkeys(successors)), last.flow == FLOW_EXIT and not last.never)
        )
    return blocks


def _reach(blocks: list[Block], root: int) -> set[int]:
    seen, stack = {root}, [root]
    while stack:
        for s in blocks[stack.pop()].successors:
            if s not in seen:
                seen.add(s)
                stack.append(s)
    return seen


def _reach_avoiding(
    blocks: list[Block] | tuple[Block, ...], starts: set[int], avoid: frozenset[int]
) -> set[int]:
    """Blocks reachable from ``starts`` (those not in ``avoid``) through blocks not in ``avoid``."""
    seen = {b for b in starts if b not in avoid}
    stack = list(seen)
    while stack:
        for s in blocks[stack.pop()].successors:
            if s not in seen and s not in avoid:
                seen.add(s)
                stack.append(s)
    return seen


def _dominators(preds: dict[int, list[int]], root: int) -> dict[int, set[int]]:
    """The iterative data-flow solution over the reachable blocks (the keys of ``preds``):
    dom(root) = {root}, dom(b) = {b} + the intersection of its predecessors' dominators."""
    dom = {b: set(preds) for b in preds}
    dom[root] = {root}
    order = sorted(preds)
    changed = True
    while changed:
        changed = False
        for b in order:
            if b == root:
                continue
            new = set.intersection(*(dom[p] for p in preds[b])) | {b} if preds[b] else {b}
            if new != dom[b]:
                dom[b], changed = new, True
    return dom


def _natural_loop(preds: dict[int, list[int]], header: int, tail: int) -> set[int]:
    members, stack = {header, tail}, [tail] if tail != header else []
    while stack:
        for p in preds[stack.pop()]:
            if p not in members:
                members.add(p)
                stack.append(p)
    return members
