import pytest
import torch

from compress import ConfigError, EmptyLayerError, NonFiniteWeightError
from compress.pruning import (
    apply_mask,
    check_weight,
    l2_penalty,
    magnitude_mask,
    mask_gradient,
    threshold_mask,
)


def _weight(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("density", [0.01, 0.1, 0.5, 0.999, 1.0])
def test_magnitude_mask_keeps_the_largest_exact_count(density):
    weight = _weight(30, 40)
    mask = magnitude_mask(weight, density)
    assert mask.dtype == torch.bool and mask.shape == weight.shape
    assert int(mask.sum()) == max(1, round(density * 1200))
    if not mask.all():
        assert weight.abs()[mask].min() >= weight.abs()[~mask].max()


def test_ties_go_to_the_lowest_positions():
    weight = torch.ones(2, 5)
    mask = magnitude_mask(weight, 0.3)
    assert mask.flatten().tolist() == [True, True, True] + [False] * 7


def test_later_masks_are_subsets():
    weight = _weight(20, 20)
    first = magnitude_mask(weight, 0.5)
    # A weight outside the first mask is now large: it must stay pruned.
    grown = weight.clone()
    grown[~first] *= 100
    second = magnitude_mask(grown, 0.2, keep=first)
    assert not (second & ~first).any()
    assert int(second.sum()) == 80


def test_threshold_mask_is_the_papers_rule():
    weight = _weight(50, 50)
    mask = threshold_mask(weight, 0.8)
    assert torch.equal(mask, weight.abs() > 0.8 * weight.std())
    fixed = threshold_mask(weight, 1.0, std=0.5)
    assert torch.equal(fixed, weight.abs() > 0.5)


def test_threshold_mask_that_prunes_everything():
    with pytest.raises(EmptyLayerError, match=r"'fc9'.*prunes every weight"):
        threshold_mask(_weight(4, 4), 50.0, name="fc9")


def test_conv_weights_keep_their_shape():
    weight = _weight(8, 3, 3, 3)
    mask = magnitude_mask(weight, 0.25)
    assert mask.shape == weight.shape and int(mask.sum()) == 54
    assert check_weight(weight).shape == (8, 27)


def test_mask_enforcement_keeps_pruned_weights_exactly_zero():
    layer = torch.nn.Linear(10, 10)
    mask = magnitude_mask(layer.weight, 0.3)
    apply_mask(layer.weight, mask)
    mask_gradient(layer.weight, mask)
    optimizer = torch.optim.Adam(layer.parameters(), lr=0.1, weight_decay=0.01)
    for _ in range(5):
        optimizer.zero_grad()
        layer(torch.randn(4, 10)).pow(2).sum().backward()
        assert torch.all(layer.weight.grad[~mask] == 0)
        optimizer.step()
        assert torch.all(layer.weight[~mask] == 0)


def test_l2_penalty():
    weights = [torch.ones(2, 2), torch.full((3,), 2.0)]
    assert float(l2_penalty(weights, 0.5)) == pytest.approx(0.5 * (4 + 12))
    assert float(l2_penalty([], 1.0)) == 0.0
    with pytest.raises(ConfigError, match="L2"):
        l2_penalty(weights, -1.0)


@pytest.mark.parametrize("density", [0.0, -0.1, 1.5, float("nan"), "0.5", True])
def test_bad_density(density):
    with pytest.raises(ConfigError, match="density"):
        magnitude_mask(_weight(3, 3), density)


def test_bad_weights():
    with pytest.raises(EmptyLayerError, match="'e'"):
        magnitude_mask(torch.zeros(0, 3), 0.5, name="e")
    with pytest.raises(ValueError, match="2-D"):
        magnitude_mask(torch.zeros(3), 0.5)
    with pytest.raises(TypeError, match="floating point"):
        magnitude_mask(torch.ones(3, 3, dtype=torch.int64), 0.5)
    inf = _weight(3, 3)
    inf[0, 0] = float("inf")
    with pytest.raises(NonFiniteWeightError, match=r"'fc2'.*1 of 9"):
        magnitude_mask(inf, 0.5, name="fc2")
    with pytest.raises(ValueError, match="mask shape"):
        magnitude_mask(_weight(3, 3), 0.5, keep=torch.ones(2, 2, dtype=torch.bool))
    with pytest.raises(EmptyLayerError, match="previous mask"):
        magnitude_mask(_weight(3, 3), 0.5, keep=torch.zeros(3, 3, dtype=torch.bool))
