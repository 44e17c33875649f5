"""Knowledge terms: supervised objectives that attach to a base self-supervised objective by config.

One file per term, registered by name (:func:`~rspretrain.pretrain.knowledge.base.register_term`):

- ``natural_images`` (:mod:`.natural_images`): GeRSP's supervised classification of labeled natural images, in
  the student's shared-BN forward.

A base (``moco``, ``byol``, ``cmid``) takes ``model.knowledge: [{term: {options}}, ...]`` and adds each term's
weighted loss to its own; ``gersp`` is the preset ``moco`` + ``natural_images`` (:mod:`rspretrain.pretrain.methods.gersp`).

Not a term: GeoKR's land-cover supervision keeps its own method (``geokr``), because its objective is the
land-cover loss *with* a noise-robust mean teacher that sees the same view, updated at sparse intervals and exported;
that teacher is not a base objective here (a base's EMA teacher sees another view and serves the base's loss), so a
``land_cover`` term on another base would not be GeoKR's objective (see the issue note).

Example:
    >>> from rspretrain.pretrain import methods
    >>> model = methods.create("moco", knowledge=[{"natural_images": {"weight": 1.0, "num_classes": 10}}])
"""

from __future__ import annotations

import importlib
import pkgutil

from rspretrain.pretrain.knowledge.base import TERMS, KnowledgeTerm, parse_terms, register_term, term_class, with_data

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["TERMS", "KnowledgeTerm", "parse_terms", "register_term", "term_class", "with_data"]
