import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eie_model.timing import lnzd_levels, lnzd_nodes, plan_broadcast, schedule_pass
from tests.eie_model.reference import cycle_by_cycle


def test_lnzd_tree_shape():
    assert lnzd_nodes(64) == 21  # the paper's count for 64 PEs
    assert [lnzd_levels(n) for n in (1, 2, 4, 5, 16, 64, 256)] == [0, 1, 1, 2, 2, 3, 4]


def test_hand_counted_two_pes_fifo_depth_one():
    # 2 PEs, 4 non-zero inputs (two LNZD groups), FIFO depth 1, LNZD latency 1, 4 arithmetic
    # stages. PE 0 has 3, 0, 1, 0 entries in the four columns, PE 1 one entry in each.
    plan = plan_broadcast(np.ones(4, dtype=bool), 2)
    sched = schedule_pass(np.array([[3, 1], [0, 1], [1, 1], [0, 1]]), plan, 1, lnzd_levels(2), 4)
    # b0 = 1; both pop at 2. Item 1 waits for FIFO space (item 0 popped at 2) -> b1 = 3;
    # PE 0 is busy until 5 -> pops at 5, PE 1 at 4. b2 = max(4, 5 + 1) = 6, pops at 7.
    # b3 = max(7, 7 + 1) = 8, pops at 9. PE 1's last entry: read at 10, written at 14.
    assert sched.b.tolist() == [1, 3, 6, 8]
    assert sched.s.tolist() == [[2, 2], [5, 4], [7, 7], [9, 9]]
    assert sched.cycles == 15
    assert sched.busy.tolist() == [6, 4]  # 3 + 1 (empty column) + 1 + 1 (empty column); 4 x 1
    # Blocked broadcast intervals: [2, 3), [4, 6), [7, 8). PE 1 idles in [5, 7): one stalled cycle.
    assert sched.stalled.tolist() == [0, 1]
    assert sched.starved.tolist() == [9, 10]


def test_all_zero_input_only_scans():
    # Nothing to broadcast: the LNZD scans every group once (1 cycle each) after its latency.
    plan = plan_broadcast(np.zeros(10, dtype=bool), 4)
    sched = schedule_pass(np.zeros((0, 4), dtype=np.int64), plan, 8, lnzd_levels(4), 4)
    assert sched.cycles == 1 + 3
    assert sched.busy.sum() == 0 and sched.stalled.sum() == 0


def test_empty_group_costs_a_cycle_and_empty_columns_cost_a_slot():
    # Inputs 0 and 5 non-zero over 2 PEs: groups {0,1} {2,3} {4,5}; group {2,3} costs a cycle.
    nonzero = np.array([1, 0, 0, 0, 0, 1], dtype=bool)
    plan = plan_broadcast(nonzero, 2)
    assert plan.gaps.tolist() == [0, 1] and plan.tail_groups == 0
    sched = schedule_pass(np.zeros((2, 2), dtype=np.int64), plan, 8, 0, 4)
    assert sched.b.tolist() == [0, 2]
    assert sched.s.tolist() == [[1, 1], [3, 3]]
    assert sched.busy.tolist() == [2, 2]  # each empty column still takes its pointer slot
    assert sched.cycles == 4


def test_full_fifo_blocks_every_pe():
    # PE 1 has 50 entries in column 0: with depth 2 its FIFO holds items 1 and 2 while it works,
    # so item 3 waits until PE 1 popped item 1 (cycle 51), and PE 0 (no entries) sits stalled.
    m = 6
    entries = np.zeros((m, 2), dtype=np.int64)
    entries[0, 1] = 50
    plan = plan_broadcast(np.ones(m, dtype=bool), 2)
    sched = schedule_pass(entries, plan, 2, 0, 4)
    assert sched.s[:, 1].tolist() == [1, 51, 52, 53, 54, 55]
    assert sched.b.tolist() == [0, 1, 2, 52, 53, 54]
    assert sched.stalled[0] == 48  # PE 0 idle in [4, 53) while item 3 waits in [3, 52)
    ref = cycle_by_cycle(entries, np.ones(m, dtype=bool), 2, 2, 0, 4)
    assert ref["b"] == sched.b.tolist()
    assert ref["stalled"].tolist() == sched.stalled.tolist()


@settings(max_examples=60, deadline=None)
@given(
    pes=st.integers(1, 4),
    depth=st.integers(1, 4),
    latency=st.integers(0, 2),
    stages=st.integers(0, 4),
    ring=st.booleans(),
    data=st.data(),
)
def test_recurrence_matches_cycle_by_cycle_simulation(pes, depth, latency, stages, ring, data):
    """Against a literal simulation with the hardware queue of ``depth``, or the authors' circular
    buffer of ``depth + 1`` slots (which holds ``depth``)."""
    length = data.draw(st.integers(1, 14))
    nonzero = np.array(data.draw(st.lists(st.booleans(), min_size=length, max_size=length)))
    m = int(nonzero.sum())
    entries = np.array(
        data.draw(st.lists(st.integers(0, 6), min_size=m * pes, max_size=m * pes)), dtype=np.int64
    ).reshape(m, pes)
    plan = plan_broadcast(nonzero, pes)
    sched = schedule_pass(entries, plan, depth, latency, stages)
    ref = cycle_by_cycle(entries, nonzero, pes, depth + ring, latency, stages, ring=ring)
    assert sched.b.tolist() == ref["b"]
    assert sched.s.tolist() == ref["s"]
    assert sched.cycles == ref["cycles"]
    assert sched.busy.tolist() == ref["busy"].tolist()
    assert sched.stalled.tolist() == ref["stalled"].tolist()
    assert sched.starved.tolist() == ref["starved"].tolist()


def test_deeper_fifo_never_slower():
    rng = np.random.default_rng(0)
    entries = rng.poisson(3.0, size=(400, 16))
    plan = plan_broadcast(np.ones(400, dtype=bool), 16)
    scheds = [schedule_pass(entries, plan, d, 2, 4) for d in (1, 2, 4, 8, 16, 64, 400)]
    cycles = [s.cycles for s in scheds]
    assert cycles == sorted(cycles, reverse=True)
    # A FIFO as deep as the input never blocks the broadcast: no PE is ever stalled, and the
    # busiest PE's pointer stage bounds the pass.
    assert scheds[-1].stalled.sum() == 0 and scheds[0].stalled.sum() > 0
    assert cycles[-1] >= 2 + 1 + int(np.maximum(entries, 1).sum(axis=0).max())


def test_rejects_mismatched_plan():
    plan = plan_broadcast(np.ones(3, dtype=bool), 2)
    with pytest.raises(ValueError, match="broadcasts"):
        schedule_pass(np.zeros((2, 2), dtype=np.int64), plan, 1, 0, 0)
