"""What every knowledge term has: a weight, its own data source, its heads on the student, its loss.

A knowledge term is a supervised objective that attaches to a base self-supervised objective (``moco``, ``byol``,
``cmid``) by config, each with its weight and its own data source::

    method: moco            # the base
    model:
      knowledge:
        - natural_images: {weight: 1.0, dataset: cifar10}   # GeRSP's term

The base adds ``sum_i weight_i * L_i`` of its terms to its own loss. A term:

- declares the data it needs (:meth:`KnowledgeTerm.configure_data`: the source the datamodule pairs with the main
  one) and fills its data-derived options once the data is set up (:meth:`KnowledgeTerm.from_data`: its classes);
- adds its heads to the student (:meth:`KnowledgeTerm.attach`), after the base has built its teacher, so teachers
  never copy a term's head;
- makes the views of its own images (:meth:`KnowledgeTerm.make_views`) with the base's recipe for one view
  (:meth:`~rspretrain.pretrain.methods.base.PretrainMethod.knowledge_view`); the base concatenates them after its
  query view in ONE student forward (shared BatchNorm statistics, as GeRSP's official code) and hands the term the
  pooled features of its part (:meth:`KnowledgeTerm.loss`).

Terms are registered by name (:func:`register_term`); ``model.knowledge`` is a list of one-key mappings
``{term_name: {option: value}}`` checked against the term's constructor (:func:`parse_terms`).
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Sequence
from typing import Any, ClassVar, TypeVar

import torch

from rspretrain.core.config import coerce
from rspretrain.core.errors import ConfigError
from rspretrain.nn.heads import LinearClassifier

T = TypeVar("T", bound=type)

#: term name -> term class; filled by :func:`register_term` as the term modules are imported.
TERMS: dict[str, type[KnowledgeTerm]] = {}


def register_term(cls: T) -> T:
    """Class decorator: register a knowledge term under its ``name``; a name can be registered once."""
    if cls.name in TERMS and TERMS[cls.name] is not cls:
        raise ConfigError(f"knowledge term {cls.name!r} is registered twice")
    TERMS[cls.name] = cls
    return cls


class KnowledgeTerm:
    """Base of the knowledge terms (plain objects: the term's parameters live in the student as its heads).

    Args:
        weight: the term's weight in the total loss (>= 0; 0 keeps the term's forward and logs but not its
            gradient).
    """

    #: The name in ``model.knowledge`` and in logs.
    name: ClassVar[str] = "term"
    #: The student entry of the term's head (:meth:`attach_linear_head`).
    head: ClassVar[str] = "term"
    #: Images the term adds to the student's shared forward (its views, concatenated after the base's query view).
    shared_inputs: ClassVar[int] = 0

    def __init__(self, weight: float = 1.0) -> None:
        if weight < 0:
            raise ConfigError(f"model.knowledge {self.name}: weight {weight} is negative")
        self.weight = float(weight)

    # -- config and data -----------------------------------------------------------------------------
    def options(self) -> dict[str, Any]:
        """The term's constructor arguments, as saved in the method's hyperparameters."""
        return {"weight": self.weight}

    def spec(self) -> dict[str, dict[str, Any]]:
        """The term as one ``model.knowledge`` item (``{name: options}``)."""
        return {self.name: self.options()}

    def configure_data(self, data: dict[str, Any]) -> None:
        """Point the datamodule's arguments ``data`` (``data:`` section as a dict) at the term's source, or raise
        :class:`ConfigError` naming the term when it has none."""

    def from_data(self, data_kwargs: dict[str, Any]) -> KnowledgeTerm:
        """The term with its data-derived options (classes) filled from the datamodule's ``model_kwargs()``."""
        return self

    # -- model -----------------------------------------------------------------------------------------
    def attach(self, method) -> None:
        """Add the term's heads to ``method.student`` (called at the end of the base's constructor)."""

    def attach_linear_head(self, method, num_classes: int | None, source: str) -> None:
        """Add a linear head ``method.student[self.head]`` on the backbone's pooled features for ``num_classes``
        classes (``source``: where they come from, for the error when they are unknown)."""
        if num_classes is None:
            raise ConfigError(f"knowledge term {self.name}: num_classes is unknown (it is set from {source}; give it "
                              "when building the method by hand)")
        if self.head in method.student:
            raise ConfigError(f"knowledge term {self.name}: the student already has a {self.head!r} head")
        method.student[self.head] = LinearClassifier(method.backbone.num_features, num_classes)

    def make_views(self, method, batch: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        """The term's ``shared_inputs`` views of ``batch`` (fp32, on the batch's device)."""
        return []

    def example_batch(self, method, batch: dict[str, torch.Tensor], generator: torch.Generator | None) -> None:
        """Add random inputs of the term's kind to an example ``batch`` (see ``PretrainMethod.example_batch``)."""

    def loss(self, method, features: torch.Tensor, own: Sequence[torch.Tensor],
             batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, Any]]:
        """The term's unweighted loss and its logs.

        Args:
            method: the base method (its student holds the term's heads).
            features: the student's pooled features of the base's query view.
            own: the student's pooled features of the term's own views (``shared_inputs`` of them), from the same
                forward as ``features``.
            batch: the training batch.
        """
        raise NotImplementedError


def term_class(name: str, where: str = "model.knowledge") -> type[KnowledgeTerm]:
    """The term registered as ``name``; an unknown name is a :class:`ConfigError` listing the known ones."""
    if name not in TERMS:
        raise ConfigError(f"{where}: unknown knowledge term {name!r}; known terms: {', '.join(sorted(TERMS))}")
    return TERMS[name]


def parse_terms(specs: Sequence[Any] | None, where: str = "model.knowledge") -> list[KnowledgeTerm]:
    """``model.knowledge`` (a list of ``{term_name: {options}}``; terms given as objects pass through) -> terms.

    Raises:
        ConfigError: an item that is not a one-key mapping, an unknown term (the known ones listed), an unknown or
            ill-typed option (the valid ones listed), a term given twice.
    """
    terms: list[KnowledgeTerm] = []
    for i, spec in enumerate(specs or []):
        key = f"{where}[{i}]"
        if isinstance(spec, KnowledgeTerm):
            terms.append(spec)
            continue
        if isinstance(spec, str):
            spec = {spec: {}}
        if not isinstance(spec, dict) or len(spec) != 1:
            raise ConfigError(f"{key}: expected one {{term: {{options}}}} mapping, e.g. "
                              f"{{natural_images: {{weight: 1.0, dataset: cifar10}}}}; got {spec!r}")
        ((name, options),) = spec.items()
        cls = term_class(name, key)
        options = {} if options is None else options
        if not isinstance(options, dict):
            raise ConfigError(f"{key}.{name}: expected a mapping of options, got {options!r}")
        params = {k: p for k, p in inspect.signature(cls.__init__).parameters.items() if k != "self"}
        checked = {}
        for option, value in options.items():
            if option not in params:
                raise ConfigError(f"{key}.{name}: unknown option {option!r}; valid options: {', '.join(sorted(params))}")
            checked[option] = coerce(value, _annotation(cls, option), f"{key}.{name}.{option}")
        terms.append(cls(**checked))
    names = [t.name for t in terms]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ConfigError(f"{where}: knowledge term {', '.join(twice)} given more than once")
    return terms


def _annotation(cls: type, option: str) -> Any:
    return typing.get_type_hints(cls.__init__).get(option, Any)


def with_data(specs: Sequence[Any] | None, data_kwargs: dict[str, Any]) -> list[dict[str, dict[str, Any]]]:
    """``model.knowledge`` with each term's data-derived options filled from the datamodule's ``model_kwargs()``."""
    return [term.from_data(data_kwargs).spec() for term in parse_terms(specs)]
