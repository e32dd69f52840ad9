"""A cost-volume stereo network built from components: features -> cost volume -> aggregation ->
disparity regression (OpenStereo's backbone / cost processor / disparity processor split), and an
optional refinement.

Each component is a config ``{_target_: <class>, **settings}`` (conf/model/*.yaml) naming a
registered class (``components.py``); the network builds them in order and passes each what the
previous one produces: the features' ``out_channels`` and ``stride`` give the volume's input
channels and its ``max_disp / stride`` levels, the volume's ``out_channels`` the aggregation's
input, ``max_disp`` and the network's stride (the features' times the volume's ``pool``) the
regression's. A refinement gets the features' channels and stride, and in forward the regressed
disparity, both images and both views' features (kept only when there is a refinement). Nothing
downstream hard-codes a width.

``attention`` is a list of insertions, each ``{at: <point or list of points>, kind, key_channels,
value_channels, heads, normalization, zero_init}``. A point is ``<component path>.<name>``, e.g.
``feature_extraction.layer4``, ``aggregation.dres1``, ``aggregation.dres2.bottleneck``; its channel
count comes from the component (``insertion_points``). Unset keys take key = in/2, value = in, one
head, softmax, zero_init true (the block starts as the identity).

The constructor takes the architecture only (what a checkpoint records, ``self.config``). How it
runs is set on the built network and never changes its function: ``checkpoint_aggregation`` /
``checkpoint_features`` (recompute in backward: less training memory, ``activation_checkpointing.py``),
``channels_last``, ``regression_chunk_rows``, ``release_volume`` and the attention blocks'
``chunk_positions`` (the last four set by the inference forms, ``performance.optimize_for_inference``).

PSMNet and EA-PSMNet as component configs, and the ``PSMNet(...)`` constructor: ``presets.py``.
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from .activation_checkpointing import maybe_checkpoint
from .attention import DotProductAttention, EfficientAttention, NORMALIZATIONS
from .components import Component, HasInferenceForm, InferenceShape, VolumeHandoff, component_class
from .layout import set_memory_format
from .padding import InputSpec

NETWORK_TARGET = "stereo.models.StereoNetwork"
ATTENTION_KINDS = {"efficient": EfficientAttention, "dot_product": DotProductAttention}
ATTENTION_KEYS = ("at", "kind", "key_channels", "value_channels", "heads", "normalization", "zero_init")
COMPONENTS = ("features", "cost_volume", "aggregation", "regression")
OPTIONAL_COMPONENTS = ("refinement",)
SIZE_DIVISOR = 16
# The disparity search range wherever none is given: PSMNet's, with which the authors trained their
# checkpoints and which Scene Flow's evaluation convention (0 < gt < 192) follows.
DEFAULT_MAX_DISP = 192


def check_max_disp(max_disp: Any, divisor: int = SIZE_DIVISOR, name: str = "max_disp") -> int:
    """The one rule for a disparity search range (networks, the predictor, StereoSGBM, protocols): a
    whole number (an int, not a bool) of ``divisor``-pixel steps, at least one. 16 is the networks'
    size divisor and OpenCV's ``numDisparities`` step; a network also needs a multiple of its volume's
    stride. Returns ``max_disp``; raises ValueError naming ``name``."""
    if not isinstance(max_disp, int) or isinstance(max_disp, bool) or max_disp < divisor or max_disp % divisor:
        raise ValueError(f"{name} must be a positive multiple of {divisor}, got {max_disp!r}")
    return max_disp


def attention_spec(spec: Mapping[str, Any]) -> dict[str, Any]:
    """One insertion's settings, checked and completed (channels stay None: inferred where inserted)."""
    if not isinstance(spec, Mapping):
        raise ValueError(f"each attention insertion must be a mapping with 'at', got {spec!r}")
    unknown = sorted(set(spec) - set(ATTENTION_KEYS))
    if unknown:
        raise ValueError(f"attention insertion: unknown settings {unknown}; allowed: {list(ATTENTION_KEYS)}")
    at = spec.get("at")
    points = [at] if isinstance(at, str) else list(at) if isinstance(at, Sequence) else []
    if not points or not all(isinstance(p, str) and "." in p for p in points):
        raise ValueError(f"attention.at must name insertion points like 'aggregation.dres1', got {at!r}")
    full = {"at": points, "kind": "efficient", "key_channels": None, "value_channels": None,
            "heads": 1, "normalization": "softmax", "zero_init": True}
    full.update({k: v for k, v in spec.items() if k != "at"})
    if full["kind"] not in ATTENTION_KINDS:
        raise ValueError(f"attention.kind must be one of {tuple(ATTENTION_KINDS)}, got {full['kind']!r}")
    if full["normalization"] not in NORMALIZATIONS:
        raise ValueError(f"attention.normalization must be one of {NORMALIZATIONS}, got {full['normalization']!r}")
    return full


def init_authors_weights(module: nn.Module) -> None:
    """PSMNet's init, for every component: conv weights N(0, √(2/(k^dims·out_ch))), BN weight 1 /
    bias 0; transposed convs keep PyTorch's default. Runs before attention is inserted (blocks keep
    their own init)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Conv3d)):
            fan = math.prod(m.kernel_size) * m.out_channels
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan))
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm3d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def _component(kind: str, config: Mapping[str, Any], **given: Any) -> tuple[Component, dict[str, Any]]:
    """Build one component from its config (+ what the network passes); returns it and its plain config."""
    if not isinstance(config, Mapping) or "_target_" not in config:
        raise ValueError(f"{kind} must be a mapping with a _target_ naming a {kind} class, got {config!r}")
    cls = component_class(kind, config["_target_"])
    settings = {k: v for k, v in config.items() if k != "_target_"}
    clash = sorted(set(settings) & set(given))
    if clash:
        raise ValueError(f"{kind}: {clash} are given by the network (from the previous component), not set in the config")
    try:
        component = cls(**settings, **given)
    except TypeError as err:
        raise ValueError(f"{kind} {config['_target_']}: {err}") from err
    return component, {"_target_": config["_target_"], **settings}


class StereoNetwork(HasInferenceForm):
    """``forward(left, right)`` takes ImageNet-normalised N×3×H×W views (H, W multiples of 16, at least
    the features' ``min_input_size``). Training mode: tuple of N×H×W disparities (one per aggregation
    output). Eval mode: one N×H×W tensor, or ``(disparity, confidence)`` with ``return_confidence=True``.
    """

    def __init__(
        self,
        features: Mapping[str, Any],
        cost_volume: Mapping[str, Any],
        aggregation: Mapping[str, Any],
        regression: Mapping[str, Any],
        max_disp: int = DEFAULT_MAX_DISP,
        attention: Sequence[Mapping[str, Any]] | None = None,
        refinement: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        check_max_disp(max_disp)
        self.feature_extraction, features = _component("features", features)
        feature_stride = self.feature_extraction.stride
        check_max_disp(max_disp, feature_stride)
        self.cost_volume, cost_volume = _component(
            "cost_volume", cost_volume, in_channels=self.feature_extraction.out_channels,
            levels=max_disp // feature_stride)
        self.stride = feature_stride * self.cost_volume.pool  # the volume's resolution
        check_max_disp(max_disp, self.stride)
        self.aggregation, aggregation = _component("aggregation", aggregation, in_channels=self.cost_volume.out_channels)
        self.regression, regression = _component("regression", regression, max_disp=max_disp, stride=self.stride)
        self.refinement = None
        if refinement is not None:
            self.refinement, refinement = _component(
                "refinement", refinement, feature_channels=self.feature_extraction.out_channels, stride=feature_stride)
        init_authors_weights(self)
        for module in self.modules():
            if isinstance(module, Component):
                module.after_network_init()
        self.attention_config = [attention_spec(spec) for spec in (attention or [])]
        for spec in self.attention_config:
            self._insert_attention(spec)
        self._max_disp = max_disp
        self.config = {"_target_": NETWORK_TARGET, "max_disp": max_disp, "features": features,
                       "cost_volume": cost_volume, "aggregation": aggregation, "regression": regression,
                       "attention": [dict(spec) for spec in self.attention_config]}
        if refinement is not None:
            self.config["refinement"] = refinement
        self.checkpoint_features = False
        self.release_volume = False
        self._channels_last = False

    def _insert_attention(self, spec: dict[str, Any]) -> None:
        settings = {k: v for k, v in spec.items() if k not in ("at", "kind")}
        for point in spec["at"]:
            path, name = point.rsplit(".", 1)
            try:
                component = self.get_submodule(path)
            except AttributeError:
                component = None
            if not isinstance(component, Component) or name not in component.insertion_points:
                known = sorted(f"{p}.{n}" if p else n for p, m in self.named_modules()
                               if isinstance(m, Component) for n in m.insertion_points)
                raise ValueError(f"attention.at: no insertion point {point!r}; this network has {known}")
            channels = component.insertion_points[name]
            block = ATTENTION_KINDS[spec["kind"]](
                channels, key_channels=settings["key_channels"] or max(1, channels // 2),
                value_channels=settings["value_channels"] or channels, heads=settings["heads"],
                normalization=settings["normalization"], zero_init=settings["zero_init"])
            component.add_block(name, block)

    @property
    def max_disp(self) -> int:
        """Disparity range it was built with (a multiple of 16 and of its stride); ``with_max_disp`` for another."""
        return self._max_disp

    def with_max_disp(self, max_disp: int) -> StereoNetwork:
        """This network searching ``max_disp`` levels: a copy sharing every weight and run setting (the
        weights do not depend on the range: 3-D convolutions); this one is unchanged. Callers pass the
        range they want instead of writing it into a network someone else holds."""
        check_max_disp(max_disp)
        check_max_disp(max_disp, self.stride)
        if max_disp == self._max_disp:
            return self
        shared = {id(t): t for t in itertools.chain(self.parameters(), self.buffers())}
        network = copy.deepcopy(self, shared)
        network._max_disp = max_disp
        network.cost_volume.levels = max_disp // self.feature_extraction.stride
        network.regression.max_disp = max_disp
        network.config["max_disp"] = max_disp
        return network

    @property
    def input_spec(self) -> InputSpec:
        """What ``forward`` accepts: H and W multiples of 16 (the 3-D heads' coarsest level) and at least
        the features' ``min_input_size`` (PSMNet's SPP 256; the light and census features 16)."""
        return InputSpec(SIZE_DIVISOR, self.feature_extraction.min_input_size)

    def inference_bytes(self, height: int, width: int, max_disp: int | None = None, batch: int = 1,
                        optimized: bool = True) -> float:
        """Estimated peak bytes of one eval-mode forward pass on ``batch`` padded ``height`` x ``width``
        pairs over ``max_disp`` levels (default: its own): the sum of what each component says it adds
        (``Component.inference_bytes``: measured for PSMNet's components, from channel counts and the
        volume's resolution for the others). Without headroom or the process's fixed overhead
        (``stereo.inference.memory`` adds both)."""
        shape = InferenceShape(batch, height, width, max_disp or self._max_disp, self.stride)
        # the optimised network hands the volume over only to an aggregation that takes the handoff;
        # any other keeps it alive through the whole head, as the plain network does
        volume = self.cost_volume.inference_bytes(shape, optimized and self.aggregation.takes_volume_handoff)
        parts = (self.feature_extraction, self.aggregation, self.regression, self.refinement)
        return volume + sum(part.inference_bytes(shape, optimized) for part in parts if part is not None)

    @property
    def channels_last(self) -> bool:
        """NHWC/NDHWC activations *and* weights (``optimize_for_inference`` turns it on). Not a training
        layout: PyTorch's CPU channels-last BatchNorm3d in train mode makes gradients ~8x less exact
        than the plain layout's float32 rounding."""
        return self._channels_last

    @channels_last.setter
    def channels_last(self, enabled: bool) -> None:
        self._channels_last = bool(enabled)
        self.cost_volume.channels_last = self._channels_last
        set_memory_format(self, self._channels_last)

    def for_inference(self) -> StereoNetwork:
        """Channels-last weights and activations, and the cost volume handed over to the aggregation
        (``release_volume``; only to one that ``takes_volume_handoff``). Asked after the components."""
        self.channels_last = True
        self.release_volume = True
        return self

    @property
    def regression_chunk_rows(self) -> int | None:
        """Low-resolution rows per band of the inference regression (None: the whole volume at once)."""
        return getattr(self.regression, "chunk_rows", None)

    @regression_chunk_rows.setter
    def regression_chunk_rows(self, rows: int | None) -> None:
        if not hasattr(self.regression, "chunk_rows"):
            if rows is not None:
                raise ValueError(f"{type(self.regression).__name__} has no banded evaluation (regression_chunk_rows)")
            return
        self.regression.chunk_rows = rows

    @property
    def regression_window(self) -> int | None:
        """Levels either side of the most probable one that the eval-mode estimate averages (None: all;
        ``LowResolutionSoftArgmax.window``). Part of the architecture's config, so a saved network keeps it."""
        return getattr(self.regression, "window", None)

    @regression_window.setter
    def regression_window(self, window: int | None) -> None:
        if not hasattr(self.regression, "window"):
            raise ValueError(f"{type(self.regression).__name__} has no windowed estimate (regression_window); "
                             "only a low-resolution soft-argmax (LowResolutionSoftArgmax) has")
        self.regression.window = window
        if window is None:
            self.config["regression"].pop("window", None)
        else:
            self.config["regression"]["window"] = window

    @property
    def checkpoint_aggregation(self) -> bool:
        """Recompute the 3-D head's and the regression's activations in backward (training memory)."""
        return self.aggregation.checkpointing

    @checkpoint_aggregation.setter
    def checkpoint_aggregation(self, enabled: bool) -> None:
        self.aggregation.checkpointing = bool(enabled)

    def _check_inputs(self, left: torch.Tensor, right: torch.Tensor) -> None:
        if left.dim() != 4 or left.shape[1] != 3 or left.shape != right.shape:
            raise ValueError(
                f"left and right must be N×3×H×W of the same shape, got {tuple(left.shape)} and {tuple(right.shape)}"
            )
        height, width = left.shape[-2:]
        spec = self.input_spec
        if height % spec.divisor or width % spec.divisor or min(height, width) < spec.min_size:
            raise ValueError(
                f"the network needs H and W to be multiples of {spec.divisor} and at least {spec.min_size}, "
                f"got {height}x{width}; pad with stereo.models.padding.Padder(height, width, "
                f"divisor={spec.divisor}, min_size=({spec.min_size}, {spec.min_size})) and unpad the output"
            )

    def _features(self, image: torch.Tensor) -> torch.Tensor:
        """One view's features; with ``checkpoint_features`` only the image is kept for backward (PSMNet's
        ~40 stored 2-D activations per view are recomputed: ~300 MB per view at 256×512)."""
        return maybe_checkpoint(self.checkpoint_features, self.feature_extraction, self.feature_extraction, image)

    def _volume(self, left: torch.Tensor, right: torch.Tensor) -> tuple[torch.Tensor | VolumeHandoff, tuple | None]:
        """The cost volume (handed over when ``release_volume`` and the aggregation takes handoffs) and
        the features when the refinement reads them again (otherwise they are freed here, before the
        3-D head's peak)."""
        features = (self._features(left), self._features(right))
        volume = self.cost_volume(*features)
        handoff = self.release_volume and self.aggregation.takes_volume_handoff
        return (VolumeHandoff(volume) if handoff else volume,
                features if self.refinement is not None else None)

    def forward(
        self, left: torch.Tensor, right: torch.Tensor, return_confidence: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, ...]:
        self._check_inputs(left, right)
        if return_confidence and self.training:
            raise ValueError("return_confidence=True is only available in eval mode (model.eval())")
        if self.training:
            self.feature_extraction.check_training_batch(left.shape)
        height, width = left.shape[-2:]
        if self.channels_last:
            left = left.contiguous(memory_format=torch.channels_last)
            right = right.contiguous(memory_format=torch.channels_last)
        volume, features = self._volume(left, right)
        costs = self.aggregation(volume)
        del volume
        if self.training:
            disparities = tuple(maybe_checkpoint(self.checkpoint_aggregation, self.aggregation, self.regression,
                                                 cost, height, width) for cost in costs)
            if features is not None:
                refined = self.refinement(disparities[-1], left, right, *features)
                disparities += refined if isinstance(refined, tuple) else (refined,)
            return disparities
        result = self.regression(costs[-1], height, width, return_confidence)
        if features is None:
            return result
        if return_confidence:  # the confidence stays the regression's: the refinement has no distribution
            return self.refinement(result[0], left, right, *features), result[1]
        return self.refinement(result, left, right, *features)
