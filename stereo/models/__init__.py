"""Networks: efficient attention, PSMNet / EA-PSMNet, checkpoint loading, padding helpers."""

from __future__ import annotations

from .attention import DotProductAttention, EfficientAttention, dot_product_attention, efficient_attention
from .checkpoints import CheckpointError, load_model, load_psmnet_checkpoint
from .padding import Padder
from .psmnet import MIN_INPUT_SIZE, SIZE_DIVISOR, PSMNet

__all__ = [
    "CheckpointError",
    "DotProductAttention",
    "EfficientAttention",
    "MIN_INPUT_SIZE",
    "PSMNet",
    "Padder",
    "SIZE_DIVISOR",
    "dot_product_attention",
    "efficient_attention",
    "load_model",
    "load_psmnet_checkpoint",
]
