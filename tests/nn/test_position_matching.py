import torch

from rspretrain.nn.position_matching import default_num_matches, gather_cells, position_match
from rspretrain.views.crop_geometry import cell_centres


def test_identical_crops_match_as_identity_with_zero_distance():
    boxes = torch.tensor([[3.0, 5.0, 140.0, 150.0], [0.0, 0.0, 224.0, 224.0]])
    flip = torch.tensor([True, False])
    centres = cell_centres(boxes, flip, 7)
    index_a, index_b, distance = position_match(centres, centres, 20)
    assert index_a.shape == (2, 20)
    assert torch.equal(index_a, index_b)
    assert torch.equal(distance, torch.zeros(2, 20))
    assert torch.equal(index_a, torch.arange(20).expand(2, 20))  # ties go to the lowest cells, in map order


def test_a_flipped_copy_matches_the_mirrored_column():
    boxes = torch.tensor([[10.0, 20.0, 96.0, 64.0]])
    a = cell_centres(boxes, torch.tensor([False]), 4)
    b = cell_centres(boxes, torch.tensor([True]), 4)
    index_a, index_b, distance = position_match(a, b, 16)
    rows, cols = index_a // 4, index_a % 4
    assert torch.equal(index_b, rows * 4 + (3 - cols))
    assert torch.allclose(distance, torch.zeros_like(distance))


def test_partial_overlap_keeps_the_closest_pairs():
    # B is A shifted right by half a cell and more: the kept pairs are the nearest ones.
    a = cell_centres(torch.tensor([[0.0, 0.0, 70.0, 70.0]]), None, 7)
    b = cell_centres(torch.tensor([[25.0, 0.0, 70.0, 70.0]]), None, 7)
    index_a, index_b, distance = position_match(a, b, 20)
    full = torch.cdist(a, b)[0]
    nearest = full.min(dim=1).values
    assert torch.allclose(distance[0], nearest[index_a[0]])
    assert distance.max() <= nearest.sort().values[19] + 1e-6
    assert torch.allclose(full[index_a[0], index_b[0]], distance[0])
    assert (distance[0] == 5.0).all()  # 25 px shift, 10 px cells: every kept pair is 5 px apart


def test_default_matches_scale_with_the_grid_and_gather():
    assert default_num_matches(49) == 20 and default_num_matches(4) == 2
    assert default_num_matches(16) == 7 and default_num_matches(1) == 1
    feats = torch.arange(2 * 5 * 3).view(2, 5, 3)
    out = gather_cells(feats, torch.tensor([[4, 0], [1, 1]]))
    assert out.tolist() == [[feats[0, 4].tolist(), feats[0, 0].tolist()], [feats[1, 1].tolist()] * 2]
