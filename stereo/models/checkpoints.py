"""Load the PSMNet authors' public checkpoints and this project's Lightning checkpoints.

Everything is read with ``torch.load(weights_only=True)``: a checkpoint can never run code. The
authors' files are ``torch.save({'epoch', 'state_dict', 'train_loss'})`` of an ``nn.DataParallel``
model, so keys read ``module.<name>``; our network keeps their names except that the 3-D head lives
under ``aggregation.`` (``module.dres0.0.0.weight`` → ``aggregation.dres0.0.0.weight``).
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data.io import atomic_write
from .attention import _AttentionBlock
from .psmnet import PSMNet

_AUTHORS_PREFIX = "module."
_LIGHTNING_PREFIX = "model."
_LISTED = 20  # keys shown per category in error messages


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


def _read(path: str | Path, map_location: Any = "cpu") -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint file not found")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        if "weights only" in str(err).lower():
            raise CheckpointError(
                f"{path}: holds Python objects that torch.load(weights_only=True) refuses to unpickle "
                f"(only tensors and plain containers are allowed): {str(err).splitlines()[0]}"
            ) from err
        raise CheckpointError(f"{path}: not a PyTorch checkpoint (truncated or another format): {err}") from err
    except Exception as err:  # torch's readers fail in many ways on foreign bytes (IndexError, EOFError ...)
        raise CheckpointError(f"{path}: not a PyTorch checkpoint (truncated or another format): {err}") from err
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


def load_psmnet_checkpoint(model: PSMNet, path: str | Path) -> PSMNet:
    """Load an authors' PSMNet checkpoint into ``model`` (same aggregation type) in place.

    Attention blocks are not in such checkpoints: they are reset to the identity (zero
    reprojection), so the loaded network computes exactly the authors' function. Missing,
    unexpected or mis-shaped keys raise ``CheckpointError`` listing them.
    """
    state = {_authors_key(k): v for k, v in _state_dict(_read(path), path).items()}
    blocks = _attention_blocks(model)
    attention_keys = {k for k in model.state_dict() for name in blocks if k.startswith(f"{name}.")}
    _load_exactly(model, state, path, ignore=attention_keys)
    for block in blocks.values():
        block.reset_to_identity()
    return model


def load_model(path: str | Path, map_location: Any = "cpu", max_disp: int = 192) -> nn.Module:
    """Build and load a network from one of our Lightning checkpoints or an authors' checkpoint.

    Ours carry ``hyper_parameters.model_config`` (a Hydra config dict with ``_target_``) and keys
    ``model.<param>``. The authors' carry only weights: a PSMNet with ``max_disp`` (which does not
    change the weights) and the aggregation type their keys show is built. Returns eval mode.
    """
    checkpoint = _read(path, map_location)
    config = (checkpoint.get("hyper_parameters") or {}).get("model_config")
    if config is not None:
        if not isinstance(config, Mapping) or "_target_" not in config:
            raise CheckpointError(f"{path}: hyper_parameters.model_config is not a model config with _target_")
        from hydra.utils import instantiate  # deferred: only our own checkpoints need Hydra

        model = instantiate(dict(config))
        state = {
            k[len(_LIGHTNING_PREFIX):]: v
            for k, v in _state_dict(checkpoint, path).items()
            if k.startswith(_LIGHTNING_PREFIX)
        }
        if not state:
            raise CheckpointError(f"{path}: no '{_LIGHTNING_PREFIX}*' weights in state_dict")
        _load_exactly(model, state, path)
    elif "state_dict" in checkpoint:
        keys = _state_dict(checkpoint, path)
        basic = any(_authors_key(k).startswith("aggregation.classify.") for k in keys)
        model = PSMNet(max_disp=max_disp, aggregation="basic" if basic else "stackhourglass")
        load_psmnet_checkpoint(model, path)
    else:
        raise CheckpointError(
            f"{path}: neither a stereo Lightning checkpoint (hyper_parameters.model_config) "
            f"nor a PSMNet authors' checkpoint ('state_dict'); top-level keys: {sorted(checkpoint)[:10]}"
        )
    return model.to(map_location if isinstance(map_location, (str, torch.device)) else "cpu").eval()


def psmnet_config(model: PSMNet) -> dict[str, Any]:
    """The Hydra model config that rebuilds ``model`` (what our checkpoints carry as model_config)."""
    return {"_target_": f"{PSMNet.__module__}.{PSMNet.__name__}", "max_disp": model.max_disp,
            "aggregation": model.aggregation_name, "attention": dict(model.attention_config),
            "align_corners": model.align_corners}


def save_weights(model: PSMNet, path: str | Path, dtype: torch.dtype = torch.float16) -> int:
    """A compact inference checkpoint: model config + weights (floating tensors cast to ``dtype``), no
    optimiser or trainer state. ``load_model`` / ``Predictor.from_checkpoint`` read it like a training
    checkpoint. Written atomically; returns its size in bytes."""
    state = {f"{_LIGHTNING_PREFIX}{k}": (v.to(dtype) if v.is_floating_point() else v).clone()
             for k, v in model.state_dict().items()}
    buffer = io.BytesIO()
    torch.save({"hyper_parameters": {"model_config": psmnet_config(model)}, "state_dict": state}, buffer)
    atomic_write(path, buffer.getvalue())
    return len(buffer.getvalue())


def read_state_dict(path: str | Path) -> tuple[dict[str, torch.Tensor], str]:
    """The weights of any checkpoint this project reads, in our network's key names, and their source.

    Sources: ``"lightning"`` (our training checkpoint or ``save_weights`` file: ``model.<key>``) or
    ``"authors"`` (a PSMNet ``.tar``: ``module.<key>``, renamed by ``_authors_key``). Only tensors are
    returned; nothing in the file is instantiated (``torch.load(weights_only=True)``).
    """
    checkpoint = _read(path)
    state = _state_dict(checkpoint, path)
    if any(key.startswith(_LIGHTNING_PREFIX) for key in state):
        return {k[len(_LIGHTNING_PREFIX):]: v for k, v in state.items() if k.startswith(_LIGHTNING_PREFIX)}, "lightning"
    if all(key.startswith(_AUTHORS_PREFIX) for key in state):
        return {_authors_key(k): v for k, v in state.items()}, "authors"
    raise CheckpointError(
        f"{path}: state_dict keys start neither with '{_LIGHTNING_PREFIX}' (this project's checkpoints) "
        f"nor with '{_AUTHORS_PREFIX}' (the PSMNet authors' files); first keys: {sorted(state)[:5]}"
    )
