"""The cost model's listing parsers, control-flow graph and instruction classes on hand-written
SASS and PTX whose loops and counts are known."""

import pytest

from perf.cost.cfg import control_flow
from perf.cost.compiled import loop_counts
from perf.cost.errors import ListingError
from perf.cost.listing import parse_ptx, parse_sass
from perf.cost.sass_classes import is_lsu, ptx_memory_op, sass_class, sass_memory_op


def sass(body: str, name: str = "k") -> str:
    """``body`` as the code section of function ``name`` in nvdisasm -c form."""
    return (
        f'\t.headerflags\t@"EF_CUDA_SM90"\n'
        f"//--------------------- .text.{name} --------------------------\n"
        f'\t.section\t.text.{name},"ax",@progbits\n'
        f'\t.sectionflags\t@"SHF_BARRIERS=1"\n'
        f'\t.sectioninfo\t@"SHI_REGISTERS=32"\n'
        f"{name}:\n.text.{name}:\n{body}"
    )


# One loop of six instructions (a 16-byte load, a shuffle, an FMA, two integer ops and the back
# edge), a prologue of three and an epilogue of two; the padding after EXIT is unreachable.
SIMPLE = sass(
    """\
        /*0000*/                   S2R R0, SR_TID.X ;
        /*0010*/                   ISETP.GE.AND P0, PT, R0, 0x1, PT ;
        /*0020*/              @!P0 BRA `(.L_x_0) ;
.L_x_1:
        /*0030*/                   LDG.E.128 R4, desc[UR4][R2.64] ;
        /*0040*/                   SHFL.UP PT, R5, R4, 0x1, RZ ;
        /*0050*/                   FFMA R6, R4, R5, R6 ;
        /*0060*/                   IADD3 R0, R0, -0x1, RZ ;
        /*0070*/                   ISETP.NE.AND P0, PT, R0, RZ, PT ;
        /*0080*/               @P0 BRA `(.L_x_1) ;
.L_x_0:
        /*0090*/                   STG.E desc[UR4][R2.64], R6 ;
        /*00a0*/                   EXIT ;
.L_x_2:
        /*00b0*/                   BRA `(.L_x_2);
        /*00c0*/                   NOP;
        /*00d0*/                   NOP;
"""
)

PTX = """\
.version 8.7
.target sm_90a
.visible .entry k(
\t.param .u64 k_param_0
)
{
\t.reg .pred \t%p<3>;
\t.loc\t1 0 35
$L__BB0_1:                              // =>This Inner Loop Header: Depth=1
\t// begin inline asm
\t@%p2 ld.global.v4.b32 { %r1, %r2, %r3, %r4 }, [ %rd1 + 0 ];
\t// end inline asm
\tshfl.sync.up.b32 %r5, %r1, 1, 0, -1;
\tfma.rn.f32 %f1, %f2, %f3, %f1;
\tld.param.u64 %rd2, [k_param_0];
\tadd.s32 %r6, %r6, -1;
\tsetp.ne.s32 %p1, %r6, 0;
\t@%p1 bra $L__BB0_1;
\tst.global.b32 [ %rd1 + 0 ], %r1;
\tret;
}
"""


def test_simple_loop_found_and_counted():
    listing = parse_sass(SIMPLE)
    flow = control_flow(listing)
    assert len(flow.loops) == 1  # the padding's branch to itself is unreachable
    loop = flow.main_loop()
    assert [listing.instructions[i].opcode for i in loop.instructions] == [
        "LDG.E.128", "SHFL.UP", "FFMA", "IADD3", "ISETP.NE.AND", "BRA",
    ]  # fmt: skip
    counts = loop_counts(listing, parse_ptx(PTX))
    assert counts.unroll == 1 and counts.depth == 1 and counts.loops_found == 1
    assert counts.per_iteration == {"ldg.128": 1, "shfl": 1, "int": 2, "ffma": 1, "branch": 1}
    assert counts.instructions == 6 and counts.lsu == 2
    assert counts.outside == {"stg.32": 1, "int": 1, "move": 1, "branch": 2}
    assert counts.internal_branches == 0


def test_unrolled_loop_divided_by_the_factor():
    # ptxas unrolled the PTX loop twice: two loads and two shuffles per SASS trip.
    unrolled = SIMPLE.replace(
        "        /*0040*/                   SHFL.UP PT, R5, R4, 0x1, RZ ;\n",
        "        /*0040*/                   SHFL.UP PT, R5, R4, 0x1, RZ ;\n"
        "        /*0041*/                   LDG.E.128 R8, desc[UR4][R2.64+0x10] ;\n"
        "        /*0042*/                   SHFL.UP PT, R9, R8, 0x1, RZ ;\n"
        "        /*0043*/                   FFMA R6, R8, R9, R6 ;\n",
    )
    counts = loop_counts(parse_sass(unrolled), parse_ptx(PTX))
    assert counts.unroll == 2 and counts.unroll_ratio == 2
    assert counts.per_iteration["ldg.128"] == 1 and counts.per_iteration["ffma"] == 1
    assert counts.per_iteration["branch"] == 0.5


def test_innermost_loop_of_a_nest_is_the_main_loop():
    nested = sass(
        """\
        /*0000*/                   MOV R0, 0x4 ;
.L_x_outer:
        /*0010*/                   MOV R1, 0x8 ;
.L_x_inner:
        /*0020*/                   LDS R2, [R1] ;
        /*0030*/                   FADD R3, R3, R2 ;
        /*0040*/                   IADD3 R1, R1, -0x1, RZ ;
        /*0050*/                   ISETP.NE.AND P0, PT, R1, RZ, PT ;
        /*0060*/               @P0 BRA `(.L_x_inner) ;
        /*0070*/                   BAR.SYNC.DEFER_BLOCKING 0x0 ;
        /*0080*/                   IADD3 R0, R0, -0x1, RZ ;
        /*0090*/                   ISETP.NE.AND P1, PT, R0, RZ, PT ;
        /*00a0*/               @P1 BRA `(.L_x_outer) ;
        /*00b0*/                   EXIT ;
"""
    )
    listing = parse_sass(nested)
    flow = control_flow(listing)
    assert len(flow.loops) == 2
    inner = flow.main_loop()
    assert inner.depth == 2 and len(inner.instructions) == 5
    counts = loop_counts(listing)
    assert counts.per_iteration == {"lds.32": 1, "int": 2, "float": 1, "branch": 1}
    assert counts.depth == 2 and counts.loops_found == 2


# The main loop, then a closing half iteration (run when P1: some programs skip it), a masked
# load behind a branch (no multiply), the store and a predicated EXIT before a second store.
CLOSING = sass(
    """\
        /*0000*/                   S2R R0, SR_TID.X ;
.L_x_1:
        /*0010*/                   LDG.E R4, desc[UR4][R2.64] ;
        /*0020*/                   FFMA R6, R4, R5, R6 ;
        /*0030*/                   IADD3 R0, R0, -0x1, RZ ;
        /*0040*/                   ISETP.NE.AND P0, PT, R0, RZ, PT ;
        /*0050*/               @P0 BRA `(.L_x_1) ;
        /*0060*/              @!P1 BRA `(.L_x_2) ;
        /*0070*/                   LDG.E R4, desc[UR4][R2.64] ;
        /*0080*/                   FFMA R6, R4, R5, R6 ;
.L_x_2:
        /*0090*/              @!P2 BRA `(.L_x_3) ;
        /*00a0*/                   LDG.E R8, desc[UR4][R2.64+0x4] ;
.L_x_3:
        /*00b0*/                   FADD R6, R6, R8 ;
        /*00c0*/                   STG.E desc[UR4][R2.64], R6 ;
        /*00d0*/              @!P3 EXIT ;
        /*00e0*/                   STG.E desc[UR4][R2.64+0x4], R6 ;
        /*00f0*/                   EXIT ;
.L_x_4:
        /*0100*/                   BRA `(.L_x_4);
"""
)


def test_code_some_programs_skip_after_the_loop():
    listing = parse_sass(CLOSING)
    flow = control_flow(listing)
    skipped = flow.skippable_after(flow.main_loop())
    # The closing half iteration, the masked load and the store after the predicated EXIT
    # (instructions 7, 10 and 14); not the branches that guard them, nor the FADD and the first
    # store, which every program runs.
    assert sorted(flow.blocks[b].start for b in skipped) == [7, 10, 14]
    counts = loop_counts(listing)
    assert counts.closing == {"ldg.32": 1, "ffma": 1}  # only the block that multiplies
    assert [[i.opcode for i in b] for b in counts.closing_bodies] == [["LDG.E", "FFMA"]]
    assert counts.closing_instructions == 2 and counts.closing_lsu == 1
    assert counts.outside_instructions == 11


# sm_80's loop exit: the back edge is a conditional call that keeps no return address into the
# code after the loop, then a branch to the loop's head. The function has no return.
NOINC_EXIT = sass(
    """\
        /*0000*/                   S2R R0, SR_TID.X ;
.L_x_1:
        /*0010*/                   LDG.E R4, desc[UR4][R2.64] ;
        /*0020*/                   FFMA R6, R4, R5, R6 ;
        /*0030*/                   IADD3 R0, R0, -0x1, RZ ;
        /*0040*/                   ISETP.NE.AND P4, PT, R0, RZ, PT ;
        /*0050*/              @!P4 CALL.REL.NOINC `(.L_x_0) ;
        /*0060*/                   BRA `(.L_x_1) ;
.L_x_0:
        /*0070*/                   LDG.E R4, desc[UR4][R2.64] ;
        /*0080*/                   FFMA R6, R4, R5, R6 ;
        /*0090*/                   STG.E desc[UR4][R2.64], R6 ;
        /*00a0*/                   EXIT ;
.L_x_2:
        /*00b0*/                   BRA `(.L_x_2);
"""
)


def test_call_without_return_address_leaves_the_loop():
    listing = parse_sass(NOINC_EXIT)
    assert listing.instructions[5].flow == "branch" and listing.instructions[5].conditional
    counts = loop_counts(listing)
    # The code after the loop runs once, not once an iteration as a subroutine's would.
    assert counts.per_iteration == {"ldg.32": 1, "int": 2, "ffma": 1, "branch": 2}
    assert counts.outside_instructions == 5
    with_return = parse_sass(NOINC_EXIT.replace("EXIT ;", "RET.REL.NODEC R20 `(k) ;"))
    assert with_return.instructions[5].flow == "call"  # in a function that returns it stays a call


def test_code_without_a_loop():
    straight = sass(
        "        /*0000*/                   MOV R0, 0x4 ;\n        /*0010*/                   EXIT ;\n"
    )
    assert loop_counts(parse_sass(straight)) is None


def test_ptx_loop():
    listing = parse_ptx(PTX)
    flow = control_flow(listing)
    loop = flow.main_loop()
    ops = [listing.instructions[i].opcode for i in loop.instructions]
    assert ops == ["ld.global.v4.b32", "shfl.sync.up.b32", "fma.rn.f32", "ld.param.u64", "add.s32",
                   "setp.ne.s32", "bra"]  # fmt: skip
    assert [ptx_memory_op(op) for op in ops] == ["load.global", "shuffle", None, None, None, None, None]


@pytest.mark.parametrize(
    "opcode, cls",
    [
        ("LDG.E", "ldg.32"),
        ("LDG.E.U16", "ldg.16"),
        ("LDG.E.64.CONSTANT", "ldg.64"),
        ("LDG.E.128", "ldg.128"),
        ("STG.E.U16", "stg.16"),
        ("LDS.128", "lds.128"),
        ("STS", "sts.32"),
        ("SHFL.BFLY", "shfl"),
        ("REDUX.SUM.S32", "warp_reduce"),
        ("BAR.SYNC.DEFER_BLOCKING", "bar"),
        ("BSSY", "converge"),
        ("IMAD.WIDE.U32", "imad"),
        ("IMAD.MOV.U32", "imad"),
        ("LOP3.LUT", "int"),
        ("SHF.R.U32.HI", "int"),
        ("FADD", "float"),
        ("FFMA", "ffma"),
        ("HADD2.F32", "float"),
        ("F2FP.F16.F32.PACK_AB", "convert"),
        ("I2FP.F32.S32", "convert"),
        ("UIADD3", "uniform"),
        ("ULEA.HI.X", "uniform"),
        ("R2UR", "uniform"),
        ("ULDC.64", "constant"),
        ("LDL", "local"),
        ("LDGSTS.E.BYPASS.128", "ldgsts.128"),
        ("LDGSTS.E", "ldgsts.32"),
        ("BRA", "branch"),
        ("EXIT", "branch"),
        ("NOP", "other"),
    ],
)
def test_sass_classes(opcode, cls):
    assert sass_class(opcode) == cls


def test_memory_operations_match_between_sass_and_ptx():
    pairs = [
        ("LDG.E.128", "ld.global.v4.b32"),
        ("STS.64", "st.shared.v2.b32"),
        ("LDS", "ld.shared.b32"),
        ("SHFL.UP", "shfl.sync.up.b32"),
        ("BAR.SYNC.DEFER_BLOCKING", "bar.sync"),
        ("RED.E.ADD.F32", "red.global.add.f32"),
    ]
    for sass_op, ptx_op in pairs:
        assert sass_memory_op(sass_op) == ptx_memory_op(ptx_op) is not None, (sass_op, ptx_op)
    assert ptx_memory_op("ld.param.u64") is None and ptx_memory_op("ld.local.u32") is None
    assert sass_memory_op("FFMA") is None
    assert is_lsu("ldg.32") and is_lsu("shfl") and is_lsu("sts.128") and not is_lsu("int")


def test_bad_listings():
    with pytest.raises(ListingError, match="no code section"):
        parse_sass("nothing here")
    with pytest.raises(ListingError, match="'other' not in the SASS"):
        parse_sass(SIMPLE, "other")
    unknown = SIMPLE.replace("`(.L_x_1)", "`(.L_x_9)")
    with pytest.raises(ListingError, match="unknown label"):
        control_flow(parse_sass(unknown))
    indirect = SIMPLE.replace("@P0 BRA `(.L_x_1) ;", "BRX R4 -0x90 ;")
    with pytest.raises(ListingError, match="indirect branch"):
        control_flow(parse_sass(indirect))
    with pytest.raises(ListingError, match="no PTX function"):
        parse_ptx(".version 8.7\n")
