"""The one place a network is built from a model config (``conf/model/*.yaml``, ``cfg.model``).

Training, evaluation, inference, export, the ablation, the benchmarks and the tests all call
:func:`build_network` (the architecture) or :func:`build_training_network` (the architecture set up
as a run config says), so a network built anywhere is the network ``stereo.train`` trains;
checkpoints are rebuilt through it too (``checkpoints.model_from_config``), after validation.

A model config is ``{_target_: stereo.models.StereoNetwork, max_disp, features, cost_volume,
aggregation, regression, attention}``, each component ``{_target_: <class>, **settings}``. The
network resolves component classes from the registry only; a Hydra config (code the user wrote
or chose, like any Hydra ``_target_``) may name a component in a module not imported yet:
:func:`build_network` imports it first (``import_targets``), and it must subclass its kind's base.

``hydra.utils.instantiate(cfg.model)`` (lightning-hydra-template's convention) builds the same network:
the model configs set ``_recursive_: false`` and ``_convert_: all`` (:data:`INSTANTIATE_KEYS`), so Hydra
calls ``StereoNetwork`` with the components as plain dicts, as :func:`build_network` does. Those keys
say how Hydra calls the network, not what it is: :func:`architecture` drops them, so they are never
passed to the network nor recorded in a checkpoint.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from ..config import CONFIG_DIR
from . import legacy
from .components import KINDS, component_class, registered
from .network import COMPONENTS, NETWORK_TARGET, OPTIONAL_COMPONENTS, StereoNetwork


# How hydra.utils.instantiate calls the network (set in conf/model): not part of the architecture.
INSTANTIATE_KEYS = ("_recursive_", "_convert_")


def architecture(config: Mapping[str, Any] | DictConfig) -> dict[str, Any]:
    """A model config as plain data (interpolations resolved) without Hydra's :data:`INSTANTIATE_KEYS`:
    what :func:`build_network` builds and what a checkpoint records (``stereo.train``)."""
    if isinstance(config, DictConfig):
        config = OmegaConf.to_container(config, resolve=True)
    return {key: value for key, value in config.items() if key not in INSTANTIATE_KEYS}


def model_config(name: str, **overrides: Any) -> dict[str, Any]:
    """``conf/model/<name>.yaml`` composed by Hydra (its defaults list applied) as a plain dict, with
    top-level keys replaced by ``overrides``."""
    import hydra
    from hydra.core.global_hydra import GlobalHydra

    path = Path(CONFIG_DIR) / "model" / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise FileNotFoundError(f"model={name}: no {path.name} in conf/model (known: {known})")
    if GlobalHydra.instance().is_initialized():  # inside a caller's Hydra context (tests, Hydra apps)
        composed = hydra.compose(f"model/{name}")
    else:
        with hydra.initialize_config_dir(version_base="1.3", config_dir=CONFIG_DIR):
            composed = hydra.compose(f"model/{name}")
    config = architecture(composed.model)
    config.update(overrides)
    return config


def build_network(config: Mapping[str, Any] | DictConfig, import_targets: bool = True) -> StereoNetwork:
    """The network a model config describes (its architecture only: nothing about how it runs).

    ``import_targets`` imports the module of a component ``_target_`` that is not registered yet
    (configs only; checkpoints are built with it off, after ``checkpoints.validated_config``).
    """
    config = architecture(config)
    if legacy.is_legacy(config):
        config = legacy.upgrade_config(config)
    if config.get("_target_") not in (NETWORK_TARGET, "stereo.models.network.StereoNetwork"):
        raise ValueError(f"model._target_ must be {NETWORK_TARGET} (a network of components), "
                         f"got {config.get('_target_')!r}")
    if import_targets:
        for kind in COMPONENTS + OPTIONAL_COMPONENTS:
            component = config.get(kind)
            if isinstance(component, Mapping):
                _import_component(kind, component.get("_target_"))
    return StereoNetwork(**{k: v for k, v in config.items() if k != "_target_"})


def _import_component(kind: str, target: Any) -> None:
    """Import the class a config's ``_target_`` names (registering it) and check its kind."""
    if not isinstance(target, str) or target in registered(kind):
        return
    try:
        component_class(kind, target)
        return
    except ValueError:
        pass
    from hydra.utils import get_class

    try:
        cls = get_class(target)
    except Exception as err:
        raise ValueError(f"model.{kind}._target_ {target!r} cannot be imported: {err}") from err
    if not (isinstance(cls, type) and issubclass(cls, KINDS[kind])):
        raise ValueError(f"model.{kind}._target_ {target!r} is not a {KINDS[kind].__name__} subclass "
                         f"(stereo.models.components)")


def build_training_network(cfg: DictConfig) -> StereoNetwork:
    """``cfg.model`` (the architecture, saved with checkpoints) set up to run as the run config says:
    activation checkpointing and the execution backend, neither of which changes the function."""
    from ..accel import apply_backend

    model = build_network(cfg.model)
    checkpointing = cfg.get("activation_checkpointing") or {}
    model.checkpoint_aggregation = bool(checkpointing.get("aggregation", False))
    model.checkpoint_features = bool(checkpointing.get("features", False))
    return apply_backend(model, str(cfg.get("model_backend", "plain")))
