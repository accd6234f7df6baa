"""The GPU benchmark's correctness phase, run on the CPU through Triton's interpreter."""

import numpy as np
import torch

from compress import random_compressed_matrix
from perf import bench_gpu_huffman


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
