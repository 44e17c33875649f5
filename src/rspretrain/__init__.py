"""rspretrain: pretrain vision backbones on remote-sensing imagery and measure what they buy."""

__version__ = "0.1.0"
