"""Load the PSMNet authors' public checkpoints and this project's Lightning checkpoints.

A checkpoint is data, never code. Files are read with ``torch.load(weights_only=True)`` (no pickled
objects), and the network is built by :func:`model_from_config`: the top-level ``_target_`` must be
our ``StereoNetwork``, each component's ``_target_`` a component class this program has registered
(``components.py``: looked up, never imported), every other value plain data. A checkpoint's
``_target_`` only *names* one of those classes (``hydra.utils.instantiate`` would call anything).
Checkpoints written before the component network are converted on load (``legacy.py``). The
authors' files are ``torch.save({'epoch', 'state_dict', 'train_loss'})`` of an ``nn.DataParallel``
model, so keys read ``module.<name>``; our network keeps their names except that the 3-D head lives
under ``aggregation.`` (``module.dres0.0.0.weight`` → ``aggregation.dres0.0.0.weight``).
"""

from __future__ import annotations

import io
import math
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data.io import atomic_write
from . import legacy
from .attention import _AttentionBlock
from .components import component_class
from .network import ATTENTION_KEYS, COMPONENTS, DEFAULT_MAX_DISP, NETWORK_TARGET, OPTIONAL_COMPONENTS, StereoNetwork
from .presets import PSMNet

_AUTHORS_PREFIX = "module."
_LIGHTNING_PREFIX = "model."
_LISTED = 20  # keys shown per category in error messages

# The network a checkpoint can ask for, by every name it has (older names: ``legacy.LEGACY_TARGETS``).
NETWORK_TARGETS = (NETWORK_TARGET, "stereo.models.network.StereoNetwork")
# Top-level arguments and the plain types each may hold (values are checked by the network).
NETWORK_ARGUMENTS: dict[str, tuple[type, ...]] = {
    "max_disp": (int,), **{kind: (Mapping,) for kind in COMPONENTS},
    **{kind: (Mapping, type(None)) for kind in OPTIONAL_COMPONENTS}, "attention": (list, tuple, type(None)),
}
LEGACY_ARGUMENTS: dict[str, tuple[type, ...]] = {
    "max_disp": (int,), "aggregation": (str,), "attention": (Mapping, type(None)), "align_corners": (bool,),
}
LEGACY_SPEED_OPTIONS = legacy.LEGACY_SPEED_OPTIONS
_SCALARS = (str, int, float, bool, type(None))


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the network; lists the offending keys."""

    def __init__(
        self,
        message: str,
        missing: list[str] | None = None,
        unexpected: list[str] | None = None,
        mismatched: list[str] | None = None,
    ) -> None:
        super().__init__(message)
        self.missing = missing or []
        self.unexpected = unexpected or []
        self.mismatched = mismatched or []


def read_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict:
    """``torch.load(weights_only=True)`` of ``path`` with one-line errors naming the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint file not found (check ckpt_path)")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        # torch's message suggests weights_only=False, i.e. running the file's code: never do that here
        blocked = re.search(r"GLOBAL ([\w.]+)", str(err))
        if blocked is not None:
            raise CheckpointError(
                f"{path}: refused, the file holds pickled Python objects ({blocked.group(1)}), not only tensors "
                "and plain data; checkpoints are never unpickled into code: use one written by this project "
                "or the PSMNet authors"
            ) from err
        raise CheckpointError(f"{path}: not a PyTorch checkpoint (corrupt, truncated or another format)") from err
    except Exception as err:  # torch's readers fail in many ways on foreign bytes (IndexError, EOFError ...)
        raise CheckpointError(
            f"{path}: not a PyTorch checkpoint (corrupt, truncated or another format: {type(err).__name__})"
        ) from err
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"{path}: expected a checkpoint dict, found a {type(checkpoint).__name__}")
    return checkpoint


def _state_dict(checkpoint: dict, path: Path | str) -> dict[str, torch.Tensor]:
    state = checkpoint.get("state_dict")
    if not isinstance(state, Mapping) or not state:
        raise CheckpointError(f"{path}: no 'state_dict' mapping in the checkpoint (keys: {sorted(checkpoint)[:10]})")
    return dict(state)


def _listing(name: str, keys: list[str]) -> str:
    shown = ", ".join(keys[:_LISTED]) + (f", ... ({len(keys) - _LISTED} more)" if len(keys) > _LISTED else "")
    return f"{len(keys)} {name}: {shown}"


def _load_exactly(
    model: nn.Module, state: dict[str, torch.Tensor], path: Path | str, ignore: set[str] = frozenset()
) -> None:
    """Load ``state`` into ``model``; every model key except ``ignore`` must be present and fit."""
    expected = {k: v for k, v in model.state_dict().items() if k not in ignore}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = sorted(
        f"{k} (checkpoint {tuple(state[k].shape)}, model {tuple(expected[k].shape)})"
        for k in set(state) & set(expected)
        if tuple(state[k].shape) != tuple(expected[k].shape)
    )
    if missing or unexpected or mismatched:
        parts = [_listing(n, ks) for n, ks in
                 (("missing keys", missing), ("unexpected keys", unexpected), ("mis-shaped keys", mismatched)) if ks]
        raise CheckpointError(
            f"{path}: checkpoint does not fit {type(model).__name__}: " + "; ".join(parts),
            missing, unexpected, mismatched,
        )
    model.load_state_dict(state, strict=False)


def _attention_blocks(model: nn.Module) -> dict[str, _AttentionBlock]:
    return {name: m for name, m in model.named_modules() if isinstance(m, _AttentionBlock)}


def _authors_key(key: str) -> str:
    key = key[len(_AUTHORS_PREFIX):] if key.startswith(_AUTHORS_PREFIX) else key
    return key if key.startswith("feature_extraction.") else f"aggregation.{key}"


def load_psmnet_checkpoint(model: StereoNetwork, path: str | Path) -> StereoNetwork:
    """Load an authors' PSMNet checkpoint into ``model`` (same aggregation type) in place.

    Attention blocks are not in such checkpoints: they are reset to the identity (zero
    reprojection), so the loaded network computes exactly the authors' function. Missing,
    unexpected or mis-shaped keys raise ``CheckpointError`` listing them.
    """
    state = {_authors_key(k): v for k, v in _state_dict(read_checkpoint(path), path).items()}
    blocks = _attention_blocks(model)
    attention_keys = {k for k in model.state_dict() for name in blocks if k.startswith(f"{name}.")}
    _load_exactly(model, state, path, ignore=attention_keys)
    for block in blocks.values():
        block.reset_to_identity()
    return model


def _check_plain(value: Any, where: str, path: Path | str) -> None:
    """Only str/int/float/bool/None inside mappings and lists; no nested ``_target_`` (nothing to call)."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str) or key.startswith("_"):
                raise CheckpointError(f"{path}: model_config.{where}: key {key!r} is not allowed "
                                      "(plain settings only; checkpoints never name code to run)")
            _check_plain(item, f"{where}.{key}", path)
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _check_plain(item, f"{where}[{index}]", path)
    elif not isinstance(value, _SCALARS) or (isinstance(value, float) and not math.isfinite(value)):
        raise CheckpointError(f"{path}: model_config.{where} = {value!r} is not a plain setting")


def _check_types(config: Mapping[str, Any], allowed: Mapping[str, tuple[type, ...]], path: Path | str) -> None:
    for key, value in config.items():
        if key == "_target_" or key in LEGACY_SPEED_OPTIONS:
            continue
        if key not in allowed:
            raise CheckpointError(f"{path}: model_config has unknown key {key!r}; allowed: {sorted(allowed)}")
        types = allowed[key]
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise CheckpointError(f"{path}: model_config.{key} = {value!r} has the wrong type "
                                  f"(expected {' or '.join(t.__name__ for t in types)})")


def validated_config(config: Any, path: Path | str) -> dict[str, Any]:
    """A checkpoint's ``model_config`` checked as data, as the component config that rebuilds it.

    Raises ``CheckpointError`` naming the file and the offending key for an unknown ``_target_``
    (network or component: components must be registered classes of their kind), an unknown or
    ill-typed argument, or any other value that is not plain data. Configs written before the
    component network are converted (``legacy.upgrade_config``); their speed options are dropped.
    """
    if not isinstance(config, Mapping):
        raise CheckpointError(f"{path}: hyper_parameters.model_config is a {type(config).__name__}, not a mapping")
    target = config.get("_target_")
    if legacy.is_legacy(config):
        _check_types(config, LEGACY_ARGUMENTS, path)
        for key in ("attention",):
            _check_plain(config.get(key), key, path)
        try:
            return legacy.upgrade_config({k: v for k, v in config.items() if k not in LEGACY_SPEED_OPTIONS})
        except ValueError as err:
            raise CheckpointError(f"{path}: model_config does not describe a valid network: {err}") from err
    if target not in NETWORK_TARGETS:
        raise CheckpointError(f"{path}: model_config._target_ {target!r} is not one of this project's networks "
                              f"{sorted(NETWORK_TARGETS + legacy.LEGACY_TARGETS)}; refusing to build it")
    _check_types(config, NETWORK_ARGUMENTS, path)
    missing = sorted(set(COMPONENTS) - set(config))
    if missing:
        raise CheckpointError(f"{path}: model_config lacks the components {missing}")
    result: dict[str, Any] = {"_target_": NETWORK_TARGET}
    for key, value in config.items():
        if key == "_target_" or key in LEGACY_SPEED_OPTIONS:
            continue
        if key in OPTIONAL_COMPONENTS and value is None:
            continue
        if key in COMPONENTS + OPTIONAL_COMPONENTS:
            try:
                component_class(key, value.get("_target_"))
            except ValueError as err:
                raise CheckpointError(f"{path}: model_config.{err}; refusing to build it") from err
            _check_plain({k: v for k, v in value.items() if k != "_target_"}, key, path)
            value = dict(value)
        elif key == "attention":
            for index, spec in enumerate(value or []):
                if not isinstance(spec, Mapping) or not set(spec) <= set(ATTENTION_KEYS):
                    raise CheckpointError(f"{path}: model_config.attention[{index}] = {spec!r} is not an insertion "
                                          f"(a mapping of {list(ATTENTION_KEYS)})")
                _check_plain(spec, f"attention[{index}]", path)
            value = [dict(spec) for spec in value or []]
        result[key] = value
    return result


def model_arguments(config: Any, path: Path | str) -> tuple[type[nn.Module], dict[str, Any]]:
    """The network class and the validated keyword arguments a checkpoint's ``model_config`` names."""
    arguments = validated_config(config, path)
    return StereoNetwork, {k: v for k, v in arguments.items() if k != "_target_"}


def model_config_of(checkpoint: Mapping[str, Any], path: Path | str) -> Any:
    """``hyper_parameters.model_config`` of a checkpoint (None when absent, e.g. the authors' files)."""
    hyper_parameters = checkpoint.get("hyper_parameters") or {}
    if not isinstance(hyper_parameters, Mapping):
        raise CheckpointError(f"{path}: hyper_parameters is a {type(hyper_parameters).__name__}, not a mapping")
    return hyper_parameters.get("model_config")


def model_from_config(config: Any, path: Path | str) -> nn.Module:
    """Build the network a checkpoint's ``model_config`` describes, from the allow-list only.

    The network's own validation (max_disp, each component's settings, every attention setting)
    runs on the arguments; its ValueError is reported as a ``CheckpointError`` naming the file.
    """
    from .build import build_network

    arguments = validated_config(config, path)
    try:
        return build_network(arguments, import_targets=False)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: model_config does not describe a valid network: {err}") from err


def load_model(path: str | Path, map_location: Any = "cpu", max_disp: int = DEFAULT_MAX_DISP) -> nn.Module:
    """Build and load a network from one of our Lightning checkpoints or an authors' checkpoint.

    Ours carry ``hyper_parameters.model_config`` (``_target_`` naming an allow-listed class + plain
    keyword arguments, see :func:`model_from_config`) and keys ``model.<param>``. The authors' carry
    only weights: a PSMNet with ``max_disp`` (which does not change the weights) and the aggregation
    type their keys show is built. Returns eval mode.
    """
    checkpoint = read_checkpoint(path, map_location)
    config = model_config_of(checkpoint, path)
    if config is not None:
        model = model_from_config(config, path)
        state = {
            k[len(_LIGHTNING_PREFIX):]: v
            for k, v in _state_dict(checkpoint, path).items()
            if k.startswith(_LIGHTNING_PREFIX)
        }
        if legacy.is_legacy(config):
            state = legacy.upgrade_state_keys(state)
        if not state:
            raise CheckpointError(f"{path}: no '{_LIGHTNING_PREFIX}*' weights in state_dict")
        _load_exactly(model, state, path)
    elif "state_dict" in checkpoint:
        keys = _state_dict(checkpoint, path)
        if any(isinstance(k, str) and k.startswith(_LIGHTNING_PREFIX) for k in keys):
            raise CheckpointError(
                f"{path}: our weights ('{_LIGHTNING_PREFIX}*' keys) without hyper_parameters.model_config, so the "
                "network they belong to is unknown; use the run's own checkpoint (its checkpoints/ folder) or give "
                "them to init_from= on a run that builds the same model")
        basic = any(_authors_key(k).startswith("aggregation.classify.") for k in keys)
        model = PSMNet(max_disp=max_disp, aggregation="basic" if basic else "stackhourglass")
        load_psmnet_checkpoint(model, path)
    else:
        raise CheckpointError(
            f"{path}: neither a stereo Lightning checkpoint (hyper_parameters.model_config) "
            f"nor a PSMNet authors' checkpoint ('state_dict'); top-level keys: {sorted(checkpoint)[:10]}"
        )
    return model.to(map_location if isinstance(map_location, (str, torch.device)) else "cpu").eval()


def save_weights(model: StereoNetwork, path: str | Path, dtype: torch.dtype = torch.float16) -> int:
    """A compact inference checkpoint: model config + weights (floating tensors cast to ``dtype``), no
    optimiser or trainer state. ``load_model`` / ``Predictor.from_checkpoint`` read it like a training
    checkpoint. Written atomically; returns its size in bytes."""
    state = {f"{_LIGHTNING_PREFIX}{k}": (v.to(dtype) if v.is_floating_point() else v).clone()
             for k, v in model.state_dict().items()}
    buffer = io.BytesIO()
    torch.save({"hyper_parameters": {"model_config": model.config}, "state_dict": state}, buffer)
    atomic_write(path, buffer.getvalue())
    return len(buffer.getvalue())


def read_state_dict(path: str | Path) -> tuple[dict[str, torch.Tensor], str]:
    """The weights of any checkpoint this project reads, in our network's key names, and their source.

    Sources: ``"lightning"`` (our training checkpoint or ``save_weights`` file: ``model.<key>``) or
    ``"authors"`` (a PSMNet ``.tar``: ``module.<key>``, renamed by ``_authors_key``). Only tensors are
    returned; nothing in the file is instantiated (``torch.load(weights_only=True)``).
    """
    checkpoint = read_checkpoint(path)
    state = _state_dict(checkpoint, path)
    if any(key.startswith(_LIGHTNING_PREFIX) for key in state):
        ours = {k[len(_LIGHTNING_PREFIX):]: v for k, v in state.items() if k.startswith(_LIGHTNING_PREFIX)}
        if legacy.is_legacy(model_config_of(checkpoint, path)):
            ours = legacy.upgrade_state_keys(ours)
        return ours, "lightning"
    if all(key.startswith(_AUTHORS_PREFIX) for key in state):
        return {_authors_key(k): v for k, v in state.items()}, "authors"
    raise CheckpointError(
        f"{path}: state_dict keys start neither with '{_LIGHTNING_PREFIX}' (this project's checkpoints) "
        f"nor with '{_AUTHORS_PREFIX}' (the PSMNet authors' files); first keys: {sorted(state)[:5]}"
    )
