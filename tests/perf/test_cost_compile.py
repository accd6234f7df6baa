"""The cost model on compiled code (subprocesses: tests run under Triton's interpreter, which
replaces compilation): the loop detector's count on a kernel counted by hand, the JIT's
specialization reproduced, the CI guard on instructions per kept weight, and `dcomp predict-gpu`
on one layer. Skipped, with the reason, only where Triton's compiler tools are missing."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from perf.cost.tools import missing_tools
from tests.perf.report_checks import check_png, read_csv

ROOT = Path(__file__).resolve().parents[2]
MISSING = missing_tools()
pytestmark = pytest.mark.skipif(MISSING is not None, reason=f"Triton's compiler tools are missing: {MISSING}")


def run(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="module")
def checks() -> dict:
    proc = run("-m", "tests.perf.cost_compile_checks")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


@pytest.mark.parametrize("arch", ["90", "80"])
def test_loop_detector_counts_a_known_kernel(checks, arch):
    known = checks["known"][arch]
    assert known["loops_found"] == 1 and known["loop_depth"] == 1
    per_iteration = known["per_iteration"]
    # By hand: one 32-bit load and one float add per iteration of the source loop, whatever the
    # factor ptxas unrolled it by (each SASS trip holds `unroll` loads).
    assert per_iteration["ldg.32"] == 1 and per_iteration["float"] == 1
    assert known["unroll"] >= 1 and known["unroll_ratio"] == known["unroll"]
    assert not {k for k in per_iteration if k.startswith(("lds", "sts", "stg", "shfl", "bar", "local"))}
    overhead = known["loop_instructions"] - 2  # address, counter, compare and branch
    assert 0 < overhead <= 6
    assert known["warp_instructions_per_item"] == pytest.approx(
        known["loop_instructions"] * 4 / 128, abs=1e-3
    )
    assert known["spill_store_bytes"] == known["spill_load_bytes"] == 0 and known["registers"] > 0
    # The replayed pass: the adds wait on their loads (issued in the same pass), at least one
    # latency, and at most that plus the body issued at the longest stall count.
    assert known["controlled"] and known["body"] == known["loop_instructions"] * known["unroll"]
    assert 100 <= known["replay"] <= 100 + 15 * known["body"]


def test_specialization_is_the_jits(checks):
    for launch, result in checks["specialization"].items():
        assert result["source"] == "triton-jit", launch
        assert result["differs"] == [], launch
    assert checks["specialization"]["fixed 1"]["one"] == ["batch", "stride_xk", "stride_yn"]
    assert checks["specialization"]["fixed 16"]["one"] == ["stride_yn"]  # x in pieces: strides 8 * n, 8


def test_ci_guard_instructions_per_kept_weight():
    proc = run("-m", "perf.cost.ceilings")
    print(proc.stdout)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert proc.stdout.count(": ok") == 6  # three ceilings, one prefetch count, two replayed loops


def _guard_with(tmp_path, pick, field: str, value):
    """``perf.cost.ceilings`` run on the recorded guards that ``pick`` keeps, ``field`` of the
    first set to ``value``."""
    ceilings = json.loads((ROOT / "perf" / "results" / "cost" / "ceilings.json").read_text())
    ceilings["guards"] = [g for g in ceilings["guards"] if pick(g)][:1]
    assert ceilings["guards"]
    ceilings["guards"][0][field] = value
    path = tmp_path / "ceilings.json"
    path.write_text(json.dumps(ceilings))
    return run("-m", "perf.cost.ceilings", "--ceilings", str(path))


def test_ci_guard_fails_without_the_huffman_loops_prefetches(tmp_path):
    """The Huffman refills wait on the previous refill's load, which only L1 prefetches keep off
    HBM: a loop that loses them fails the guard (here: more demanded than the loop has)."""
    proc = _guard_with(tmp_path, lambda g: g.get("min_loop_prefetches"), "min_loop_prefetches", 99)
    assert proc.returncode == 1 and "TOO FEW PREFETCHES" in proc.stdout
    assert "lost the cache prefetches" in proc.stderr


def test_ci_guard_fails_when_a_lone_warp_takes_longer(tmp_path):
    """A loop whose dependent chain grows (or that waits on a load sooner) is slower for a warp
    issuing alone without issuing more instructions: its replayed cycles have a limit of their
    own (here: below what the loop takes)."""
    proc = _guard_with(
        tmp_path, lambda g: g.get("max_warp_cycles_per_iteration"), "max_warp_cycles_per_iteration", 100
    )
    assert proc.returncode == 1 and "TOO SLOW ALONE" in proc.stdout
    assert "shorten the loop's dependent chain" in proc.stderr


def test_ci_guard_fails_over_a_ceiling(tmp_path):
    proc = _guard_with(tmp_path, lambda g: True, "max_warp_instructions_per_kept_weight", 0.5)
    assert proc.returncode == 1 and "OVER THE CEILING" in proc.stdout
    assert "raise the ceiling" in proc.stderr


def test_predict_gpu_one_layer(tmp_path):
    proc = run(
        "-m", "perf.cli", "predict-gpu", "--layers", "nt-lstm", "--machines", "h100-sxm", "--no-cache",
        "--out", str(tmp_path),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = read_csv(tmp_path / "predictions.csv")
    assert {(r["form"], r["batch"]) for r in rows} == {
        ("fixed", "1"),
        ("fixed", "16"),
        ("huffman", "1"),
        ("huffman", "16"),
        ("dense_codes", "1"),
        ("dense_codes", "16"),
    }
    codes = next(r for r in rows if r["form"] == "dense_codes" and r["batch"] == "1")
    # 4-bit codes for every weight (rows padded to a multiple of 16), whatever the density.
    assert int(codes["layout_bytes"]) >= 2400 * 1201 // 2
    for r in rows:
        assert r["label"] == "predicted from the compiled code, not measured"
        assert float(r["predicted_us"]) > 0 and float(r["cublas_fp16_us"]) > 0
        assert r["bound"] in ("issue", "lsu", "l1", "hbm", "latency")
        assert float(r["predicted_us"]) >= float(r[f"{r['bound']}_us"])
    data = json.loads((tmp_path / "predictions.json").read_text())
    assert data["label"] == "predicted from the compiled code, not measured" and data["kernels"]
    assert "predicted from the compiled code, not measured" in (tmp_path / "predictions.md").read_text()
    check_png(tmp_path / "predicted_speedup.png")
