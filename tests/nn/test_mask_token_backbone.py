import pytest
import timm
import torch

from rspretrain.nn.backbones import Backbone, MaskToken, swin_window_size, timm_kwargs_for

SMALL = {
    "resnet18": {},
    "swin_tiny_patch4_window7_224": {"depths": (1, 1, 1, 1), "embed_dim": 24, "num_heads": (1, 1, 1, 1)},
    "vit_small_patch16_224": {"depth": 2, "embed_dim": 48, "num_heads": 2, "global_pool": "avg", "fc_norm": False},
}


def _backbone(arch):
    torch.manual_seed(0)
    return Backbone(arch, in_chans=4, image_size=64, timm_kwargs=SMALL[arch]).eval()


def _module_after_token_site(bb):
    """The module that consumes the stem / patch-embedding output (with the token already on it)."""
    if bb.arch.startswith("resnet"):
        return bb.model.layer1
    if bb.arch.startswith("swin"):
        return bb.model.layers[0]
    return bb.model.pos_drop  # ViT: patch tokens + position embedding (+ class token first)


@pytest.mark.parametrize("arch,stride,token_stride,grid", [
    ("resnet18", 32, 4, 16), ("swin_tiny_patch4_window7_224", 32, 4, 16), ("vit_small_patch16_224", 16, 16, 4),
])
def test_mask_token_changes_only_masked_positions(arch, stride, token_stride, grid):
    bb = _backbone(arch)
    assert bb.output_stride == stride and bb.token_stride == token_stride
    x = torch.randn(2, 4, 64, 64)
    mask = torch.zeros(2, 8, 8, dtype=torch.bool) if token_stride == 4 else torch.zeros(2, 4, 4, dtype=torch.bool)
    mask[0, 1, 2] = mask[1, 0, 0] = mask[1, -1, -1] = True
    token = MaskToken(bb.token_channels)
    with torch.no_grad():
        token.token.normal_()
    # What the network itself feeds on past the token site, in a plain and a masked forward_last_map.
    seen = []
    handle = _module_after_token_site(bb).register_forward_pre_hook(lambda m, args: seen.append(args[0].clone()))
    with torch.no_grad():
        plain = bb.forward_last_map(x)
        masked = bb.forward_last_map(x, mask, token)
    handle.remove()
    assert plain.shape == masked.shape == (2, bb.num_features, 64 // stride, 64 // stride)
    assert torch.allclose(plain.mean(dim=(2, 3)), bb(x), atol=1e-5)  # GAP of the last map = pooled feature
    before, after = seen
    channels_last = bb._token_site()[3]
    if arch.startswith("vit"):  # (B, prefix + N, C): the class token is never masked
        prefix = bb.model.num_prefix_tokens
        assert torch.equal(before[:, :prefix], after[:, :prefix])
        before, after = before[:, prefix:], after[:, prefix:]
    diff = after - before
    if not channels_last:
        diff = diff.permute(0, 2, 3, 1)
    diff = diff.reshape(2, grid, grid, -1)  # row-major token cells, channels last
    expected = mask.repeat_interleave(grid // mask.shape[1], 1).repeat_interleave(grid // mask.shape[2], 2)
    assert torch.equal(diff.abs().sum(-1) > 0, expected)  # exactly the masked cells move ...
    assert torch.allclose(diff[expected], token.token.detach().expand(int(expected.sum()), -1), atol=1e-5)  # by t
    assert not torch.allclose(plain, masked)


def test_zero_token_is_the_plain_network_and_gets_gradient_from_masked_cells_only():
    bb = _backbone("resnet18").train()
    x = torch.randn(2, 4, 64, 64)
    token = MaskToken(bb.token_channels)
    mask = torch.zeros(2, 8, 8, dtype=torch.bool)
    assert torch.allclose(bb.forward_last_map(x, mask, token), bb.forward_last_map(x), atol=1e-6)
    bb.forward_last_map(x, mask, token).sum().backward()
    assert token.token.grad is None or token.token.grad.abs().sum() == 0  # nothing masked: no gradient
    mask[0, 3, 3] = True
    bb.forward_last_map(x, mask, token).sum().backward()
    assert token.token.grad.abs().sum() > 0


def test_replace_mode_overwrites_masked_features():
    feats = torch.randn(1, 3, 2, 2)
    token = MaskToken(3, replace=True)
    mask = torch.tensor([[[True, False], [False, False]]])
    out = token(feats, mask, channels_last=False)
    assert torch.equal(out[0, :, 0, 0], torch.zeros(3)) and torch.equal(out[0, :, 1, 1], feats[0, :, 1, 1])


def test_a_mask_that_does_not_tile_the_token_grid_is_an_error():
    bb = _backbone("vit_small_patch16_224")
    with pytest.raises(ValueError, match="token grid"):
        bb.forward_last_map(torch.randn(1, 4, 64, 64), torch.zeros(1, 3, 3, dtype=torch.bool), MaskToken(48))


def test_swin_window_fits_the_input_size():
    assert swin_window_size(224) == 7 and swin_window_size(64) == 4 and swin_window_size(96) == 6
    assert timm_kwargs_for("swin_tiny_patch4_window7_224", 64) == {"img_size": 64, "window_size": 4}
    assert timm_kwargs_for("swin_tiny_patch4_window7_224", 224) == {"img_size": 224}
    assert timm_kwargs_for("resnet18", 64) == {}
    model = timm.create_model("swin_tiny_patch4_window7_224", num_classes=0,
                              **timm_kwargs_for("swin_tiny_patch4_window7_224", 64))
    for stage in model.layers:
        block = stage.blocks[0]
        h, w = block.input_resolution
        assert h % block.window_size[0] == 0 and w % block.window_size[1] == 0  # no zero padding
