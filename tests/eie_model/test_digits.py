"""EIE on the digits network's real activations (needs scikit-learn and the digits example)."""

import numpy as np
import pytest

pytest.importorskip("sklearn", reason="the digits example needs scikit-learn (the examples extra)")
pytest.importorskip("compress.examples.digits", reason="the digits example is not in this checkout")

from eie_model import EIEConfig, simulate_layer
from eie_model.digits import digits_workload
from tests.eie_model.test_simulator import _reference


def test_real_activations_through_eie():
    workload = digits_workload(image=3)
    assert [layer.name for layer in workload.layers] == ["fc1", "fc2", "fc3"]
    assert workload.accuracy > 80.0
    for layer in workload.layers:
        assert layer.matrix.codebook.size <= 15
        assert layer.activations.shape == (layer.matrix.in_features,)
        assert np.all(layer.activations >= 0)  # pixels, then ReLU outputs
        result = simulate_layer(layer.matrix, layer.activations, EIEConfig(pes=8))
        assert np.array_equal(
            result.output.codes, _reference(layer.matrix, layer.activations, result.output.fmt)
        )
        assert result.broadcasts == int(np.count_nonzero(layer.activations))
    # ReLU leaves real zeros for the LNZD to skip in the hidden layers.
    assert np.count_nonzero(workload.layers[1].activations) < workload.layers[1].activations.size
