import pytest
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


def _released_grid(h, w, h_start, w_start, flip, n):
    """CMID's released ``_location_to_NxN_grid``, restated cell by cell: (row coordinate, column coordinate) of
    cell (k, l) = (i + (k + 1/2) h / N, j + (l + 1/2) w / N) with i, j albumentations' fractional offsets, columns
    swapped when flipped."""
    grid = [[(h_start + (k + 0.5) * h / n, w_start + (c + 0.5) * w / n) for c in range(n)] for k in range(n)]
    if flip:
        grid = [row[::-1] for row in grid]
    return grid


def test_released_code_boxes_grid_as_the_released_cmid_code():
    from rspretrain.views.crop_geometry import released_code_boxes

    height = width = 224
    boxes = torch.tensor([[30.0, 100.0, 120.0, 90.0], [0.0, 0.0, 224.0, 224.0], [104.0, 10.0, 120.0, 200.0]])
    flip = torch.tensor([False, True, True])
    centres = cell_centres(released_code_boxes(boxes, height, width), flip, 7).view(3, 7, 7, 2)
    for b, (x0, y0, w, h) in enumerate(boxes.tolist()):
        # albumentations' h_start = i / (H - h + 1e-10), w_start = j / (W - w + 1e-10)
        expected = _released_grid(h, w, y0 / (height - h + 1e-10), x0 / (width - w + 1e-10), bool(flip[b]), 7)
        for k in range(7):
            for c in range(7):
                y, x = expected[k][c]
                assert centres[b, k, c].tolist() == pytest.approx([x, y], abs=1e-4)
    # The offsets are fractions: every crop is gridded from (about) the top-left corner.
    assert released_code_boxes(boxes, height, width)[:, :2].max() <= 1.0 + 1e-6


def test_official_and_geometric_matching_differ_only_for_crops_away_from_the_corner():
    from rspretrain.nn.position_matching import position_match
    from rspretrain.views.crop_geometry import released_code_boxes

    a = torch.tensor([[0.0, 0.0, 150.0, 150.0], [40.0, 60.0, 150.0, 150.0]])
    b = torch.tensor([[0.0, 0.0, 120.0, 120.0], [100.0, 0.0, 120.0, 120.0]])
    no_flip = torch.zeros(2, dtype=torch.bool)
    geometric = position_match(cell_centres(a, no_flip, 7), cell_centres(b, no_flip, 7), 20)
    official = position_match(cell_centres(released_code_boxes(a, 224, 224), no_flip, 7),
                              cell_centres(released_code_boxes(b, 224, 224), no_flip, 7), 20)
    assert torch.equal(geometric[0][0], official[0][0]) and torch.equal(geometric[1][0], official[1][0])
    # Away from the corner the released pairing matches cells that lie far apart in the source.
    assert not torch.equal(geometric[1][1], official[1][1])
    true_distance = torch.cdist(cell_centres(a, no_flip, 7), cell_centres(b, no_flip, 7))[1]
    released = true_distance[official[0][1], official[1][1]].mean()
    assert released > 2 * true_distance[geometric[0][1], geometric[1][1]].mean()
