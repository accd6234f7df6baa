"""Ahead-of-time compile of every dispatcher configuration for sm_80/sm_90, as the dispatcher's
launches specialize it: no register spills, and the compiled main loop's cost for each.

Here every kernel and configuration is compiled for sm_90 (the lent H100/H200) and float16 x: a
cold compile of both archs and all three dtypes took 13 minutes on a 2-core AMD EPYC (25
core-minutes), float16 for both archs 5.4 minutes. The record of both archs and all three dtypes,
`perf/results/cost/check_kernels_cost.json` (`dcomp check-kernels --cost --json`, rerun on every
kernel change), is checked for the same properties."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dc_kernels.dense_codes.launch import BATCH_BUCKETS as CODES_BUCKETS
from dc_kernels.fixed.launch import AOT_LANE_SHAPES, BATCH_BUCKETS
from perf.cost.launches import DENSE_CODE_WIDTHS
from perf.cost.tools import missing_tools
from perf.kernel_check import WIDTHS

ROOT = Path(__file__).resolve().parents[2]
MISSING = missing_tools()


@pytest.mark.skipif(MISSING is not None, reason=f"Triton's compiler tools are missing: {MISSING}")
def test_every_configuration_compiles_without_spills():
    # A subprocess: this process runs Triton's interpreter, which replaces compilation.
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "perf.cli",
            "check-kernels",
            "--cost",
            "--json",
            "--dtypes",
            "float16",
            "--archs",
            "90",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=500,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    check_results(json.loads(proc.stdout), archs={90}, dtypes=1)


def test_recorded_compile_of_every_dtype():
    recorded = json.loads((ROOT / "perf/results/cost/check_kernels_cost.json").read_text())
    check_results(recorded, archs={80, 90}, dtypes=3)


def check_results(results: list[dict], archs: set[int], dtypes: int) -> None:
    """Every configuration of ``dtypes`` x dtypes compiled for ``archs``, without spills, with a cost."""
    per_kernel = len(BATCH_BUCKETS) + 1  # one spmm launch per batch bucket, plus the dense decode
    codebook = [r for r in results if r["kernel"] in ("codebook_spmm_kernel", "decode_dense_kernel")]
    # archs x lane shapes x dtypes x entry widths
    assert len(codebook) == len(archs) * len(AOT_LANE_SHAPES) * dtypes * len(WIDTHS) * per_kernel
    codes = [r for r in results if r["kernel"].startswith("dense_codes")]
    assert len(codes) == len(archs) * dtypes * len(DENSE_CODE_WIDTHS) * (len(CODES_BUCKETS) + 1)
    assert {"huffman_spmm_kernel", "huffman_decode_kernel"} <= {r["kernel"] for r in results}
    assert {r["arch"] for r in results} == archs
    for r in results:
        assert r["spill_stores"] == 0 and r["spill_loads"] == 0, r
        assert 0 < r["registers"] <= 255
        cost = r["cost"]
        assert cost["loops_found"] >= 1 and cost["loop_instructions"] > 0, r
        assert cost["warp_instructions_per_item"] > 0 and cost["ctas_per_sm"] >= 1, r
        assert cost["warp_instructions_per_item_column"] == pytest.approx(
            cost["warp_instructions_per_item"] / max(r["batch_bucket"], 1), rel=1e-3, abs=1e-4
        )  # both rounded to 4 decimals
