"""Knowledge terms: supervised objectives that attach to a base self-supervised objective by config.

One file per term, registered by name (:func:`~rspretrain.pretrain.knowledge.base.register_term`):

- ``natural_images`` (:mod:`.natural_images`): GeRSP's supervised classification of labeled natural images, in
  the student's shared-BN forward;
- ``land_cover`` (:mod:`.land_cover`): GeoKR's land-cover proportions of each georeferenced tile as a soft target,
  with GeoKR's noise-robust mean teacher (``teacher: sparse``) or without (``teacher: none``).

A base (``moco``, ``byol``, ``cmid``) takes ``model.knowledge: [{term: {options}}, ...]`` and adds each term's
weighted loss to its own; ``gersp`` is the preset ``moco`` + ``natural_images`` (:mod:`rspretrain.pretrain.methods.gersp`).
GeoKR stays a method of its own (``geokr``): it has no self-supervised base (its objective is the land-cover term
alone, ``L_cls + L_cons``) and it exports the term's teacher; the ``land_cover`` term with ``teacher: sparse`` computes
the same loss on the same view and networks (``tests/pretrain/knowledge/test_land_cover.py``).

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
