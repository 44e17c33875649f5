"""Collate function for datasets whose ``__getitems__`` already returns a batch.

PyTorch's DataLoader fetcher calls ``dataset.__getitems__(indices)`` when the dataset defines it and passes the result
to ``collate_fn``. The datasets of :mod:`rspretrain.data` return a ready batch dict from ``__getitems__`` (one
tensor gather instead of B samples and a stack), which :func:`torch.utils.data.default_collate` cannot take (it
expects a list of samples). :func:`collate_batched` passes such batches through and falls back to the default collate
for lists of samples, so one ``collate_fn`` works for both kinds of datasets.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch.utils.data import default_collate


def collate_batched(data: Mapping[str, Any] | list[Any]) -> Any:
    """Return ``data`` unchanged if it is already a batch dict, else ``default_collate(data)``.

    Use as ``DataLoader(dataset, batch_size=..., collate_fn=collate_batched)``.
    """
    if isinstance(data, Mapping):
        return data
    return default_collate(data)
