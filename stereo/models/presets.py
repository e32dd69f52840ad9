"""PSMNet (Chang & Chen, CVPR 2018) and EA-PSMNet as component networks: their component config
(what conf/model/psmnet*.yaml spell out), the classic attention placement names, and the
``PSMNet(...)`` constructor.

``PSMNet`` calls the network's constructor itself rather than ``build.build_network``: its config names
only this package's registered components and no Hydra or legacy keys, so the builder would add
nothing, and ``legacy.py`` (which ``build.py`` imports) builds on ``psmnet_config``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .network import DEFAULT_MAX_DISP, NETWORK_TARGET, StereoNetwork

# EA-PSMNet's classic placement names (also what checkpoints written before the component network
# recorded as ``attention``) -> insertion points.
PLACEMENTS = {
    "feature": ["feature_extraction.layer4"],
    "volume": ["aggregation.dres1"],
    "hourglass": ["aggregation.dres2.bottleneck", "aggregation.dres3.bottleneck", "aggregation.dres4.bottleneck"],
}


def placement_insertions(placements: Mapping[str, Any]) -> list[dict[str, Any]]:
    """``{feature|volume|hourglass: kind name | settings | None}`` -> a list of insertions."""
    insertions = []
    for placement, spec in placements.items():
        if spec is None:
            continue
        if placement not in PLACEMENTS:
            raise ValueError(f"unknown attention placement {placement!r}; choose from {tuple(PLACEMENTS)}")
        spec = {"kind": spec} if isinstance(spec, str) else spec
        if not isinstance(spec, Mapping):
            raise ValueError(f"attention.{placement} must be a kind name or a mapping, got {spec!r}")
        insertions.append({"at": PLACEMENTS[placement], **spec})
    return insertions


def psmnet_config(max_disp: int = DEFAULT_MAX_DISP, aggregation: str = "stackhourglass",
                  attention: Sequence[Mapping[str, Any]] | Mapping[str, Any] | None = None,
                  align_corners: bool = False) -> dict[str, Any]:
    """The component config of PSMNet / EA-PSMNet (what conf/model/psmnet*.yaml spell out)."""
    heads = {"stackhourglass": "stereo.models.aggregations.StackedHourglass",
             "basic": "stereo.models.aggregations.BasicAggregation"}
    if aggregation not in heads:
        raise ValueError(f"aggregation must be one of {tuple(heads)}, got {aggregation!r}")
    if isinstance(attention, Mapping):
        attention = placement_insertions(attention)
    return {"_target_": NETWORK_TARGET, "max_disp": max_disp,
            "features": {"_target_": "stereo.models.features.PSMNetFeatures", "align_corners": align_corners},
            "cost_volume": {"_target_": "stereo.models.cost_volumes.ConcatenationVolume"},
            "aggregation": {"_target_": heads[aggregation]},
            "regression": {"_target_": "stereo.models.regression.SoftArgmaxRegression", "align_corners": align_corners},
            "attention": list(attention or [])}


def PSMNet(max_disp: int = DEFAULT_MAX_DISP, aggregation: str = "stackhourglass",  # noqa: N802 (reads as the class it was)
           attention: Sequence[Mapping[str, Any]] | Mapping[str, Any] | None = None,
           align_corners: bool = False) -> StereoNetwork:
    """PSMNet (``stackhourglass`` or ``basic``) with optional attention: the authors' parameters, keys
    and function when ``attention`` is empty. ``attention`` is a list of insertions or the placement
    shorthand ``{"feature": ..., "volume": ..., "hourglass": ...}``."""
    config = psmnet_config(max_disp, aggregation, attention, align_corners)
    return StereoNetwork(**{key: value for key, value in config.items() if key != "_target_"})
