import pytest
import torch

from rspretrain.core.errors import ConfigError
from rspretrain.views.grid_shuffle import GridShuffle, grid_shuffle, grid_unshuffle


def _cells(x, g):
    b, c, h, w = x.shape
    return x.view(b, c, g, h // g, g, w // g).permute(0, 2, 4, 1, 3, 5).reshape(b, g * g, -1)


def test_shuffle_is_a_per_sample_permutation_of_cells():
    g = 4
    x = torch.randn(3, 5, 16, 12)
    shuffled, perm = grid_shuffle(x, g, generator=torch.Generator().manual_seed(0))
    assert shuffled.shape == x.shape
    for b in range(3):
        assert sorted(perm[b].tolist()) == list(range(g * g))  # a permutation
        assert torch.equal(_cells(shuffled, g)[b], _cells(x, g)[b][perm[b]])  # output cell i = input cell perm[i]
    assert not torch.equal(perm[0], perm[1])  # each sample draws its own
    assert not torch.equal(shuffled, x)


def test_unshuffle_inverts_shuffle_exactly():
    x = torch.randn(4, 8, 24, 24)
    for g in (1, 2, 3, 6):
        shuffled, perm = grid_shuffle(x, g)
        assert torch.equal(grid_unshuffle(shuffled, perm, g), x)


def test_given_permutation_is_applied_and_gradients_flow():
    x = torch.randn(1, 2, 4, 4, requires_grad=True)
    identity = torch.arange(4).view(1, 4)
    out, _ = grid_shuffle(x, 2, permutation=identity)
    assert torch.equal(out, x)
    reverse = identity.flip(1)
    out, _ = grid_shuffle(x, 2, permutation=reverse)
    assert torch.equal(out[..., :2, :2], x[..., 2:, 2:])
    out.sum().backward()
    assert torch.all(x.grad == 1)


def test_indivisible_map_is_a_config_error_and_disabled_is_identity():
    with pytest.raises(ConfigError, match="15x15"):
        grid_shuffle(torch.randn(1, 1, 15, 15), 4)
    x = torch.randn(2, 3, 8, 8)
    out, perm = GridShuffle(4, enabled=False)(x)
    assert out is x and torch.equal(perm[1], torch.arange(16))
