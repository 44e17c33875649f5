import torch
from torch import nn

from rspretrain.nn.batch_shuffle import shuffled_forward


def test_single_device_shuffle_bn_returns_original_order():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8))
    x = torch.randn(16, 4)
    out = shuffled_forward(net, x, groups=1)
    assert torch.allclose(out, net(x))
    # With groups, each chunk has its own BN statistics: per-sample results differ, but the
    # samples come back in input order (a per-sample linear map without BN must be unchanged).
    lin = nn.Linear(4, 3)
    assert torch.allclose(shuffled_forward(lin, x, groups=4), lin(x), atol=1e-6)
    grouped = shuffled_forward(net, x, groups=4)
    assert grouped.shape == (16, 8)
    assert not torch.allclose(grouped, net(x))
