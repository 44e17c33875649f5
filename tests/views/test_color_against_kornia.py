"""Cross-check of the fused colour op (views.functional.color_transform) against kornia's ColorJiggle functions.

kornia's ``ColorJiggle`` is its torchvision-semantics colour jitter; its functional pieces are applied here one by one
with the factors our op drew (same generator, same draw order), so the comparison is exact per image:
brightness (``adjust_brightness_accumulative``), contrast (``adjust_contrast_with_mean_subtraction``) and saturation
(``adjust_saturation_with_gray_subtraction``) must agree to float precision; hue is our documented approximation
(a YIQ chroma rotation instead of kornia's HSV hue shift) and must turn the same way by a similar amount.
"""

import math

import torch

kornia_enhance = __import__("pytest").importorskip("kornia.enhance")

from rspretrain.views.functional import color_transform  # noqa: E402


def _images(n=16, seed=0):
    # mid-range pixels: no intermediate value leaves [0, 1], so kornia's clamp after every op and ours at the end agree
    return 0.35 + 0.3 * torch.rand(n, 3, 24, 24, generator=torch.Generator().manual_seed(seed))


def _factors(n, low, high, seed, draws=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.empty(n).uniform_(low, high, generator=g) for _ in range(draws)]


def test_brightness_contrast_saturation_equal_kornias_colorjiggle_ops():
    x = _images()
    ours = color_transform(x, 0.4, 0.4, 0.4, 0.0, jitter_p=1.0, grayscale_p=0.0,
                           generator=torch.Generator().manual_seed(7))
    fb, fc, fs = _factors(len(x), 0.6, 1.4, seed=7, draws=3)  # the same three draws, in the op's order
    ref = kornia_enhance.adjust_brightness_accumulative(x, fb)
    ref = kornia_enhance.adjust_contrast_with_mean_subtraction(ref, fc)
    ref = kornia_enhance.adjust_saturation_with_gray_subtraction(ref, fs)
    torch.testing.assert_close(ours, ref, atol=2e-6, rtol=0)


def test_hue_rotation_stays_close_to_kornias_hsv_hue_shift():
    x = _images(seed=1)
    ours = color_transform(x, 0.0, 0.0, 0.0, 0.1, jitter_p=1.0, grayscale_p=0.0,
                           generator=torch.Generator().manual_seed(3))
    (turns,) = _factors(len(x), -0.1, 0.1, seed=3)
    ref = kornia_enhance.adjust_hue(x, turns * 2 * math.pi)  # kornia: radians
    ours_moved, ref_moved = (ours - x).flatten(1), (ref - x).flatten(1)
    # The same direction per image (the sign error this test found made the cosines negative), and a linear
    # approximation of the HSV shift that moves pixels somewhat further; a documented approximation (see
    # color_transform), held here so it cannot drift further. The assertion message prints the measured values.
    cos = torch.nn.functional.cosine_similarity(ours_moved, ref_moved)
    ratio = ours_moved.abs().mean() / ref_moved.abs().mean()
    assert cos.min() > 0.6 and 1.0 < ratio < 1.5, (cos.min().item(), ratio.item())
