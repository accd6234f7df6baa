"""The cost model without compiling: recorded launches, the specialization rule, layout summaries
and their cache, occupancy, the roofline's arithmetic, the machine table, and bad input."""

import dataclasses
import itertools
import json
import math

import numpy as np
import pytest
import torch

from dc_kernels.dense_codes import launch as codes_launch
from dc_kernels.fixed import launch as fixed_launch
from perf.cost import layer_stats as stats_module
from perf.cost.compiled import KernelCost, LoopCounts
from perf.cost.errors import CompilerToolsMissing, UndispatchedConfiguration, UnknownArchitecture
from perf.cost.launches import (
    decodes_for_cublas,
    dispatched_configurations,
    layer_launches,
    recorded_launches,
)
from perf.cost.listing import Control, Instruction
from perf.cost.machines import ARCH_LIMITS, MACHINES, SOURCES, get_machine, machine_rows
from perf.cost.roofline import KERNEL_MODELS, combine, cublas_fp16_us, distinct_lines, predict_launch
from perf.cost.specialize import rule_specialization
from perf.cost.tools import check_arch
from perf.cost.warp_issue import pass_cycles
from workloads import LayerSpec

SMALL = LayerSpec("small", inputs=512, outputs=100, weight_density=0.1)  # 100: not a multiple of 16


@pytest.fixture(scope="module")
def small_stats():
    return stats_module.build_stats(SMALL, bits=5)


def test_layer_stats_match_the_layouts(small_stats):
    from dc_kernels.fixed.layout import GpuLayout
    from dc_kernels.huffman.layout import HuffmanLayout

    matrix = SMALL.random_matrix(5)
    fixed, huffman = GpuLayout.from_matrix(matrix), HuffmanLayout.from_matrix(matrix)
    s = small_stats
    assert s.nnz == matrix.nnz and s.fixed.bit_counts == fixed.bit_counts()
    assert s.huffman.bit_counts == huffman.bit_counts()
    assert s.fixed.n_blocks == fixed.n_blocks and s.huffman.n_programs == huffman.n_programs
    groups = fixed.block_groups()
    assert s.fixed.block_groups == {int(g): int(np.sum(groups == g)) for g in np.unique(groups)}
    # Each x load a warp issues reads one line per kept lane at most, and 32 kept lanes at least
    # share a line per load.
    assert set(s.fixed.x_lines) == set(stats_module.X_COLUMN_BYTES)
    assert all(s.nnz / 32 <= lines <= s.nnz for lines in s.fixed.x_lines.values())
    assert s.fixed.x_lines[2] <= s.fixed.x_lines[16]  # wider columns: more lines
    assert max(s.huffman.program_steps) == int(huffman.prog_steps.max())
    # Symbols: every kept weight plus one escape per `Q << b` pruned columns of a gap in its piece.
    h = huffman
    spans = (h.seg_span.numpy().astype(np.int64) + h.span_base) * h.span_unit
    escapes = 0
    for sorted_row, row in enumerate(h.row_ids.tolist()):
        cuts = [0, *np.cumsum(spans.reshape(SMALL.outputs, h.pieces - 1)[sorted_row]), SMALL.inputs]
        cols = matrix.col_idx[matrix.row_ptr[row] : matrix.row_ptr[row + 1]]
        for start, end in itertools.pairwise(cuts):
            inside = [int(c) for c in cols if start <= c < end]
            gaps = [c - p - 1 for p, c in zip([start - 1, *inside], inside)]
            escapes += sum((g >> h.gap_raw_bits) // h.q_levels for g in gaps)
    assert s.huffman.symbols == s.nnz + escapes
    assert stats_module.LayerStats.from_json(json.loads(json.dumps(s.to_json()))) == s


def test_refill_lines_count_word_rows():
    from compress import CompressedMatrix
    from dc_kernels.huffman.layout import HEAD_WORDS, HuffmanLayout

    # 64 identical rows, one piece each: the two warps holding them step through the same words
    # in lockstep, so each refill loads one word row (one line) for all 32 lanes: words 3 .. W - 1
    # of the W a lane holds (the first three are loaded before the loop).
    mask = np.zeros((64, 300), dtype=bool)
    mask[:, ::3] = True
    codes = np.tile(np.arange(100) % 7, (64, 1))
    full = np.zeros(mask.shape, np.int64)
    full[mask] = codes.reshape(-1)
    matrix = CompressedMatrix.from_dense(mask, full, np.linspace(-1, 1, 7), 3)
    layout = HuffmanLayout.from_matrix(matrix, segment_symbols=100)
    assert layout.pieces == 1 and layout.lanes == 128
    words = HEAD_WORDS + np.diff(layout.warp_base.numpy()) // 32  # lanes 64..127: no row, no words
    assert words.tolist() == [words[0]] * 2 and words[0] > HEAD_WORDS
    assert stats_module.refill_lines(layout) == 2 * (words[0] - HEAD_WORDS)


def test_layer_stats_cache(tmp_path, monkeypatch):
    cache = tmp_path / "stats.json"
    first = stats_module.layer_stats([SMALL], cache=cache)
    assert json.loads(cache.read_text())["fingerprint"] == stats_module.source_fingerprint()

    def no_build(*args, **kwargs):
        raise AssertionError("built although cached")

    monkeypatch.setattr(stats_module, "build_stats", no_build)
    assert stats_module.layer_stats([SMALL], cache=cache) == first
    monkeypatch.setattr(stats_module, "source_fingerprint", lambda: "changed")
    with pytest.raises(AssertionError, match="built although cached"):
        stats_module.layer_stats([SMALL], cache=cache)


def test_recorded_fixed_launch_is_the_dispatchers(small_stats):
    (batch1,) = layer_launches("fixed", small_stats, 1)
    args = dict(zip(batch1.kernel.arg_names, batch1.args))
    meta = small_stats.fixed.metadata
    rows, chunks = meta["block_rows"], meta["chunks"]
    assert batch1.name == "codebook_spmm_kernel" and batch1.grid == (-(-SMALL.outputs // rows),)
    assert (args["n_rows"], args["n_cols"], args["batch"]) == (SMALL.outputs, SMALL.inputs, 1)
    assert (args["stride_xp"], args["stride_xk"], args["stride_yb"], args["stride_yn"]) == (0, 1, 100, 1)
    assert args["x_ptr"].device.type == "meta" and args["x_ptr"].dtype == torch.float16
    warps = fixed_launch.DEFAULT_DISPATCH.spmm[1].num_warps(rows * chunks)
    assert batch1.constexprs["BB"] == 1 and batch1.num_warps == warps
    assert (batch1.constexprs["R"], batch1.constexprs["T"]) == (rows, chunks)
    (batch16,) = layer_launches("fixed", small_stats, 16)
    args16 = dict(zip(batch16.kernel.arg_names, batch16.args))
    # The launcher hands the kernel x in pieces of 8 float16 batch columns, [piece, column, 8].
    assert (args16["stride_xp"], args16["stride_xk"]) == (8 * SMALL.inputs, 8) and batch16.constexprs[
        "BB"
    ] == 16
    slots = 256 // (meta["code_bits"] + meta["index_bits"])
    assert fixed_launch.loop_items(batch16.constexprs) == rows * chunks * slots
    huffman = layer_launches("huffman", small_stats, 16)
    assert [launch.constexprs["BB"] for launch in huffman] == [8, 8]  # two chunks of 8 rows


def test_recording_leaves_the_kernels_in_place():
    from dc_kernels.fixed import kernels

    before = kernels.codebook_spmm_kernel
    with recorded_launches() as launches:
        assert kernels.codebook_spmm_kernel is not before
    assert kernels.codebook_spmm_kernel is before and launches == []


def test_rule_specialization(small_stats):
    (launch,) = layer_launches("fixed", small_stats, 1)
    spec = rule_specialization(launch.kernel, launch.args, launch.kwargs)
    assert spec.source == "rule"
    assert spec.constant_one() == ["batch", "stride_xk", "stride_yn"]
    divisible = spec.divisible()
    assert {"words_ptr", "x_ptr", "y_ptr", "n_cols", "stride_xp", "codebook_size"} <= set(divisible)
    assert "n_rows" not in divisible and "stride_yb" not in divisible  # 100 rows
    assert spec.signature["n_rows"] == "i32" and spec.signature["x_ptr"] == "*fp16"
    assert spec.options == {"num_warps": launch.num_warps}


def test_every_aot_configuration_is_dispatched(small_stats):
    configs = dispatched_configurations(small_stats, {"float16": "fp16"}, widths=((5, 6), (8, 8)))
    kernels = {c.kernel for c in configs}
    assert kernels == {
        "codebook_spmm_kernel",
        "decode_dense_kernel",
        "huffman_spmm_kernel",
        "huffman_decode_kernel",
        "dense_codes_gemv_kernel",
        "dense_codes_gemm_kernel",
        "dense_codes_decode_kernel",
    }
    spmm = [c for c in configs if c.kernel == "codebook_spmm_kernel"]
    assert sorted({c.batch_bucket for c in spmm}) == list(fixed_launch.BATCH_BUCKETS)
    for c in spmm:
        consts = c.launch.constexprs
        assert c.block == consts["R"] * consts["T"]
        assert c.items_per_iteration == c.block * (256 // (consts["CODE_BITS"] + consts["INDEX_BITS"]))
    codes = [c for c in configs if c.family == "dense_codes"]
    assert sorted({c.batch_bucket for c in codes}) == [0, *codes_launch.BATCH_BUCKETS]
    assert all(c.items_per_iteration == c.block and c.label().count("4-bit codes") for c in codes)


def test_a_configuration_the_dispatcher_never_launches(small_stats, monkeypatch):
    real = fixed_launch.aot_configs

    def wrong_warps(dtypes, widths):
        kernel, consts, warps, dtype, bb = real(dtypes, widths)[0]
        return [(kernel, consts, warps * 2, dtype, bb)]

    monkeypatch.setattr(fixed_launch, "aot_configs", wrong_warps)
    with pytest.raises(UndispatchedConfiguration, match="never launches this configuration"):
        dispatched_configurations(small_stats, {"float16": "fp16"})


def test_bad_input(small_stats, monkeypatch, tmp_path):
    with pytest.raises(UnknownArchitecture, match=r"75.*80 \(sm_80\), 90 \(sm_90\)"):
        check_arch(75)
    with pytest.raises(UnknownArchitecture, match="a100"):
        get_machine("a100")
    with pytest.raises(ValueError, match="form must be"):
        layer_launches("dense", small_stats, 1)
    with pytest.raises(ValueError, match="batch must be"):
        layer_launches("fixed", small_stats, 0)
    from perf.cost import tools

    monkeypatch.setattr(tools, "tool_dir", lambda: tmp_path)
    monkeypatch.setattr(tools.shutil, "which", lambda name: None)
    with pytest.raises(CompilerToolsMissing, match=f"nvdisasm not found.*{tmp_path}"):
        tools.find_tool("nvdisasm")
    assert "ptxas not found" in tools.missing_tools()


def test_compile_refuses_an_unknown_arch(small_stats):
    from perf.cost.compiled import compile_launch

    (launch,) = layer_launches("fixed", small_stats, 1)
    with pytest.raises(UnknownArchitecture, match="sm_80"):
        compile_launch(launch.kernel, launch.args, launch.kwargs, 100)


def test_kernel_check_names_what_is_wrong(monkeypatch, capsys):
    from perf import kernel_check

    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert kernel_check.main(["--archs", "75"]) == 2
    assert "unknown architecture 75" in capsys.readouterr().err


def test_occupancy():
    sm90, sm80 = ARCH_LIMITS[90], ARCH_LIMITS[80]
    assert sm90.resident_ctas(registers=72, num_warps=4, shared_bytes=128) == 7  # 2304 registers a warp
    assert sm90.resident_ctas(registers=20, num_warps=4, shared_bytes=16) == 16  # the 64-warp limit
    assert sm90.resident_ctas(registers=32, num_warps=1, shared_bytes=0) == 32  # the 32-CTA limit
    assert sm90.resident_ctas(registers=32, num_warps=4, shared_bytes=100 * 1024) == 2
    assert sm80.resident_ctas(registers=32, num_warps=4, shared_bytes=100 * 1024) == 1


def test_distinct_lines():
    assert distinct_lines(1) == 1 and distinct_lines(0.5) == 1
    assert distinct_lines(64) == pytest.approx(64 * (1 - (63 / 64) ** 32))
    assert distinct_lines(1e9) == pytest.approx(32, rel=1e-6)
    values = [distinct_lines(n) for n in (2, 8, 64, 512)]
    assert values == sorted(values)


def _cost(
    per_iteration: dict,
    outside: dict,
    warps: int,
    ctas: int = 8,
    closing: dict | None = None,
    before: dict | None = None,
) -> KernelCost:
    counts = LoopCounts(per_iteration, outside, 1, 1.0, 1, 1, 0, closing or {}, before or {})
    return KernelCost("codebook_spmm_kernel", 90, warps, 64, 0, 0, 0, 0, ctas, counts, 1024, 1)


def test_closing_iterations_counted_once(small_stats):
    """The Huffman trips count a program's closing K / 2 and K / 4 steps as fractions of an
    iteration, so their compiled code is not counted again with the prologue; the fixed-width
    kernel has no closing iterations and counts all its code outside the loop."""
    machine = MACHINES["h100-sxm"]
    (launch,) = layer_launches("huffman", small_stats, 1)
    warps, programs = launch.num_warps, int(launch.grid[0])
    closing = {"int": 30, "lds.32": 4, "ffma": 2}
    cost = _cost({"int": 100.0, "ldg.32": 4.0}, {"int": 80, "lds.32": 6, "ffma": 2}, warps, closing=closing)
    without = _cost({"int": 100.0, "ldg.32": 4.0}, {"int": 50, "lds.32": 2}, warps)
    model = KERNEL_MODELS["huffman"]
    p = predict_launch(machine, small_stats, model, launch, cost, element_bytes=2)
    q = predict_launch(machine, small_stats, model, launch, without, element_bytes=2)
    trips = sum(t * n for t, n in model.trips(small_stats, launch.constexprs).items())
    assert p.warp_instructions == q.warp_instructions == warps * (programs * 52 + trips * 104)
    assert p.lsu_instructions == q.lsu_instructions == warps * (programs * 2 + trips * 4)
    assert p.bounds_s == q.bounds_s
    (launch,) = layer_launches("fixed", small_stats, 1)
    fixed = KERNEL_MODELS["fixed"]
    p = predict_launch(machine, small_stats, fixed, launch, cost, element_bytes=2)
    trips = sum(t * n for t, n in fixed.trips(small_stats, launch.constexprs).items())
    assert p.warp_instructions == warps * (int(launch.grid[0]) * 88 + trips * 104)  # warps: the cost's


def test_epilogue_trips_add_to_a_programs_latency(small_stats):
    """What a program waits on after its loop before it can store: the fixed-width kernel loads
    its rows' places there (from L2, prefetched before the loop) and the bias at them, the Huffman
    kernel at batch 1 both before its loop, and waits only on column slabs' count and partial sums
    (two L2 trips)."""
    import dataclasses

    from perf.cost import roofline

    machine = MACHINES["h100-sxm"]
    assert roofline._fixed_epilogue({"FRESH_PID": True, "HAS_BIAS": False}) == ("l2",)
    assert roofline._fixed_epilogue({"FRESH_PID": True, "HAS_BIAS": True}) == ("l2", "hbm")
    assert roofline._fixed_epilogue({"R": 32, "T": 8}) == ()  # the decoder
    assert roofline._huffman_epilogue({"XW": 2048, "SLABS": 1, "HAS_BIAS": True}) == ()
    assert roofline._huffman_epilogue({"XW": 8192, "SLABS": 4}) == ("l2", "l2")
    assert roofline._huffman_epilogue({"XW": 0, "SLABS": 1, "HAS_BIAS": True}) == ("hbm", "hbm")
    assert roofline._huffman_epilogue({"XW": 0, "SLABS": 2, "HAS_BIAS": False}) == ("hbm", "l2", "l2")
    assert roofline._huffman_epilogue({"ROWS": 32, "PIECES": 4, "DENSE": True}) == ()  # the decoder
    assert KERNEL_MODELS["dense_codes"].epilogue({"HAS_BIAS": True}) == ()
    for form, waits in (("fixed", machine.l2_latency_cycles), ("huffman", 0)):
        (launch,) = layer_launches(form, small_stats, 1)
        cost = _cost({"int": 100.0, "ldg.32": 4.0}, {"int": 50}, launch.num_warps)
        model = KERNEL_MODELS[form]
        latency = {}
        for name, m in (("with", model), ("without", dataclasses.replace(model, epilogue=lambda c: ()))):
            p = predict_launch(machine, small_stats, m, launch, cost, element_bytes=2)
            latency[name] = p.bounds_s["latency"] * machine.clock_hz
        assert latency["with"] - latency["without"] == pytest.approx(waits, abs=1e-6)


def test_huffman_prologue_instructions_issue_during_its_trips(small_stats):
    """The Huffman kernel issues every load before its loop ahead of its first wait, so the
    instructions before the loop overlap the prologue's two HBM trips: a program's start takes the
    longer of the two; the instructions after the loop still add. The fixed-width kernel's
    prologue instructions add to its trip."""
    machine = MACHINES["h100-sxm"]
    trips = 2 * machine.hbm_latency_cycles
    assert KERNEL_MODELS["huffman"].prologue == ("hbm", "hbm") and KERNEL_MODELS["huffman"].prologue_overlaps
    assert not KERNEL_MODELS["fixed"].prologue_overlaps

    def latency(form: str, before: int, after: int) -> float:
        (launch,) = layer_launches(form, small_stats, 1)
        cost = _cost({"int": 100.0}, {"int": before + after}, launch.num_warps, before={"int": before})
        model = dataclasses.replace(KERNEL_MODELS[form], steps_before_last_trip=None)  # both trips whole
        p = predict_launch(machine, small_stats, model, launch, cost, element_bytes=2)
        return p.bounds_s["latency"] * machine.clock_hz

    per_warp = -(-layer_launches("huffman", small_stats, 1)[0].num_warps // machine.issue_per_sm_clock)
    assert latency("huffman", 200, 50) - latency("huffman", 0, 50) == pytest.approx(0, abs=1e-6)
    assert latency("huffman", 200, 80) - latency("huffman", 200, 50) == pytest.approx(30 * per_warp, abs=1e-6)
    longer = trips // per_warp + 100  # more instructions before the loop than the trips last
    assert latency("huffman", longer, 50) - latency("huffman", 0, 50) == pytest.approx(
        longer * per_warp - trips, abs=1e-6
    )
    fixed_warp = -(-layer_launches("fixed", small_stats, 1)[0].num_warps // machine.issue_per_sm_clock)
    assert latency("fixed", 200, 50) - latency("fixed", 0, 50) == pytest.approx(200 * fixed_warp, abs=1e-6)


def test_roofline_arithmetic(small_stats):
    machine = MACHINES["h100-sxm"]
    (launch,) = layer_launches("fixed", small_stats, 1)
    warps = launch.num_warps
    cost = _cost({"int": 100.0, "ldg.32": 4.0}, {"int": 50, "stg.16": 2}, warps)
    p = predict_launch(machine, small_stats, KERNEL_MODELS["fixed"], launch, cost, element_bytes=2)
    chunks = launch.constexprs["T"]
    trips = sum(-(-g // chunks) * n for g, n in small_stats.fixed.block_groups.items())
    programs = small_stats.fixed.n_blocks
    assert p.programs == programs
    assert p.warp_instructions == warps * (programs * 52 + trips * 104)
    assert p.lsu_instructions == warps * (programs * 2 + trips * 4)
    assert p.layout_bytes == (sum(small_stats.fixed.bit_counts.values()) + 7) // 8
    assert (p.x_bytes, p.y_bytes) == (2 * SMALL.inputs, 2 * SMALL.outputs)
    clock = machine.clock_hz * machine.pipe_efficiency
    assert p.bounds_s["issue"] == pytest.approx(p.warp_instructions / (programs * 4 * clock))
    hbm = machine.hbm_tb_s * 1e12 * machine.hbm_efficiency
    assert p.bounds_s["hbm"] == pytest.approx(p.total_bytes / hbm)
    assert p.bounds_s["latency"] > 0 and p.l1_wavefronts > 0
    row = combine(machine, small_stats, "fixed", 1, [p])
    bounds = {b: row[f"{b}_us"] for b in ("issue", "lsu", "l1", "hbm", "latency")}
    assert row["bound"] == max(bounds, key=bounds.get)
    assert row["predicted_us"] == pytest.approx(max(bounds.values()) + machine.launch_us, abs=2e-3)
    assert row["cublas_fp16_us"] == pytest.approx(cublas_fp16_us(machine, small_stats, 1), abs=1e-3)
    assert row["predicted_speedup"] == pytest.approx(row["cublas_fp16_us"] / row["predicted_us"], rel=1e-3)
    assert 0 < row["byte_limit_share"] <= 1
    dense = 2 * (SMALL.inputs * SMALL.outputs + SMALL.inputs + SMALL.outputs)
    assert cublas_fp16_us(machine, small_stats, 1) == pytest.approx(machine.launch_us + dense / hbm * 1e6)


def test_huffman_iterations_wait_for_their_stream_words(small_stats, monkeypatch):
    """A Huffman lane's words are interleaved with its warp's, a line each: asked into L1 one refill
    ahead, with a short loop body an iteration lasts its words' HBM latency, not its chain."""
    from dc_kernels.huffman.layout import ROWS_AHEAD
    from perf.cost import roofline

    assert roofline.ROWS_AHEAD == ROWS_AHEAD  # the model's lead is the kernels'
    monkeypatch.setattr(roofline, "ROWS_AHEAD", 1)  # one refill of lead
    machine = MACHINES["h100-sxm"]
    (launch,) = layer_launches("huffman", small_stats, 1)
    steps = launch.constexprs["K"]
    bits = small_stats.huffman.total_bits / small_stats.huffman.symbols
    floor = roofline._huffman_floor(small_stats, launch.constexprs)
    assert floor == {"hbm": pytest.approx(steps * bits / 32)}
    cost = _cost({"int": 10.0}, {"int": 0}, launch.num_warps)
    model = dataclasses.replace(KERNEL_MODELS["huffman"], steps_before_last_trip=None)  # both trips whole

    def latency_cycles() -> float:
        p = predict_launch(machine, small_stats, model, launch, cost, element_bytes=2)
        return p.bounds_s["latency"] * machine.clock_hz

    prologue = 2 * machine.hbm_latency_cycles  # the offsets (heads beside them), then the rows past the heads
    per_iteration = (latency_cycles() - prologue) / max(model.trips(small_stats, launch.constexprs))
    assert per_iteration == pytest.approx(steps * bits / 32 * machine.hbm_latency_cycles, rel=1e-6)
    assert per_iteration > steps * machine.l1_latency_cycles + 10  # more than the chain
    monkeypatch.setattr(roofline, "ROWS_AHEAD", 64)  # words far enough ahead: the chain
    per_iteration = (latency_cycles() - prologue) / max(model.trips(small_stats, launch.constexprs))
    assert per_iteration == pytest.approx(steps * machine.l1_latency_cycles + 10, rel=1e-6)


def test_decode_then_cublas_adds_cublas(small_stats):
    """A row whose launches decode the weight for cuBLAS: cuBLAS's predicted time (launch included)
    and bytes added to the decoder's."""
    machine = MACHINES["h100-sxm"]
    (launch,) = layer_launches("dense_codes", small_stats, 16)
    assert decodes_for_cublas([launch]) and decodes_for_cublas(layer_launches("fixed", small_stats, 64))
    assert not decodes_for_cublas(layer_launches("dense_codes", small_stats, 1))
    assert not decodes_for_cublas(layer_launches("fixed", small_stats, 16))
    cost = _cost({"int": 100.0, "ldg.32": 4.0}, {"int": 50, "stg.16": 2}, launch.num_warps)
    p = predict_launch(machine, small_stats, KERNEL_MODELS["dense_codes"], launch, cost, element_bytes=2)
    alone = combine(machine, small_stats, "dense_codes", 16, [p])
    row = combine(machine, small_stats, "dense_codes", 16, [p], dense_gemm=True)
    cublas = cublas_fp16_us(machine, small_stats, 16)
    assert (alone["launches"], row["launches"]) == (1, 2)
    assert row["predicted_us"] == pytest.approx(alone["predicted_us"] + cublas, abs=2e-3)
    assert (
        row["predicted_speedup"] == pytest.approx(cublas / row["predicted_us"], rel=1e-3)
        and row["predicted_speedup"] < 1
    )
    assert row["byte_limit_us"] > alone["byte_limit_us"]


def test_machine_table_has_a_source_for_every_figure():
    rows = machine_rows()
    assert {r["figure"] for r in rows} >= {"sms", "hbm_tb_s", "sustained_ghz", "issue_per_sm_clock"}
    assert all(r["source"] for r in rows)
    assert all(
        isinstance(v, (int, float)) and v > 0 for r in rows for k, v in r.items() if k.startswith("NVIDIA")
    )
    assert all("planning figure" in SOURCES[f] for f in ("copy_tb_s", "sustained_ghz", "launch_us"))
    assert MACHINES["h100-sxm"].sms == 132 and MACHINES["h200"].hbm_tb_s == 4.8
    assert not math.isnan(MACHINES["h200"].clock_hz)


def test_dense_codes_model_follows_the_launches(small_stats):
    """The dense-codes model's trips and bits for the launches the dispatcher makes: the GEMV
    kernel at batch 1 (whole groups of 16 in the loop), the decoder at batch 16 (cuBLAS after
    it), the GEMM kernel where ``path="codes"`` forces it."""
    from dc_kernels.dense_codes.layout import row_stride
    from dc_kernels.planes import planes_bytes
    from perf.cost.launches import dense_codes_shell

    model = KERNEL_MODELS["dense_codes"]
    (gemv,) = layer_launches("dense_codes", small_stats, 1)
    (decode,) = layer_launches("dense_codes", small_stats, 16)
    x = torch.empty((16, small_stats.inputs), dtype=torch.float16, device="meta")
    with recorded_launches() as launches:
        codes_launch.run(x, dense_codes_shell(small_stats, 4), path="codes")
    (gemm,) = launches
    assert gemv.name == "dense_codes_gemv_kernel" and gemm.name == "dense_codes_gemm_kernel"
    assert decode.name == "dense_codes_decode_kernel"
    rows, g = gemv.constexprs["R"], gemv.constexprs["G"]
    assert model.trips(small_stats, gemv.constexprs) == {
        (small_stats.inputs // 16) // g: -(-small_stats.outputs // rows)
    }
    k = gemm.constexprs["BLOCK_K"]
    assert sum(model.trips(small_stats, gemm.constexprs)) == -(-small_stats.inputs // k)
    bits = model.layout_bits(small_stats)
    assert bits["planes_bits"] == 8 * planes_bytes(small_stats.outputs * row_stride(small_stats.inputs), 4)
    gathers = model.gathers(small_stats, gemv, 2)
    assert gathers["codebook"] == small_stats.outputs * small_stats.inputs / 32 and gathers["x"] > 0


def test_the_roofline_replays_a_body_whose_loads_it_can_name(small_stats):
    """Huffman at batch 1 (x on chip): its loop's global loads are L1 hits, so a warp's iteration
    is the replayed body; a body holding a load the model cannot name (with x read from memory)
    falls back to the chain of dependent loads plus the issue cycles."""
    machine = MACHINES["h100-sxm"]
    model = dataclasses.replace(KERNEL_MODELS["huffman"], steps_before_last_trip=None)  # start apart
    (launch,) = layer_launches("huffman", small_stats, 1)
    assert launch.constexprs["XW"] > 0

    def ins(opcode: str, stall: int, write: int | None = None, wait: int = 0) -> Instruction:
        return Instruction(opcode, control=Control(stall, False, write, None, wait))

    body = (
        ins("LDG.E", 1, write=0),
        *[ins("IADD3", 6) for _ in range(64)],
        ins("LOP3.LUT", 1, wait=0b1),
        ins("BRA", 1),
    )
    assert pass_cycles(body, lambda i: machine.l1_latency_cycles, 4, 20) == 1 + 64 * 6 + 1 + 1

    def iteration(cost_body) -> float:
        cost = _cost({"int": float(len(body))}, {"int": 0}, launch.num_warps)
        cost = dataclasses.replace(cost, counts=dataclasses.replace(cost.counts, body=cost_body))
        p = predict_launch(machine, small_stats, model, launch, cost, element_bytes=2)
        return p.bounds_s["latency"] * machine.clock_hz

    without = iteration(())
    stalled = tuple(dataclasses.replace(i, control=dataclasses.replace(i.control, stall=15)) for i in body)
    trips = max(model.trips(small_stats, launch.constexprs))
    floor = sum(machine.hbm_latency_cycles * n for n in model.floor(small_stats, launch.constexprs).values())
    replayed = pass_cycles(stalled, lambda i: machine.l1_latency_cycles, 4, 20)
    assert replayed > floor  # the replay, not the stream's floor, binds
    chain = machine.l1_latency_cycles * launch.constexprs["K"] + len(body)  # what stands in without a body
    assert iteration(stalled) - without == pytest.approx(trips * (replayed - max(floor, chain)), rel=1e-6)
    counted = dataclasses.replace(stalled[1], opcode="DEPBAR.LE")  # a wait on a scoreboard's count
    assert iteration((stalled[0], counted, *stalled[2:])) == pytest.approx(without, rel=1e-9)
    x_from_memory = {**launch.constexprs, "XW": 0}
    assert model.loop_loads(x_from_memory, "LDG.E") is None
    assert KERNEL_MODELS["fixed"].loop_loads({"BB": 1}, "LDG.E.U16") == "l2"
    assert KERNEL_MODELS["fixed"].loop_loads({"BB": 1}, "LDG.E.128") == "hbm"
    assert KERNEL_MODELS["fixed"].loop_loads({"BB": 4}, "LDG.E.128") is None
    assert KERNEL_MODELS["dense_codes"].loop_loads is None


def test_huffman_steps_on_the_heads_overlap_the_second_trip(small_stats):
    """A Huffman lane decodes from its head until the second refill, which takes the first word
    past the head (`HEAD_WORDS` words: 64 bits read; refills after every two steps): those steps
    overlap the prologue's second HBM trip, which a program's start loses up to its length."""
    from perf.cost import roofline

    machine = MACHINES["h100-sxm"]
    (launch,) = layer_launches("huffman", small_stats, 1)
    bits = small_stats.huffman.total_bits / small_stats.huffman.symbols
    steps = roofline._huffman_steps_on_heads(small_stats, launch.constexprs)
    assert steps % 2 == 0 and (steps - 2) * bits < 32 * (roofline.HEAD_WORDS - 1) <= steps * bits
    model = KERNEL_MODELS["huffman"]
    whole = dataclasses.replace(model, steps_before_last_trip=None)
    k = launch.constexprs["K"]

    def start_saved(loop_instructions: float) -> float:
        cost = _cost({"int": loop_instructions}, {"int": 0}, launch.num_warps)
        cycles = [
            predict_launch(machine, small_stats, m, launch, cost, element_bytes=2).bounds_s["latency"]
            * machine.clock_hz
            for m in (whole, model)
        ]
        return cycles[0] - cycles[1]

    per_warp = -(-launch.num_warps // machine.issue_per_sm_clock)
    floor = sum(
        machine.hbm_latency_cycles * n
        for n in roofline._huffman_floor(small_stats, launch.constexprs).values()
    )
    short = 10.0  # an iteration of its stream words' floor: the steps cover part of the trip
    iteration = max(k * machine.l1_latency_cycles + short * per_warp, floor)
    assert start_saved(short) == pytest.approx(
        min(machine.hbm_latency_cycles, steps * iteration / k), rel=1e-6
    )
    assert start_saved(5000.0) == pytest.approx(machine.hbm_latency_cycles, rel=1e-6)  # long steps: all of it


def test_closing_iterations_are_replayed(small_stats):
    """A closing iteration of ``K / 2`` or ``K / 4`` steps waits on its own loads, barriers and
    gathers like a whole one: each is replayed (its share of an iteration: its multiply-adds over
    the loop's), and a program whose trips end in a fraction takes the closings that make it up."""
    from perf.cost import roofline

    machine = MACHINES["h100-sxm"]
    assert roofline._trip_cycles(2.0, 100.0, [(0.5, 70.0), (0.25, 40.0)], 20.0) == 200.0
    assert roofline._trip_cycles(1.75, 100.0, [(0.5, 70.0), (0.25, 40.0)], 20.0) == 210.0
    assert roofline._trip_cycles(1.25, 100.0, [(0.5, 70.0), (0.25, 40.0)], 20.0) == 140.0
    assert roofline._trip_cycles(1.25, 100.0, [], 20.0) == 125.0  # no closing known: its share
    assert roofline._trip_cycles(0.5, 100.0, [(0.5, 10.0)], 60.0) == 30.0  # at least its share of the floor

    def ins(opcode: str, stall: int, write: int | None = None, wait: int = 0) -> Instruction:
        return Instruction(opcode, control=Control(stall, False, write, None, wait))

    def steps(n: int, chain: int) -> tuple:  # n multiply-adds after a lookup and a dependent chain
        fmas = [ins("FFMA", 4) for _ in range(n)]
        return (ins("LDG.E", 1, write=0), ins("LOP3.LUT", 1, wait=0b1), *[ins("IADD3", 15)] * chain, *fmas)

    body, half, quarter = (*steps(8, 64), ins("BRA", 1)), (*steps(4, 40), ins("BAR.SYNC", 2)), steps(2, 24)
    (launch,) = layer_launches("huffman", small_stats, 1)
    model = KERNEL_MODELS["huffman"]
    trips = model.trips(small_stats, launch.constexprs)
    assert max(trips) % 1 == 0.25  # the longest program ends in a K / 4 closing
    cost = _cost({"int": 66.0, "ldg.32": 1.0, "ffma": 8.0, "branch": 1.0}, {"int": 0}, launch.num_warps)
    cost = dataclasses.replace(cost, counts=dataclasses.replace(cost.counts, body=body))
    closings = dataclasses.replace(cost.counts, closing_bodies=(half, quarter))
    closed = dataclasses.replace(cost, counts=closings)

    def replay(instructions) -> float:
        latency = {"LDG": machine.l1_latency_cycles}
        return pass_cycles(
            instructions,
            lambda i: latency.get(i.base, machine.other_latency_cycles),
            machine.operand_read_cycles,
            machine.barrier_cycles,
        )

    parts = roofline.closing_cycles(machine, model, closed.counts, launch.constexprs)
    assert parts == [(0.5, replay(half)), (0.25, replay(quarter))]
    assert roofline.closing_cycles(machine, model, cost.counts, launch.constexprs) == []
    x_from_memory = {**launch.constexprs, "XW": 0}  # its loads have no level: nothing replayed
    assert roofline.closing_cycles(machine, model, closed.counts, x_from_memory) == []

    iteration = replay(body)
    floor = sum(machine.hbm_latency_cycles * n for n in model.floor(small_stats, launch.constexprs).values())
    assert iteration > floor and replay(quarter) > 0.25 * iteration  # the replays bind
    cycles = [
        predict_launch(machine, small_stats, model, launch, c, element_bytes=2).bounds_s["latency"]
        * machine.clock_hz
        for c in (cost, closed)
    ]
    assert cycles[1] - cycles[0] == pytest.approx(replay(quarter) - 0.25 * iteration, rel=1e-6)
