"""Every config the entry points can be given composes and resolves: each experiment, each option of each
group (found by globbing conf/, so new files are covered without editing this test), and every entry
config (conf/*.yaml, each a command's). Hydra merges experiments and debug configs into the tree without struct checks, so a mistyped key
there would silently add a setting nobody reads; the key check below turns that into a failure.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hydra
import pytest
from hydra.core.hydra_config import HydraConfig
from hydra.utils import get_method
from omegaconf import DictConfig, OmegaConf, open_dict

from stereo.config import CONFIG_DIR
from stereo.evaluation import protocols

CONF = Path(CONFIG_DIR)
# entry config -> groups a user may choose from (conf/<group>/<option>.yaml, each option found by globbing)
# and the values of its required keys. Listed, not derived from each entry's defaults: synthetic's data
# must be the generator's (data=synthetic), and a new command's required values are only known here.
ENTRIES = {
    "train": (["model", "data", "optim", "trainer", "logger", "callbacks", "paths", "debug", "experiment"], []),
    "eval": (["data", "paths"], ["ckpt_path=model.ckpt"]),
    "infer": ([], ["ckpt_path=model.ckpt"]),
    "export": ([], ["ckpt_path=model.ckpt", "output=model.onnx"]),
    "calibrate": ([], ["board.square_size=0.025"]),
    "submit": ([], ["benchmark=kitti2015", "ckpt_path=model.ckpt", "data_root=kitti", "output=submission"]),
    "check": ([], ["root=sceneflow"]),
    "synthetic": ([], []),
    "ablation": ([], []),
    "compare_real": ([], []),
    "tune_sgbm": (["data", "paths"], []),
}
DATA_BASE = "base"  # conf/data/base.yaml: what the data options share; names no datasets, so not an option


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml") if not (group == "data" and p.stem == DATA_BASE))


CASES = [(entry, group, option) for entry, (groups, _) in ENTRIES.items() for group in groups for option in _options(group)]


@pytest.fixture
def compose_resolved(tmp_path):
    """Compose ``entry`` with overrides and resolve every interpolation, as a run would (hydra:* included)."""
    saved = HydraConfig.instance().cfg

    def run(entry: str, *overrides: str) -> tuple[DictConfig, dict[str, Any]]:
        with hydra.initialize_config_dir(version_base="1.3", config_dir=CONFIG_DIR):
            cfg = hydra.compose(entry, overrides=[*ENTRIES[entry][1], *overrides], return_hydra_config=True)
        cfg.hydra.runtime.output_dir = str(tmp_path / "run")
        HydraConfig.instance().set_config(cfg)
        assert OmegaConf.select(cfg, "hydra.run.dir")  # the run directory resolves
        with open_dict(cfg):
            del cfg["hydra"]
        return cfg, OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)

    yield run
    HydraConfig.instance().cfg = saved


def _targets(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["_target_"]] if "_target_" in node else []
        return own + [t for value in node.values() for t in _targets(value)]
    if isinstance(node, list):
        return [t for value in node for t in _targets(value)]
    return []


@pytest.mark.parametrize(("entry", "group", "option"), CASES, ids=[f"{e}-{g}={o}" for e, g, o in CASES])
def test_every_group_option_composes_resolves_and_names_importable_targets(compose_resolved, entry, group, option):
    cfg, resolved = compose_resolved(entry, f"{group}={option}")
    for target in _targets(resolved):
        assert callable(get_method(target)), target
    if entry == "train":
        for name in (resolved["module"]["val_protocol"], resolved["eval"]["protocol"]):
            protocols.get_protocol(name)  # raises for a name the protocol table does not know


@pytest.mark.parametrize("entry", list(ENTRIES))
def test_every_entry_config_composes_and_resolves_with_its_defaults(compose_resolved, entry):
    _, resolved = compose_resolved(entry)
    assert resolved


def test_every_entry_config_is_listed_here():
    assert sorted(p.stem for p in CONF.glob("*.yaml")) == sorted(ENTRIES)


def _global_config_layers(group: str, option: str) -> tuple[list[str], list[dict[str, Any]]]:
    """Group overrides (``override /model: psmnet`` -> model=psmnet) and bodies of a @package _global_ config
    and of the configs of its group it builds on (``defaults: [psmnet_sceneflow]``)."""
    raw = OmegaConf.to_container(OmegaConf.load(CONF / group / f"{option}.yaml"))
    overrides, bodies = [], []
    for entry in raw.pop("defaults", []):
        if isinstance(entry, str) and entry != "_self_":
            parent_overrides, parent_bodies = _global_config_layers(group, entry)
            overrides, bodies = overrides + parent_overrides, bodies + parent_bodies
        elif isinstance(entry, dict):
            ((key, value),) = entry.items()
            overrides.append(f"{key.removeprefix('override ').strip('/')}={value}")
    return overrides, bodies + [raw]


GLOBAL_CONFIGS = [(group, option) for group in ("experiment", "debug") for option in _options(group)]


@pytest.mark.parametrize(("group", "option"), GLOBAL_CONFIGS, ids=[f"{g}={o}" for g, o in GLOBAL_CONFIGS])
def test_experiment_and_debug_configs_only_set_keys_that_exist(group, option):
    overrides, bodies = _global_config_layers(group, option)
    with hydra.initialize_config_dir(version_base="1.3", config_dir=CONFIG_DIR):
        base = hydra.compose("train", overrides=overrides)
    for body in bodies:
        _assert_keys_exist(body, base, f"conf/{group}/{option}.yaml", overrides)


def _assert_keys_exist(node: dict[str, Any], base: Any, source: str, overrides: list[str], prefix: str = "") -> None:
    """Every key of ``node`` exists in ``base``; a block may replace a null (e.g. data.generate), not add keys."""
    for key, value in node.items():
        assert isinstance(base, DictConfig) and key in base, (
            f"{source} sets {prefix}{key}, which conf/train.yaml with {overrides} does not have")
        if isinstance(value, dict) and base[key] is not None:
            _assert_keys_exist(value, base[key], source, overrides, f"{prefix}{key}.")


@pytest.mark.parametrize("option", _options("data"))
def test_each_data_option_names_a_protocol_of_its_own_dataset(compose_resolved, option):
    """``data.protocol`` is what validation and evaluation score under unless set (the entry configs'
    ``${data.protocol}``, checked once below and per experiment): it must be a protocol of that dataset."""
    _, train = compose_resolved("train", f"data={option}")
    assert protocols.get_protocol(train["data"]["protocol"]).dataset == option


@pytest.mark.parametrize("option", _options("experiment"))
def test_experiments_score_under_their_data_option_s_protocol(compose_resolved, option):
    """Training validates (module.val_protocol) and evaluates (eval.protocol) under the data option's
    protocol: no experiment sets either apart."""
    _, resolved = compose_resolved("train", f"experiment={option}")
    assert resolved["module"]["val_protocol"] == resolved["eval"]["protocol"] == resolved["data"]["protocol"]


def test_the_evaluate_command_scores_under_the_data_option_s_protocol(compose_resolved):
    _, evaluate = compose_resolved("eval", "data=kitti2015")
    assert evaluate["protocol"] == evaluate["data"]["protocol"] == "kitti2015"


def test_a_protocol_for_another_dataset_is_refused_before_anything_runs(compose_resolved, tmp_path):
    from stereo.evaluate import evaluate
    from stereo.train import train

    cfg, _ = compose_resolved("train", "data=kitti2015", "eval.protocol=sceneflow")
    with pytest.raises(ValueError, match=r"^eval.protocol=sceneflow scores sceneflow data, but the data config "
                                         r"holds kitti2015 \(data.protocol=kitti2015\): use one of \['kitti2015'\]"):
        train(cfg)
    cfg, _ = compose_resolved("eval", "data=synthetic", "protocol=kitti2012", f"ckpt_path={tmp_path / 'x.ckpt'}")
    (tmp_path / "x.ckpt").write_bytes(b"")  # never read: the protocol is refused first
    with pytest.raises(ValueError, match="protocol=kitti2012 scores kitti2012 data"):
        evaluate(cfg)
    # a protocol of the same dataset is a choice, not a mistake
    assert protocols.check_data("sceneflow_psmnet", "sceneflow").name == "sceneflow_psmnet"


def test_evaluation_settings_are_shared_and_overridable_under_both_entry_points(compose_resolved):
    _, train = compose_resolved("train", "eval.protocol=kitti2015", "eval.export.max_images=0")
    _, evaluate = compose_resolved("eval", "protocol=kitti2015", "export.max_images=0")
    shared = OmegaConf.to_container(OmegaConf.load(CONF / "eval_settings" / "default.yaml"))
    assert set(shared) <= set(train["eval"]) and set(shared) <= set(evaluate)
    for settings in (train["eval"], evaluate):
        assert settings["protocol"] == "kitti2015" and settings["export"]["max_images"] == 0
        assert settings["split"] == shared["split"] and settings["export"]["pfm"] == shared["export"]["pfm"]
    assert train["eval"]["checkpoint"] == "last"  # training alone picks which weights are scored
