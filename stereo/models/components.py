"""What every network component shares: its kind, a registry of the classes of each kind, and the
named points where attention (or any residual block) can be inserted.

A network is ``features -> cost_volume -> aggregation -> regression`` (``network.py``). Each stage
is a subclass of one of the four bases below; defining such a class registers it under its import
path (``stereo.models.cost_volumes.GroupCorrelationVolume``), which is how a model config's or a
checkpoint's ``_target_`` names it. Looking a class up in the registry never imports anything, so a
checkpoint can only name a class the program already has (``checkpoints.py``); a Hydra config may
name a module to import first (``build.py``), as any Hydra config can.

Insertion points: a component lists ``insertion_points`` (name -> channels of the tensor there) and
calls ``self.insert(name, x)`` at each in its forward. Blocks inserted at a point live in the
component's ``inserted`` ``nn.ModuleDict`` under the point's name, so an empty one adds no
state-dict keys and the authors' networks keep their keys.

Inference forms: every component (and attention block, and the network) is a ``HasInferenceForm``;
``optimize_for_inference`` asks each for ``for_inference()``, its faster evaluation of the same
function, which is the module itself unless the class says otherwise. So a new component runs there
unchanged, and a fast path is the business of the class that has it, not of the optimiser.

Memory: each component estimates what it adds to the peak of one eval-mode forward pass
(``inference_bytes``, from its channel counts and the resolution it works at; see ``InferenceShape``),
and the network adds them up (``StereoNetwork.inference_bytes``), so the predictor's strip planning
and memory refusal follow the network actually loaded, not PSMNet's figure. A component without a
measured figure gets its kind's default, documented on each base below.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

_REGISTRY: dict[str, dict[str, type[Component]]] = {}
FLOAT_BYTES = 4  # fp32 activations: the estimates are for the CPU fp32 path (half precision needs less)


@dataclass(frozen=True)
class InferenceShape:
    """One forward pass a memory estimate is for: ``batch`` padded ``height`` x ``width`` inputs searched
    over ``max_disp`` levels by a network whose volume is at 1/``stride``."""

    batch: int
    height: int
    width: int
    max_disp: int
    stride: int

    @property
    def pixel_levels(self) -> float:
        """Full-resolution pixels x disparity levels: the unit of a full-resolution volume."""
        return self.batch * self.height * self.width * self.max_disp

    @property
    def cells(self) -> float:
        """Positions of the cost volume (per channel): pixel levels / stride³."""
        return self.pixel_levels / self.stride**3


class HasInferenceForm(nn.Module):
    """A module that ``optimize_for_inference`` asks for its inference form."""

    def for_inference(self) -> nn.Module:
        """This module as it should run for inference: the same function, evaluated faster or in
        less memory (e.g. a cost volume built in place, attention streamed over chunks). Called on
        ``optimize_for_inference``'s own copy, after the module's children were asked for theirs; it
        may set run settings and return the module, or return another module of the same function.
        Forms that cannot record gradients refuse to run while gradients are enabled. The default is
        the module itself, unchanged."""
        return self


class Component(HasInferenceForm):
    """Base of the four component kinds; subclasses of a kind register themselves by import path."""

    kind: ClassVar[str] = ""
    insertion_points: dict[str, int]

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if cls.kind and "kind" not in cls.__dict__ and not cls.__name__.startswith("_"):  # not the kind's base
            _REGISTRY.setdefault(cls.kind, {})[f"{cls.__module__}.{cls.__qualname__}"] = cls

    def __init__(self) -> None:
        super().__init__()
        self.insertion_points = {}
        self.inserted = nn.ModuleDict()

    def after_network_init(self) -> None:
        """Called by the network, for every component in it, once its weight init (PSMNet's, over every
        component) has run: a component whose own init must survive that (an identity start) sets it
        here. Nothing by default."""

    def insert(self, point: str, x: torch.Tensor) -> torch.Tensor:
        """The block inserted at ``point`` applied to ``x``, or ``x`` when there is none."""
        return self.inserted[point](x) if point in self.inserted else x

    def inference_bytes(self, shape: InferenceShape, optimized: bool) -> float:
        """Bytes this component adds to the peak of one eval-mode forward pass (CPU fp32; ``optimized``:
        through ``optimize_for_inference``). 0 here: 2-D maps (features, a refinement) and a one-channel
        cost at the volume's resolution (a low-resolution regression) are small beside the volumes that
        grow with pixels x levels and decide whether an image fits; the fixed overhead covers them."""
        return 0.0

    def add_block(self, point: str, block: nn.Module) -> None:
        if point not in self.insertion_points:
            raise ValueError(f"{type(self).__name__} has no insertion point {point!r}; "
                             f"it has {sorted(self.insertion_points)}")
        if point in self.inserted:
            raise ValueError(f"{type(self).__name__}: two blocks inserted at {point!r}")
        self.inserted[point] = block


class FeatureExtractor(Component):
    """N x 3 x H x W image -> N x ``out_channels`` x H/``stride`` x W/``stride`` matching feature."""

    kind = "features"
    out_channels: int
    stride: int
    min_input_size: int = 16

    def check_training_batch(self, shape: torch.Size) -> None:
        """Refuse a training batch this extractor cannot normalise (nothing to refuse by default)."""


class CostVolume(Component):
    """Left and right features -> N x ``out_channels`` x levels/``pool`` x h/``pool`` x w/``pool`` volume.

    Built with ``in_channels`` (the features') and ``levels`` (max_disp / the features' stride) by the
    network. ``pool`` > 1: the volume is coarser than the features (``pooled_correlation.py``); the
    network's stride is then the features' times ``pool``.
    """

    kind = "cost_volume"
    out_channels: int
    pool: int = 1
    # The network's activation layout (``StereoNetwork.channels_last``): a volume that can write its
    # output directly in NDHWC reads it (``ConcatenationVolume``); others may ignore it.
    channels_last: bool = False

    def inference_bytes(self, shape: InferenceShape, optimized: bool) -> float:
        """The volume itself (``out_channels`` at the network's stride), alive beside the aggregation's
        peak in the plain network; the optimised one hands it over (``release_volume``) to an aggregation
        that declares ``takes_volume_handoff``, which drops it after its first layer (counted in the
        aggregation's figure). ``optimized`` is therefore asked as "is the volume handed over"."""
        return 0.0 if optimized else FLOAT_BYTES * self.out_channels * shape.cells


class Aggregation(Component):
    """Volume (``in_channels``, given by the network) -> list of N x 1 x levels x h x w costs; in eval
    mode only the last is used. ``checkpointing`` recomputes its stages in backward.

    ``takes_volume_handoff``: the class's forward starts with ``volume = take_volume(volume)`` and
    so may be handed a ``VolumeHandoff`` instead of the tensor (see there). Off by default: an
    aggregation that does not declare it always receives the tensor itself."""

    kind = "aggregation"
    checkpointing: bool = False
    takes_volume_handoff: ClassVar[bool] = False
    # 3-D activations as wide as its widest layer alive at once at the volume's resolution (a layer's
    # input and output and a residual's); a head with a measured figure overrides inference_bytes.
    live_activations: ClassVar[int] = 3

    def inference_bytes(self, shape: InferenceShape, optimized: bool) -> float:
        widest = max((m.out_channels for m in self.modules() if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d))),
                     default=1)
        return FLOAT_BYTES * self.live_activations * widest * shape.cells


class Regression(Component):
    """Cost at 1/``stride`` (``max_disp`` and ``stride`` given by the network) -> N x H x W disparity."""

    kind = "regression"


class Refinement(Component):
    """Optional last stage: (N x H x W disparity, left and right images, left and right features) ->
    refined N x H x W.

    Built with the features' ``feature_channels`` and ``stride`` by the network. Training adds its
    output after the regression's (the loss weighs both); a refinement with several steps returns
    each step's output in training, in order, the last the final one."""

    kind = "refinement"


KINDS = {base.kind: base for base in (FeatureExtractor, CostVolume, Aggregation, Regression, Refinement)}


def registered(kind: str) -> dict[str, type[Component]]:
    """The classes of ``kind`` this program defines, by import path (what ``_target_`` names)."""
    return dict(_REGISTRY.get(kind, {}))


def component_class(kind: str, target: object) -> type[Component]:
    """The registered class ``target`` names; ValueError (listing the choices) for anything else."""
    classes = registered(kind)
    aliases = {name.rsplit(".", 2)[0] + "." + name.rsplit(".", 1)[1]: cls for name, cls in classes.items()}
    cls = classes.get(target) if isinstance(target, str) else None
    cls = cls or (aliases.get(target) if isinstance(target, str) else None)
    if cls is None:
        raise ValueError(f"{kind}._target_ {target!r} is not a {kind} component of this program; "
                         f"known: {sorted(classes)}")
    return cls


class VolumeHandoff:
    """A cost volume handed to ``aggregation(...)`` so that the aggregation can release it.

    ``nn.Module.__call__`` keeps its arguments until forward returns, so a volume passed as a tensor
    lives through the whole aggregation: at 544×960, max_disp 192, PSMNet's 400 MB volume beside the
    head's activations. Wrapped in a handoff, the aggregation ``take_volume``s it and can drop it after
    its first layer has read it. The network hands over only when ``release_volume`` is set
    (``optimize_for_inference``) and its aggregation declares ``takes_volume_handoff``; module hooks on
    the aggregation fire either way.
    """

    def __init__(self, volume: torch.Tensor) -> None:
        self._volume: torch.Tensor | None = volume

    def take(self) -> torch.Tensor:
        if self._volume is None:
            raise RuntimeError("this cost volume was already taken (a VolumeHandoff is read once)")
        volume, self._volume = self._volume, None
        return volume


def take_volume(volume: torch.Tensor | VolumeHandoff) -> torch.Tensor:
    """The volume itself, from a tensor or a handoff (which gives up its reference)."""
    return volume.take() if isinstance(volume, VolumeHandoff) else volume
