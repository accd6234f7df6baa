import numpy as np
import torch
from torch.nn.utils import parametrize

from compress import compress_matrix
from compress.pruning import magnitude_mask
from compress.weight_sharing import share_weights, shared_weight, unshare


def _layer(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Linear(12, 8)


def test_forward_uses_the_shared_values():
    layer = _layer()
    dense = layer.weight.detach().clone()
    mask = magnitude_mask(layer.weight, 0.4)
    shared = share_weights(layer, mask, 3)
    w = layer.weight
    assert torch.all(w[~mask] == 0)
    assert set(w[mask].tolist()) <= set(shared.codebook.tolist())
    # Same clustering as the one-shot path.
    expected = compress_matrix(dense, density=0.4, bits=3)
    assert shared.matrix().equals(expected)


def test_centroid_gradient_is_the_sum_of_its_weights_gradients():
    layer = _layer(1)
    mask = magnitude_mask(layer.weight, 0.5)
    shared = share_weights(layer, mask, 2)
    x = torch.randn(16, 12)
    layer(x).pow(2).sum().backward()
    # The gradient every weight would get if it were free.
    free = layer.weight.detach().clone().requires_grad_(True)
    torch.nn.functional.linear(x, free, layer.bias.detach()).pow(2).sum().backward()
    codes = shared.codes
    expected = torch.zeros_like(shared.codebook).index_add_(0, codes[mask], free.grad[mask])
    torch.testing.assert_close(shared.codebook.grad, expected)


def test_fine_tuning_moves_centroids_not_assignments():
    layer = _layer(2)
    mask = magnitude_mask(layer.weight, 0.5)
    shared = share_weights(layer, mask, 2)
    codes_before = shared.codes.clone()
    codebook_before = shared.codebook.detach().clone()
    trainable = [p for p in layer.parameters() if p.requires_grad]
    assert any(p is shared.codebook for p in trainable)
    assert not any(p is layer.parametrizations.weight.original for p in trainable)
    optimizer = torch.optim.SGD(trainable, lr=0.01)
    for _ in range(3):
        optimizer.zero_grad()
        layer(torch.randn(4, 12)).sum().backward()
        optimizer.step()
    assert torch.equal(shared.codes, codes_before)
    assert not torch.equal(shared.codebook.detach(), codebook_before)
    assert torch.all(layer.weight[~mask] == 0)


def test_unshare_leaves_the_decoded_weight():
    layer = _layer(3)
    mask = magnitude_mask(layer.weight, 0.3)
    shared = share_weights(layer, mask, 4)
    matrix = shared.matrix()
    assert shared_weight(layer) is shared
    unshare(layer)
    assert not parametrize.is_parametrized(layer)
    assert shared_weight(layer) is None
    np.testing.assert_array_equal(layer.weight.detach().numpy(), matrix.to_dense())


def test_conv_layers_share_per_flattened_channel():
    torch.manual_seed(4)
    conv = torch.nn.Conv2d(3, 4, 3)
    mask = magnitude_mask(conv.weight, 0.5)
    shared = share_weights(conv, mask, 2)
    assert shared.matrix().shape == (4, 27)
    assert conv(torch.randn(1, 3, 5, 5)).shape == (1, 4, 3, 3)
