"""Batch indices of a ``__getitems__`` call, checked and made non-negative (Python's negative indexing kept)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def checked_positions(indices: Sequence[int], n: int, noun: str = "tiles") -> np.ndarray:
    """int64 ``(B,)`` positions in ``[0, n)`` of ``indices`` (``-1`` is the last item).

    Raises:
        IndexError: an index outside ``[-n, n)``, naming the dataset's size.
    """
    index = np.asarray(indices, dtype=np.int64).reshape(-1)
    if len(index) and (index.min() < -n or index.max() >= n):
        raise IndexError(f"index out of range for {n} {noun}")
    return np.where(index < 0, index + n, index)
