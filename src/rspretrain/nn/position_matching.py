"""Match feature-map cells of two views by where they lie in the source image (CMID [0]).

For every cell of view A, the nearest cell of view B (Euclidean distance between their centres
in source pixels, :func:`rspretrain.views.crop_geometry.cell_centres`); of those pairs, the
``num_matches`` with the smallest distance are kept (CMID: 20 of 49). The same pairs index the
student's cells of A and the teacher's cells of B for the dense distillation loss.

References:
    - [0] CMID, Muhtar et al. 2023, https://arxiv.org/abs/2304.09670 (``position_match`` in the
      official code: nearest neighbour per A cell, then the closest ``num_matches``)
"""

from __future__ import annotations

import torch

#: CMID keeps 20 of the 49 cells of a 7 x 7 map.
REFERENCE_MATCHES, REFERENCE_CELLS = 20, 49


def default_num_matches(cells: int) -> int:
    """CMID's 20 of 49 scaled to a map of ``cells`` cells (at least 1): 2 of 4, 7 of 16, 80 of 196."""
    return max(1, min(cells, round(REFERENCE_MATCHES * cells / REFERENCE_CELLS)))


def position_match(
    centres_a: torch.Tensor, centres_b: torch.Tensor, num_matches: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The ``num_matches`` closest (A cell, nearest B cell) pairs of each sample.

    Args:
        centres_a: ``(B, Na, 2)`` source-image cell centres of view A.
        centres_b: ``(B, Nb, 2)`` of view B.
        num_matches: pairs kept per sample (at most ``Na``).

    Returns:
        ``(index_a, index_b, distance)``, each ``(B, num_matches)``: A cells in increasing
        index order (ties in distance go to the lower index), their nearest B cells, and the
        distances. Identical crops give ``index_b == index_a`` and distance 0.
    """
    distances = torch.cdist(centres_a.float(), centres_b.float())  # (B, Na, Nb)
    nearest_distance, nearest_b = distances.min(dim=2)  # (B, Na)
    k = min(num_matches, centres_a.shape[1])
    order = torch.sort(nearest_distance, dim=1, stable=True).indices[:, :k]
    index_a = order.sort(dim=1).values  # keep the map's order, as the official masked_select does
    return index_a, nearest_b.gather(1, index_a), nearest_distance.gather(1, index_a)


def gather_cells(features: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Cells ``index`` (B, K) of ``features`` (B, N, C): ``(B, K, C)``."""
    return features.gather(1, index.unsqueeze(-1).expand(-1, -1, features.shape[-1]))
