"""Networks built from components (features, cost volume, aggregation, regression), efficient
attention, checkpoint loading, padding helpers."""

from __future__ import annotations

from .attention import DotProductAttention, EfficientAttention, dot_product_attention, efficient_attention
from .network import DEFAULT_MAX_DISP, SIZE_DIVISOR, StereoNetwork, check_max_disp
from . import aggregations, cost_volumes, features, refinements, regression  # noqa: F401,I001 (registers the components)
from .checkpoints import CheckpointError, load_model, load_psmnet_checkpoint
from .padding import InputSpec, Padder
from .performance import fold_batchnorm, optimize_for_inference
from .presets import PSMNet

__all__ = [
    "CheckpointError",
    "DEFAULT_MAX_DISP",
    "DotProductAttention",
    "EfficientAttention",
    "InputSpec",
    "PSMNet",
    "Padder",
    "SIZE_DIVISOR",
    "StereoNetwork",
    "check_max_disp",
    "dot_product_attention",
    "fold_batchnorm",
    "efficient_attention",
    "load_model",
    "load_psmnet_checkpoint",
    "optimize_for_inference",
]
