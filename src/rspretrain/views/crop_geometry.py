"""Where each cell of a view's feature grid lies in the source image (CMID [0], dense SSL [1]).

A view is a crop ``(x0, y0, w, h)`` of the source, resized and maybe flipped horizontally. Its
last feature map is an ``N x N`` grid of cells; cell (row r, column c) covers the crop's
``r``-th band of height ``h / N`` and, unflipped, its ``c``-th band of width ``w / N``. Flipping
mirrors the view, so the view's column ``c`` then shows the crop's column ``N - 1 - c``. The
centres of those cells in source pixels let two views of one image be matched position by
position (:func:`rspretrain.nn.position_matching.position_match`).

:func:`released_code_boxes` gives the boxes the released CMID code grids instead: it passes albumentations' crop
offsets, which are fractions of the free space (``y0 / (H - h)``), where pixels are expected, so every crop is gridded
as if it began at the top-left corner (METHODS.md, CMID §(c); ``model.cell_matching: official``).

References:
    - [0] CMID, Muhtar et al. 2023, https://arxiv.org/abs/2304.09670
    - [1] DenseCL, Wang et al. 2021, https://arxiv.org/abs/2011.09157
"""

from __future__ import annotations

import torch


def cell_centres(boxes: torch.Tensor, flip: torch.Tensor | None, grid: int) -> torch.Tensor:
    """Source-image ``(x, y)`` of the centre of every cell of a ``grid x grid`` map, row-major.

    Args:
        boxes: ``(B, 4)`` crops as ``(x0, y0, w, h)`` in source pixels
            (:func:`rspretrain.views.functional.sample_resized_crops`).
        flip: ``(B,)`` booleans, True where the view was flipped horizontally (or None).
        grid: cells per side of the feature map.

    Returns:
        ``(B, grid * grid, 2)``; entry ``r * grid + c`` is cell (r, c) of the view.
    """
    x0, y0, w, h = boxes.to(torch.float32).unbind(dim=1)
    steps = torch.arange(grid, dtype=torch.float32, device=boxes.device) + 0.5
    cols = steps.view(1, grid).expand(boxes.shape[0], grid)
    if flip is not None:
        cols = torch.where(flip.view(-1, 1), grid - cols, cols)  # column c shows crop column N-1-c
    xs = x0.view(-1, 1) + cols * (w / grid).view(-1, 1)  # (B, grid) per column
    ys = y0.view(-1, 1) + steps.view(1, grid) * (h / grid).view(-1, 1)  # (B, grid) per row
    centres = torch.stack(
        [xs.unsqueeze(1).expand(-1, grid, grid), ys.unsqueeze(2).expand(-1, grid, grid)], dim=-1
    )  # (B, rows, cols, 2)
    return centres.reshape(boxes.shape[0], grid * grid, 2)


def released_code_boxes(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``boxes`` as CMID's released code grids them: ``(x0 / (W - w), y0 / (H - h), w, h)``.

    The released ``RandomResizedCropWithLocation`` records albumentations' ``h_start = i / (H - h + 1e-10)`` and
    ``w_start`` and ``_location_to_NxN_grid`` adds them to the cell centres as pixels; the same ``1e-10`` keeps a
    crop as wide as the source at offset 0.

    Args:
        boxes: ``(B, 4)`` crops ``(x0, y0, w, h)`` in pixels of a ``height x width`` source (the released code resizes
            every image to the training size first, so that is the source there).
    """
    x0, y0, w, h = boxes.to(torch.float32).unbind(dim=1)
    return torch.stack([x0 / (width - w + 1e-10), y0 / (height - h + 1e-10), w, h], dim=1)
