"""One warp's replay of a loop body from the scheduling control ptxas encodes (`perf.cost.warp_issue`)
and the control parsed from ``nvdisasm -hex`` listings, on hand-written bodies whose timing is
known (the roofline's use of the replay: `tests.perf.test_cost_model`)."""

import pytest

from perf.cost.compiled import loop_counts
from perf.cost.listing import Control, Instruction, parse_sass
from perf.cost.warp_issue import pass_cycles
from tests.perf.test_cost_cfg import sass


def high_word(stall=1, yield_hint=False, write=None, read=None, wait=0) -> int:
    """An instruction's high 64-bit word holding these control fields (bits 41-61)."""
    bits = stall | yield_hint << 4 | (7 if write is None else write) << 5 | (7 if read is None else read) << 8
    return (bits | wait << 11) << 41


def ins(opcode: str, **control) -> Instruction:
    return Instruction(opcode, control=Control.from_word(high_word(**control)))


def test_control_fields_round_trip():
    c = Control.from_word(high_word(stall=5, yield_hint=True, write=2, read=0, wait=0b101000))
    assert c == Control(stall=5, yield_hint=True, write_barrier=2, read_barrier=0, wait_mask=0b101000)
    none = Control.from_word(high_word())
    assert none.write_barrier is None and none.read_barrier is None and none.wait_mask == 0


def test_hex_listing_gives_every_instruction_its_control():
    """nvdisasm -hex prints the low word at the end of an instruction's line and the high word on
    the next line; a listing without them has no control."""
    lines = [
        ("LDG.E R2, desc[UR4][R2.64]", high_word(stall=1, write=2)),
        ("IADD3 R0, R0, -0x1, RZ", high_word(stall=4)),
        ("FADD R4, R2, R4", high_word(stall=4, wait=0b100)),
        ("ISETP.NE.AND P0, PT, R0, RZ, PT", high_word(stall=5)),
        ("@P0 BRA `(.L_x_1)", high_word(stall=5)),
        ("EXIT", high_word(stall=5)),
    ]
    body = ".L_x_1:\n" + "".join(
        f"        /*{16 * k:04x}*/                   {op} ;   /* 0x{k:016x} */\n"
        f"                                                  /* 0x{word:016x} */\n"
        for k, (op, word) in enumerate(lines)
    )
    listing = parse_sass(sass(body))
    opcodes = [op.split()[0] if op[0] != "@" else "BRA" for op, _ in lines]
    assert [i.opcode for i in listing.instructions] == opcodes
    assert [i.control for i in listing.instructions] == [Control.from_word(w) for _, w in lines]
    counts = loop_counts(listing)
    assert [i.opcode for i in counts.body] == ["LDG.E", "IADD3", "FADD", "ISETP.NE.AND", "BRA"]
    plain = parse_sass(sass(".L_x_1:\n        /*0000*/                   @P0 BRA `(.L_x_1) ;\n"))
    assert plain.instructions[0].control is None


def test_a_dependent_chain_waits_its_stall_counts():
    """Four instructions whose stall counts are 4, 5, 4, 1: a pass issues them 4 + 5 + 4 + 1
    cycles apart (a stall of 0 still takes the issue cycle)."""
    body = [ins("SHF.L.U64.HI", stall=4), ins("LEA", stall=5), ins("LOP3.LUT", stall=4), ins("BRA", stall=0)]
    assert pass_cycles(body, lambda i: 0, 4, 20) == 4 + 5 + 4 + 1


def test_a_load_is_waited_on_where_its_scoreboard_is_named():
    """A load sets scoreboard 2; the instruction that waits on it issues its latency after the
    load, the instructions between it filling that wait."""
    load = ins("LDG.E", stall=1, write=2)
    between = [ins("IADD3", stall=1) for _ in range(10)]
    use = ins("LOP3.LUT", stall=1, wait=0b100)
    back = ins("BRA", stall=1)
    assert pass_cycles([load, *between, use, back], lambda i: 35, 4, 20) == 35 + 2
    assert pass_cycles([load, use, back], lambda i: 600, 4, 20) == 600 + 2
    unused = [load, *between, ins("LOP3.LUT", stall=1), back]  # no wait named: no wait
    assert pass_cycles(unused, lambda i: 600, 4, 20) == 13


def test_a_load_for_the_next_pass_is_waited_on_there():
    """A load whose result the next pass reads at its start: a steady pass lasts the latency at
    least, however few instructions follow it."""
    body = [ins("FADD", stall=1, wait=0b1), ins("LDG.E.128", stall=1, write=0), ins("BRA", stall=1)]
    assert pass_cycles(body, lambda i: 600, 4, 20) == 1 + 600  # the load issues a cycle into the pass
    long_body = [body[0], body[1], *[ins("IADD3", stall=1) for _ in range(700)], body[2]]
    assert pass_cycles(long_body, lambda i: 600, 4, 20) == 703


def test_a_barrier_waits_for_shared_loads_without_a_scoreboard():
    """ptxas leaves a shared-memory load that sets no scoreboard to the next barrier: the barrier
    waits for it, then its own cycles."""
    body = [ins("LDS", stall=1), ins("BAR.SYNC.DEFER_BLOCKING", stall=1), ins("BRA", stall=1)]
    assert pass_cycles(body, lambda i: 30, 4, 20) == 30 + 20 + 2  # then the branch, then the next load
    read = [ins("STS.128", stall=1, read=1), ins("IADD3", stall=1, wait=0b10), ins("BRA", stall=1)]
    assert pass_cycles(read, lambda i: 30, 4, 20) == 4 + 2  # operands read, the branch, the next store


def test_a_body_without_control_is_refused():
    with pytest.raises(ValueError, match="control"):
        pass_cycles([Instruction("IADD3")], lambda i: 0, 4, 20)
    with pytest.raises(ValueError, match="control"):
        pass_cycles([], lambda i: 0, 4, 20)
