import torch

from rspretrain.views import functional as VF
from rspretrain.views.crop_geometry import cell_centres


def test_full_image_centres_and_flip_reverses_columns():
    boxes = torch.tensor([[0.0, 0.0, 64.0, 64.0], [0.0, 0.0, 64.0, 64.0]])
    centres = cell_centres(boxes, torch.tensor([False, True]), 2).view(2, 2, 2, 2)  # (B, row, col, xy)
    assert centres[0].tolist() == [[[16, 16], [48, 16]], [[16, 48], [48, 48]]]
    assert centres[1].tolist() == [[[48, 16], [16, 16]], [[48, 48], [16, 48]]]


def test_centres_point_at_the_source_pixels_each_cell_shows():
    # The source encodes its own coordinates; a view's cell centre, read from the resampled
    # view, must be the source coordinate cell_centres reports (flipped views included).
    size, grid = 96, 4
    ys, xs = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    source = torch.stack([xs, ys]).unsqueeze(0).expand(6, 2, size, size).float()
    boxes = torch.tensor([[0, 0, 96, 96], [10, 20, 40, 60], [30, 6, 64, 48], [0, 0, 48, 48], [12, 0, 84, 96],
                          [5, 5, 80, 80]], dtype=torch.float32)
    flip = torch.tensor([False, True, False, True, True, False])
    view_size = 64  # 16 view px per cell: the centre sits between pixels 7 and 8
    views = VF.crop_resize_flip(source, boxes, view_size, flip)
    centres = cell_centres(boxes, flip, grid).view(6, grid, grid, 2)
    cell = view_size // grid
    for r in range(grid):
        for c in range(grid):
            patch = views[:, :, r * cell + cell // 2 - 1: r * cell + cell // 2 + 1,
                          c * cell + cell // 2 - 1: c * cell + cell // 2 + 1]
            seen = patch.mean(dim=(2, 3))  # (B, xy) at the cell's centre
            assert torch.allclose(seen, centres[:, r, c], atol=1e-3), (r, c, seen, centres[:, r, c])
