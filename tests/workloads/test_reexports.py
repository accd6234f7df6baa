"""The workload names `compress` and `eie_model` first published resolve, lazily, to the very
objects of `workloads`."""

import subprocess
import sys

import pytest

import compress
import eie_model
import workloads

REEXPORTS = [
    (compress, ["LLM_LAYERS", "PAPER_LAYERS", "LayerSpec", "get_layer", "random_compressed_matrix"]),
    (
        eie_model,
        ["BENCHMARKS", "benchmark_inputs", "digits_workload", "simulate_benchmark", "simulate_digits"],
    ),
]


@pytest.mark.parametrize(("package", "names"), REEXPORTS, ids=lambda v: getattr(v, "__name__", ""))
def test_reexports_are_the_workloads_objects(package, names):
    for name in names:
        assert getattr(package, name) is getattr(workloads, name), name
        assert name in vars(package)  # kept after the first access: later reads skip __getattr__
        assert name in dir(package) and name in package.__all__


def test_from_imports_keep_working():
    from compress import PAPER_LAYERS, random_compressed_matrix
    from eie_model import BENCHMARKS, simulate_benchmark

    assert PAPER_LAYERS is workloads.PAPER_LAYERS and tuple(PAPER_LAYERS) == BENCHMARKS
    assert random_compressed_matrix is workloads.random_compressed_matrix
    assert simulate_benchmark is workloads.simulate_benchmark


def test_unknown_names_still_raise_attribute_error():
    with pytest.raises(AttributeError, match="module 'compress' has no attribute 'no_such_name'"):
        compress.no_such_name  # noqa: B018
    assert not hasattr(eie_model, "benchmarks")  # the module that held them is gone


def test_library_packages_do_not_import_workloads():
    """Importing the library (and using what it defines) leaves `workloads` unimported; the first
    access to a re-exported name imports it."""
    code = (
        "import sys, compress, dc_kernels, eie_model\n"
        "compress.CompressedMatrix, eie_model.simulate_layer\n"
        "assert 'workloads' not in sys.modules, sorted(m for m in sys.modules if 'workloads' in m)\n"
        "compress.PAPER_LAYERS\n"
        "assert 'workloads' in sys.modules\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
