import torch
from torch import nn

from rspretrain.nn.heads import DINOHead, PixelShuffleDecoder


def test_dino_head_shapes_bn_and_unit_norm_prototypes():
    head = DINOHead(32, hidden_dim=64, bottleneck_dim=16, num_prototypes=40, batch_norm=True)
    x = torch.randn(4, 5, 32)
    logits = head(x)
    assert logits.shape == (4, 5, 40)
    assert logits.abs().max() <= 1 + 1e-5  # cosine between unit vectors
    assert sum(isinstance(m, nn.BatchNorm1d) for m in head.modules()) == 2
    assert not any(isinstance(m, nn.BatchNorm1d) for m in DINOHead(32, 64, 16, 40).modules())
    # scaling a prototype does not change the logits (weight norm with the gain fixed to 1)
    before = head.eval()(x)
    with torch.no_grad():
        head.prototypes[3].mul_(7.0)
    assert torch.allclose(head(x), before, atol=1e-6)


def test_dino_head_on_positions_equals_conv1d_over_positions():
    head = DINOHead(8, hidden_dim=16, bottleneck_dim=4, num_prototypes=6, batch_norm=True).train()
    x = torch.randn(3, 7, 8)
    conv = nn.Sequential(nn.Conv1d(8, 16, 1), nn.BatchNorm1d(16), nn.GELU(), nn.Conv1d(16, 16, 1),
                         nn.BatchNorm1d(16), nn.GELU(), nn.Conv1d(16, 4, 1)).train()
    linear_idx = [0, 3, 6]
    for li, ci in zip(linear_idx, linear_idx):
        conv[ci].weight.data = head.mlp[li].weight.data.unsqueeze(-1)
        conv[ci].bias.data = head.mlp[li].bias.data
    z = nn.functional.normalize(conv(x.transpose(1, 2)), dim=1)  # (B, 4, positions)
    expected = torch.einsum("bdp,kd->bpk", z, nn.functional.normalize(head.prototypes, dim=1))
    assert torch.allclose(head(x), expected, atol=1e-5)


def test_pixel_shuffle_decoder_reaches_input_resolution():
    dec = PixelShuffleDecoder(64, stride=32, out_chans=4)
    assert dec(torch.randn(2, 64, 2, 2)).shape == (2, 4, 64, 64)
    assert dec[0].out_channels == 32 * 32 * 4 and dec[0].kernel_size == (1, 1)
