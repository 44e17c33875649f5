"""Backbones: create one by timm name, or load an exported one.

Example:
    >>> from rspretrain import backbones
    >>> model = backbones.load("backbone.safetensors")   # plain timm model, model.rs_meta has the bands
    >>> bb = backbones.create("resnet18", in_chans=4)
"""

from rspretrain.export import check_bands, load_backbone as load, read_metadata
from rspretrain.nn.backbones import Backbone, create_backbone as create

__all__ = ["Backbone", "check_bands", "create", "load", "read_metadata"]
