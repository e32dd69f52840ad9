"""Networks: efficient attention, PSMNet / EA-PSMNet, checkpoint loading, padding helpers."""

from __future__ import annotations

from .attention import DotProductAttention, EfficientAttention, dot_product_attention, efficient_attention
from .checkpoints import CheckpointError, load_model, load_psmnet_checkpoint
from .padding import Padder
from .performance import fold_batchnorm, optimize_for_inference
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
    "fold_batchnorm",
    "efficient_attention",
    "load_model",
    "load_psmnet_checkpoint",
    "optimize_for_inference",
]
