import pytest

from perf.power import PowerFigure, cpu_power, gpu_power, measure_package_power, read_rapl_joules


def test_cpu_power_precedence_and_tdp_share():
    assert cpu_power("AMD EPYC", 2, measured=30.0, given=12.0) == PowerFigure(12.0, "given", "--cpu-watts")
    measured = cpu_power("AMD EPYC", 2, measured=30.0)
    assert measured.kind == "measured" and measured.watts == 30.0
    estimate = cpu_power("AMD EPYC 7B13", 2)
    assert estimate.kind == "estimate" and estimate.watts == pytest.approx(280 / 64 * 2)
    assert "TDP" in estimate.label() and "estimate" in estimate.label()
    paper = cpu_power("Intel(R) Core(TM) i7-5930K CPU @ 3.50GHz", 12)
    assert paper.watts == pytest.approx(140.0)  # at most the package: 6 of 6 cores
    generic = cpu_power("Some RISC-V chip", 3)
    assert generic.kind == "estimate" and generic.watts == 30.0 and "generic" in generic.source
    with pytest.raises(ValueError, match="threads"):
        cpu_power("AMD EPYC", 0)


def test_gpu_power_by_name():
    assert gpu_power("NVIDIA H200").watts == 700.0
    assert gpu_power("NVIDIA H200 NVL").watts == 600.0
    assert gpu_power("NVIDIA A100-SXM4-80GB").watts == 400.0
    assert gpu_power("NVIDIA A100-PCIE-40GB").watts == 300.0
    assert gpu_power("Unknown Accelerator") is None
    assert gpu_power("Unknown Accelerator", given=250.0).kind == "given"


def test_power_figure_rejects_bad_values():
    with pytest.raises(ValueError, match="kind"):
        PowerFigure(1.0, "guess", "x")
    with pytest.raises(ValueError, match="positive"):
        PowerFigure(0.0, "estimate", "x")


def test_package_power_from_a_counter(tmp_path):
    (tmp_path / "max_energy_range_uj").write_text("1000000000\n")
    counter = tmp_path / "energy_uj"
    counter.write_text("999000000\n")
    assert read_rapl_joules(tmp_path) == (999.0, 1000.0)

    def work():  # 2 J pass while the counter wraps around once
        counter.write_text("1000000\n")
        return "done"

    result, watts = measure_package_power(work, tmp_path)
    assert result == "done" and watts > 0
    assert measure_package_power(lambda: 1, tmp_path / "absent") == (1, None)
