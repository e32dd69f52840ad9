"""The one place a network is built from a model config (``conf/model/*.yaml``, ``cfg.model``).

Training, evaluation, inference, export, the ablation, the benchmarks and the tests all call
:func:`build_network` (the architecture) or :func:`build_training_network` (the architecture set up
as a run config says), so a network built anywhere is the network ``stereo.train`` trains.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from torch import nn

from ..config import CONFIG_DIR


def model_config(name: str, **overrides: Any) -> dict[str, Any]:
    """``conf/model/<name>.yaml`` as a plain dict, with top-level keys replaced by ``overrides``."""
    path = Path(CONFIG_DIR) / "model" / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise FileNotFoundError(f"model={name}: no {path.name} in conf/model (known: {known})")
    config = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    config.update(overrides)
    return config


def build_network(config: Mapping[str, Any] | DictConfig) -> nn.Module:
    """The network a model config describes (its architecture only: nothing about how it runs)."""
    import hydra

    if isinstance(config, DictConfig):
        config = OmegaConf.to_container(config, resolve=True)
    return hydra.utils.instantiate(dict(config))


def build_training_network(cfg: DictConfig) -> nn.Module:
    """``cfg.model`` (the architecture, saved with checkpoints) set up to run as the run config says:
    activation checkpointing and the execution backend, neither of which changes the function."""
    from ..accel import apply_backend

    model = build_network(cfg.model)
    checkpointing = cfg.get("activation_checkpointing") or {}
    model.checkpoint_aggregation = bool(checkpointing.get("aggregation", False))
    model.checkpoint_features = bool(checkpointing.get("features", False))
    return apply_backend(model, str(cfg.get("model_backend", "plain")))
