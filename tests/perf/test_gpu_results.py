import inspect

import pytest

from dc_kernels import GpuLayout
from dc_kernels.fixed.launch import DEFAULT_DISPATCH
from perf import bench_gpu, bench_gpu_huffman, gpu_run
from perf.gpu_results import GpuResultsError, newest_gpu_results, read_gpu_results, result_folders
from tests.perf.gpu_fixtures import huffman_time, kernel_times, write_huffman_csv, write_kernel_csv
from workloads import random_compressed_matrix

LAYERS = ["alex7", "vgg6", "nt-lstm"]
H200 = "NVIDIA H200"


def test_reads_batch1_cold_times_of_the_preferred_code_width(tmp_path):
    folder = tmp_path / "NVIDIA-H200_20261128T2300"
    write_kernel_csv(folder, LAYERS, H200, "2026-11-28T23:00:00Z")
    write_huffman_csv(folder, LAYERS, H200, "2026-11-28T23:04:00Z")
    results = read_gpu_results(folder)
    assert results.gpu == H200 and results.code_bits == 5
    assert results.date == "2026-11-28T23:04:00Z" and results.commit == "abc123"
    assert list(results.layers) == LAYERS
    for i, name in enumerate(LAYERS):
        times = results.layers[name]
        expected = kernel_times(i, 5)
        assert times.fixed_us == expected["ours"]  # 5-bit, batch 1, not the 4-bit or batch-16 rows
        assert times.dense_us == expected["cublas_fp16"]
        assert times.dense_fp32_us == expected["cublas_fp32"]
        assert times.huffman_us == huffman_time(i)  # the default segment size, not the variant
    assert "results.csv" in results.sources["fixed"] and "huffman_gpu.csv" in results.sources["huffman"]
    assert H200 in results.describe()


def test_huffman_csv_alone_gives_all_three_columns(tmp_path):
    write_huffman_csv(tmp_path, LAYERS, H200, "2026-11-28T23:04:00Z")
    times = read_gpu_results(tmp_path).layers["vgg6"]
    assert (times.dense_us, times.fixed_us, times.huffman_us) == (211.0, 12.0, huffman_time(1))


def test_kernel_csv_alone_has_no_huffman_column(tmp_path):
    write_kernel_csv(tmp_path, LAYERS, H200, "2026-11-28T23:00:00Z")
    results = read_gpu_results(tmp_path)
    assert all(t.huffman_us is None for t in results.layers.values())
    assert "huffman" not in results.sources


def test_no_results_and_dry_runs_are_no_gpu_results(tmp_path):
    assert newest_gpu_results(tmp_path / "missing") is None
    assert newest_gpu_results(tmp_path) is None
    (tmp_path / "codec_cpu").mkdir()
    (tmp_path / "codec_cpu" / "bench_codec.csv").write_text("stream,cpu\nz,AMD\n")
    write_kernel_csv(tmp_path / "dry_run", LAYERS, "cpu-interpreter-x86_64", "2026-11-29T00:00:00Z")
    assert result_folders(tmp_path) == [tmp_path / "dry_run"]
    assert newest_gpu_results(tmp_path) is None
    with pytest.raises(GpuResultsError, match="no GPU rows"):
        read_gpu_results(tmp_path / "dry_run")


def test_newest_folder_wins(tmp_path):
    write_kernel_csv(tmp_path / "A100_old", LAYERS, "NVIDIA A100-SXM4-80GB", "2026-10-01T10:00:00Z")
    write_kernel_csv(tmp_path / "H200_new" / "run", LAYERS, H200, "2026-11-28T23:00:00Z")
    assert newest_gpu_results(tmp_path).gpu == H200


def test_missing_columns_are_an_error(tmp_path):
    (tmp_path / "results.csv").write_text("gpu,layer,batch\nNVIDIA H200,alex7,1\n")
    with pytest.raises(GpuResultsError, match="missing columns"):
        read_gpu_results(tmp_path)


def test_the_gpu_scripts_still_write_what_the_reader_reads():
    """The fixtures mirror the scripts' rows; fail loudly when the scripts change their output."""
    kernel_source = inspect.getsource(bench_gpu)
    assert 'run.save("results.csv"' in kernel_source
    for key in ('"ours_cold_us"', 'f"{bname}_cold_us"', '"code_bits"', '"batch"', '"layer"'):
        assert key in kernel_source
    assert {"cublas_fp16", "cublas_fp32"} <= set(bench_gpu.BASELINES)
    huffman_source = inspect.getsource(bench_gpu_huffman)
    assert bench_gpu_huffman.CSV_NAME == "huffman_gpu.csv" and "run.save(CSV_NAME" in huffman_source
    for key in (
        '"us_cold"',
        '"kernel"',
        '"variant"',
        '"bits"',
        '"huffman"',
        '"fixed"',
        '"cublas_fp16"',
    ):
        assert key in huffman_source


def test_the_reader_reads_what_the_scripts_write(tmp_path, monkeypatch):
    """Both scripts' CPU dry runs (one tiny layer each) into one folder, under a GPU's name: the
    reader finds all three GPU columns, with the scripts' own numbers."""
    real_info = gpu_run.gpu_run_info
    monkeypatch.setattr(gpu_run, "gpu_run_info", lambda device: {**real_info(device), "gpu": H200})
    monkeypatch.setattr(bench_gpu_huffman, "correctness", lambda run, small: True)
    run = gpu_run.GpuRun.open(tmp_path, "cpu", log_name="log.txt", cold_runs=1)
    matrix = random_compressed_matrix(12, 40, 0.1, 5, seed=0)
    layers = [{"name": "nt-lstm", "matrix": matrix, "layout": GpuLayout.from_matrix(matrix, index_bits=5)}]
    (row,) = bench_gpu.time_layers(run, layers, 10.0, DEFAULT_DISPATCH, batches=(1,))
    assert bench_gpu_huffman.main(["--small", "--layers", "nt-lstm", "--out", str(tmp_path)]) == 0
    results = read_gpu_results(tmp_path)
    assert results.gpu == H200 and results.code_bits == 5
    times = results.layers["nt-lstm"]
    assert times.fixed_us == pytest.approx(row["ours_cold_us"])
    assert times.dense_us == pytest.approx(row["cublas_fp16_cold_us"])
    assert times.huffman_us is not None and times.huffman_us > 0
