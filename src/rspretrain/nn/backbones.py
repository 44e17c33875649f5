"""Backbone factory over timm.

Every backbone is a timm model created with ``num_classes=0`` (so calling it returns pooled
features) and any ``in_chans``. :class:`Backbone` adds the two things every method needs on top
of timm's uniform contract: pooled features and a list of stage feature maps, both in NCHW.
The wrapped timm model is kept as ``.model`` so its ``state_dict`` keys are timm's own and an
exported backbone loads back with ``timm.create_model(arch)`` directly.

Masked-image methods (CMID [1], SimMIM [2]) add a learnable mask token to the features of
masked positions at the first place the network has a token grid: the output of a ResNet's stem
(after the max-pool, stride 4) or of a transformer's patch embedding (Swin: 4 px, ViT: the patch
size). :meth:`Backbone.forward_last_map` takes a :class:`MaskToken` and a block mask and adds it
there with a forward hook, so the timm model itself (and its exported weights) stays unchanged.

References:
    - [0] timm, R. Wightman, https://github.com/huggingface/pytorch-image-models
    - [1] CMID, Muhtar et al. 2023, https://arxiv.org/abs/2304.09670
    - [2] SimMIM, Xie et al. 2022, https://arxiv.org/abs/2111.09886
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from typing import Any

import timm
import torch
from torch import nn

from rspretrain.core.errors import ConfigError

#: Architectures the toolkit is tested with; any other timm name also works.
TESTED_BACKBONES = ("resnet18", "resnet50", "vit_small_patch16_224", "swin_tiny_patch4_window7_224")


def is_transformer(arch: str) -> bool:
    """True for timm transformer families whose position embeddings depend on ``img_size``."""
    return arch.startswith(("vit_", "swin", "deit", "beit", "eva"))


def swin_window_size(image_size: int, patch_size: int = 4, window_size: int = 7, num_stages: int = 4) -> int:
    """The attention window a Swin transformer needs at ``image_size``: the largest window no larger
    than ``window_size`` that tiles every stage's token grid exactly.

    At 224 px the stage grids are 56/28/14/7 and the paper's window 7 tiles them all. timm pads a
    grid the window does not divide with zero tokens that attention does not mask out, so at
    other sizes the window shrinks until it divides every grid larger than itself (grids at most
    one window wide are attended globally, as timm already does). At 64 px the grids are
    16/8/4/2: window 4 (4x4 windows of 16 px at stage 1, 2x2 at stage 2, global attention at
    stages 3 and 4); at 96 px window 6; at 224 px window 7.
    """
    grids = [image_size // patch_size // 2**i for i in range(num_stages)]
    for window in range(window_size, 0, -1):
        if all(g % window == 0 for g in grids if g > window):
            return window
    return 1


def timm_kwargs_for(arch: str, image_size: int | None) -> dict[str, Any]:
    """Extra timm constructor kwargs an architecture needs at a given input size.

    Transformers are built at the training resolution (``img_size``) so that their position
    embeddings and windows match the input; Swin's window shrinks to one that tiles its stage
    grids (:func:`swin_window_size`) when the name's window does not; CNNs need nothing.
    """
    if image_size is None or not is_transformer(arch):
        return {}
    kwargs: dict[str, Any] = {"img_size": int(image_size)}
    if arch.startswith("swin"):
        patch = re.search(r"patch(\d+)", arch)
        window = re.search(r"window(\d+)", arch)
        if patch and window:
            fitted = swin_window_size(int(image_size), int(patch.group(1)), int(window.group(1)))
            if fitted != int(window.group(1)):
                kwargs["window_size"] = fitted
    return kwargs


class MaskToken(nn.Module):
    """A learnable token put on the features of masked positions (SimMIM [2], CMID [1]).

    CMID adds it (``replace=False``: ``f + t * m``, zero-initialised, so training starts from the
    plain network) after the ResNet stem / Swin patch embedding; SimMIM replaces the feature
    (``replace=True``: ``f * (1 - m) + t * m``).

    Args:
        dim: channels of the features it is put on (:attr:`Backbone.token_channels`).
        replace: replace the masked features instead of adding to them.
    """

    def __init__(self, dim: int, replace: bool = False) -> None:
        super().__init__()
        self.token = nn.Parameter(torch.zeros(dim))
        self.replace = replace

    def forward(self, features: torch.Tensor, mask: torch.Tensor, channels_last: bool) -> torch.Tensor:
        """Put the token on ``features`` where ``mask`` (B, H, W) is true, ``mask`` already at the
        features' token grid. Layouts: NCHW, or channels-last NHWC / NLC (row-major tokens)."""
        m = mask.to(features.dtype)
        if channels_last:
            m = m.reshape(features.shape[0], *features.shape[1:-1], 1)
            token = self.token.to(features.dtype)
        else:
            m = m.unsqueeze(1)
            token = self.token.to(features.dtype).view(1, -1, 1, 1)
        if self.replace:
            return features * (1 - m) + token * m
        return features + token * m


def local_arch(arch: Any, where: str = "backbone") -> str:
    """``arch`` if it names a model of timm's local registry (``resnet18``, ``resnet18.a1_in1k``, ...).

    A hub or URL name (``hf-hub:...``, ``timm/...``) or an unknown name is a :class:`ConfigError` before timm sees it:
    timm would fetch such a model's config from the network even without weights, and names also come from files
    (exports, checkpoints) that must never make loading reach out.
    """
    if not isinstance(arch, str) or not arch:
        raise ConfigError(f"{where}: the architecture must be a timm model name, got {arch!r}")
    if ":" in arch or "/" in arch or not timm.is_model(arch):
        raise ConfigError(f"{where}: {arch!r} is not a model of timm's local registry (hub and URL names are refused: "
                          "nothing is downloaded)")
    return arch


class Backbone(nn.Module):
    """A timm backbone with pooled features and stage maps.

    Args:
        arch: timm model name, e.g. ``"resnet18"``, ``"swin_tiny_patch4_window7_224"``.
        in_chans: number of input bands.
        image_size: training input size; transformers are built for it.
        timm_kwargs: further kwargs for ``timm.create_model`` (e.g. ``drop_path_rate``).

    Example:
        >>> bb = Backbone("resnet18", in_chans=4)
        >>> bb(torch.randn(2, 4, 64, 64)).shape
        torch.Size([2, 512])
    """

    def __init__(
        self,
        arch: str = "resnet18",
        in_chans: int = 3,
        image_size: int | None = None,
        timm_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        local_arch(arch, f"backbone {arch!r}")
        kwargs = {**timm_kwargs_for(arch, image_size), **(timm_kwargs or {})}
        try:
            self.model = timm.create_model(arch, pretrained=False, num_classes=0, in_chans=in_chans, **kwargs)
        except RuntimeError as err:  # timm raises RuntimeError for unknown names
            raise ConfigError(f"backbone {arch!r}: {err}") from None
        self.arch = arch
        self.in_chans = in_chans
        self.image_size = image_size
        self.timm_kwargs = kwargs
        self.num_features: int = self.model.num_features

    @property
    def feature_info(self) -> list[dict[str, Any]]:
        """Channels and reduction of each stage map returned by :meth:`forward_stages`."""
        return [dict(info) for info in self.model.feature_info]

    @property
    def output_stride(self) -> int:
        """Input pixels per cell of the last feature map (32 for ResNets and Swin, 16 for ViT-*/16)."""
        return int(self.model.feature_info[-1]["reduction"])

    def _token_site(self) -> tuple[nn.Module, int, int, bool]:
        """(module, channels, stride, channels_last) of the first token grid, where a mask token goes."""
        model = self.model
        embed = getattr(model, "patch_embed", None)
        if embed is not None and hasattr(embed, "proj"):  # Swin, ViT and kin: after the patch embedding
            return embed, int(embed.proj.out_channels), int(embed.patch_size[0]), True
        if all(hasattr(model, name) for name in ("maxpool", "layer1", "feature_info")):  # ResNet family: stem output
            stem = next(i for i in model.feature_info if i["module"] in ("act1", "bn1", "conv1"))
            return model.maxpool, int(stem["num_chs"]), int(model.feature_info[1]["reduction"]), False
        raise ConfigError(f"backbone {self.arch!r}: no mask-token position known (ResNet, Swin and ViT families are)")

    @property
    def token_channels(self) -> int:
        """Channels of the stem / patch-embedding output (a :class:`MaskToken`'s size)."""
        return self._token_site()[1]

    @property
    def token_stride(self) -> int:
        """Input pixels per position of the stem / patch-embedding output (4 for ResNets and Swin)."""
        return self._token_site()[2]

    def forward_last_map(
        self, x: torch.Tensor, mask: torch.Tensor | None = None, mask_token: MaskToken | None = None
    ) -> torch.Tensor:
        """The last feature map ``(B, num_features, H / output_stride, W / output_stride)``, normed
        as timm's ``forward_features`` (its global average is the pooled feature, see CMID).

        With ``mask`` (B, h, w) boolean blocks of a regular grid over the input and ``mask_token``,
        the token is put on the masked positions of the stem / patch-embedding output (the mask
        is repeated to that grid; each block must cover whole token cells).
        """
        if mask is None or mask_token is None:
            return self.model.forward_intermediates(x, indices=1, norm=True, intermediates_only=True)[-1]
        site, _, stride, channels_last = self._token_site()
        grid = (x.shape[-2] // stride, x.shape[-1] // stride)
        if grid[0] % mask.shape[-2] or grid[1] % mask.shape[-1]:
            raise ValueError(f"a {tuple(mask.shape[-2:])} block mask does not tile the {grid} token grid")
        token_mask = mask.repeat_interleave(grid[0] // mask.shape[-2], dim=-2).repeat_interleave(
            grid[1] // mask.shape[-1], dim=-1
        )
        handle = site.register_forward_hook(lambda module, inputs, out: mask_token(out, token_mask, channels_last))
        try:
            return self.model.forward_intermediates(x, indices=1, norm=True, intermediates_only=True)[-1]
        finally:
            handle.remove()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features ``(B, num_features)``."""
        return self.model(x)

    def forward_stages(self, x: torch.Tensor, indices: int | Sequence[int] | None = None) -> list[torch.Tensor]:
        """Stage feature maps in NCHW (timm's ``forward_intermediates``).

        For ResNets the list is [stem, layer1, layer2, layer3, layer4]; for Swin one map per
        stage; for ViT one map per block.
        """
        return self.model.forward_intermediates(x, indices=indices, intermediates_only=True)

    def forward_pooled_and_stages(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Pooled features and all stage maps in one pass (no second forward)."""
        final, stages = self.model.forward_intermediates(x)
        return self.model.forward_head(final, pre_logits=True), stages


def create_backbone(arch: str, in_chans: int = 3, image_size: int | None = None, **timm_kwargs: Any) -> Backbone:
    """Factory: a :class:`Backbone` for any timm architecture name."""
    return Backbone(arch, in_chans=in_chans, image_size=image_size, timm_kwargs=timm_kwargs or None)


def load_timm_weights(backbone: Backbone, path: str | os.PathLike) -> None:
    """Initialise ``backbone`` from a local timm state dict (``.safetensors``, or a ``torch.save`` file).

    For starting from ImageNet weights without a download at run time (GeoKR starts from ImageNet ResNet-50):
    classifier keys the pooled backbone lacks (``fc.*``, ``head.*``) are skipped, and a first convolution made for
    another band count is adapted with timm's ``adapt_input_conv`` (RGB weights repeated and rescaled for N bands).

    Raises:
        DataError: the file is missing or unreadable, or its weights do not fit the architecture.
    """
    from pathlib import Path

    from timm.models import adapt_input_conv

    from rspretrain.core.errors import DataError

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: backbone weight file not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
            state = state.get("state_dict", state.get("model", state)) if isinstance(state, dict) else state
    except Exception as error:  # noqa: BLE001 - torch/safetensors raise several types for bad files
        raise DataError(f"{path}: not a readable weight file ({str(error).splitlines()[0]})") from None
    model = backbone.model
    own = model.state_dict()
    state = {k.removeprefix("module."): v for k, v in state.items()}
    state = {k: v for k, v in state.items() if k in own or not k.startswith(("fc.", "head.", "classifier."))}
    stem = next((k for k, v in own.items() if v.ndim == 4), None)  # the input convolution (first 4-D weight)
    if stem in state and state[stem].ndim == 4 and state[stem].shape[1] != own[stem].shape[1]:
        state[stem] = adapt_input_conv(own[stem].shape[1], state[stem])
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as error:  # shape mismatches
        first = next((line.strip() for line in str(error).splitlines() if "size mismatch" in line), str(error))
        raise DataError(f"{path}: weights do not fit {backbone.arch} ({first[:200]})") from None
    if missing or unexpected:
        raise DataError(
            f"{path}: weights do not fit {backbone.arch} (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
