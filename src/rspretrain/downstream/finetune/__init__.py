"""Training tasks on labelled data: what is optimised (torchgeo's ``tasks``), one LightningModule each.

Example:
    >>> from rspretrain.downstream import finetune as tasks
    >>> task = tasks.create("sskdnet", num_classes=21, backbone="resnet18")
"""

from __future__ import annotations

from typing import Any

from rspretrain.core.errors import ConfigError
from rspretrain.downstream.finetune.scene_classification_task import SceneClassificationTask
from rspretrain.downstream.finetune.sskdnet import SSKDNet

#: name -> task class; ``rspretrain finetune --method NAME`` resolves here.
TASKS: dict[str, type[SceneClassificationTask]] = {"finetune": SceneClassificationTask, "sskdnet": SSKDNet}


def get_task(name: str) -> type[SceneClassificationTask]:
    """The task class registered under ``name``."""
    try:
        return TASKS[name]
    except KeyError:
        raise ConfigError(f"unknown fine-tuning method {name!r}; available: {', '.join(sorted(TASKS))}") from None


def create(name: str, **kwargs: Any) -> SceneClassificationTask:
    """Instantiate a registered task."""
    return get_task(name)(**kwargs)


__all__ = ["TASKS", "SSKDNet", "SceneClassificationTask", "create", "get_task"]
