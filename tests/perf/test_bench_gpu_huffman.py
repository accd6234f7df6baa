"""The GPU benchmark's correctness phase, run on the CPU through Triton's interpreter."""

import numpy as np
import torch

from perf import bench_gpu_huffman
from workloads import LayerSpec, random_compressed_matrix


def test_check_case_passes_and_catches_a_wrong_layer(monkeypatch, tmp_path):
    monkeypatch.setattr(bench_gpu_huffman, "DEVICE", "cpu")
    log = bench_gpu_huffman.Log(tmp_path / "log.txt")
    matrix = random_compressed_matrix(9, 30, 0.3, 3, seed=int(np.random.SeedSequence().generate_state(1)[0]))
    assert bench_gpu_huffman.check_case("small", matrix, log, batches=(1, 5), dtypes=(torch.float32,))
    # A layout of another layer must be caught (decoder and GEMV both compared).
    other = random_compressed_matrix(9, 30, 0.3, 3, seed=1 + int(matrix.codes.sum()))
    real_from_matrix = bench_gpu_huffman.HuffmanLayout.from_matrix
    monkeypatch.setattr(
        bench_gpu_huffman.HuffmanLayout, "from_matrix", lambda m, **kw: real_from_matrix(other, **kw)
    )
    assert not bench_gpu_huffman.check_case("wrong", matrix, log, batches=(1,), dtypes=(torch.float32,))
    assert "FAIL" in (tmp_path / "log.txt").read_text()


def test_bench_layer_logic_on_a_small_layer(monkeypatch, tmp_path):
    # The timing helpers need CUDA: replace them; everything else runs as on the GPU.
    monkeypatch.setattr(bench_gpu_huffman, "DEVICE", "cpu")
    monkeypatch.setattr(bench_gpu_huffman, "time_warm", lambda fn: (fn(), 2.0)[1])
    monkeypatch.setattr(bench_gpu_huffman, "time_cold", lambda fn: (fn(), 3.0)[1])
    small = LayerSpec("vgg6", 96, 24, 0.1)  # named like a variant layer: both kernel variants run
    monkeypatch.setitem(bench_gpu_huffman.PAPER_LAYERS, "vgg6", small)
    rows = []
    log = bench_gpu_huffman.Log(tmp_path / "log.txt")
    bench_gpu_huffman.bench_layer("vgg6", 4, log, rows, 32, full=True)
    kernels = {(r["kernel"], r["batch"]) for r in rows}
    assert ("huffman_decode", 0) in kernels and ("fixed", 8) in kernels and ("cublas_fp16", 1) in kernels
    assert any(k.startswith("huffman_prefetch_") for k, _ in kernels)
    assert all(r.get("correct", True) for r in rows) and "FAIL" not in (tmp_path / "log.txt").read_text()
    summary = bench_gpu_huffman.summarize(rows, ok=True)
    assert "x1.00 of fixed" in summary[1] and summary[-1] == "correctness: ok"  # every cold time is 3.0
