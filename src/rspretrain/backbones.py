"""Backbones: create one by timm name, or load an exported one.

Example:
    >>> from rspretrain import backbones
    >>> model = backbones.load("backbone.safetensors")   # plain timm model, model.rs_meta has the bands
    >>> bb = backbones.create("resnet18", in_chans=4)
"""

from rspretrain.core.bands import check_bands
from rspretrain.nn.backbones import Backbone
from rspretrain.nn.backbones import create_backbone as create
from rspretrain.pretrain.export import load_backbone as load
from rspretrain.pretrain.export import read_metadata

__all__ = ["Backbone", "check_bands", "create", "load", "read_metadata"]
