"""The one network builder (stereo/models/build.py): ``hydra.utils.instantiate(cfg.model)`` builds what
``build_network(cfg.model)`` builds, for every model config (found by globbing conf/model)."""

from __future__ import annotations

import json

import hydra
import pytest
import torch
from conftest import MODEL_CONFIGS

from stereo.config import CONFIG_DIR
from stereo.models import StereoNetwork
from stereo.models.build import INSTANTIATE_KEYS, architecture, build_network



@pytest.mark.parametrize("name", MODEL_CONFIGS)
def test_hydra_instantiate_builds_the_network_build_network_builds(name):
    """lightning-hydra-template's convention: same class, same recorded config (plain data, without
    Hydra's instantiate keys), same state-dict keys and shapes, and with one seed the same weights."""
    with hydra.initialize_config_dir(version_base="1.3", config_dir=CONFIG_DIR):
        cfg = hydra.compose("train", overrides=[f"model={name}"])
    torch.manual_seed(0)
    instantiated = hydra.utils.instantiate(cfg.model)
    torch.manual_seed(0)
    built = build_network(cfg.model)
    assert type(instantiated) is type(built) is StereoNetwork
    assert json.loads(json.dumps(instantiated.config)) == instantiated.config == built.config  # plain dicts and lists
    assert not set(INSTANTIATE_KEYS) & set(built.config)
    assert architecture(cfg.model)["features"] == built.config["features"]
    mine, theirs = instantiated.state_dict(), built.state_dict()
    assert list(mine) == list(theirs)
    for key, value in theirs.items():
        assert mine[key].shape == value.shape and torch.equal(mine[key], value), key
