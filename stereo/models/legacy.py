"""Checkpoints written before the component network: their model config and attention keys.

They recorded ``{_target_: stereo.models.PSMNet, max_disp, aggregation: stackhourglass | basic,
attention: {feature | volume | hourglass: settings}, align_corners}`` (plus speed options that never
changed the function), and kept attention blocks at ``feature_extraction.attention``,
``aggregation.volume_attention`` and ``aggregation.dres{2,3,4}.attention``. Both are converted on
load; nothing else about those networks changed (same parameters, keys and function).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .network import DEFAULT_MAX_DISP
from .presets import psmnet_config

LEGACY_TARGETS = ("stereo.models.PSMNet", "stereo.models.psmnet.PSMNet")
LEGACY_KEYS = ("_target_", "max_disp", "aggregation", "attention", "align_corners")
# Speed/memory options older checkpoints recorded in model_config; accepted and ignored.
LEGACY_SPEED_OPTIONS = ("channels_last", "checkpoint_aggregation", "checkpoint_features", "regression_chunk_rows")
_KEY_PREFIXES = {
    "feature_extraction.attention.": "feature_extraction.inserted.layer4.",
    "aggregation.volume_attention.": "aggregation.inserted.dres1.",
    **{f"aggregation.dres{i}.attention.": f"aggregation.dres{i}.inserted.bottleneck." for i in (2, 3, 4)},
}


def is_legacy(config: Any) -> bool:
    return isinstance(config, Mapping) and config.get("_target_") in LEGACY_TARGETS


def upgrade_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """A legacy PSMNet model config as the component config of the same network. Raises ValueError
    (naming the key) for keys such configs never had; values are checked by the network."""
    unknown = sorted(set(config) - set(LEGACY_KEYS) - set(LEGACY_SPEED_OPTIONS))
    if unknown:
        raise ValueError(f"model_config has unknown key {unknown[0]!r}; allowed: {sorted(LEGACY_KEYS[1:])}")
    attention = config.get("attention") or {}
    if not isinstance(attention, Mapping):
        raise ValueError(f"model_config.attention = {attention!r} is not a mapping of placements")
    return psmnet_config(config.get("max_disp", DEFAULT_MAX_DISP), config.get("aggregation", "stackhourglass"),
                         dict(attention), config.get("align_corners", False))


def upgrade_state_keys(state: Mapping[str, Any]) -> dict[str, Any]:
    """Attention blocks' keys renamed to their insertion points; every other key unchanged."""
    def rename(key: str) -> str:
        for old, new in _KEY_PREFIXES.items():
            if key.startswith(old):
                return new + key[len(old):]
        return key

    return {rename(k): v for k, v in state.items()}
