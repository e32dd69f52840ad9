"""The fine-tuning recipes (every conf/experiment file built on psmnet_finetune.yaml, found by globbing):
each composes with the authors' values and runs two real training steps from
pretrained weights on a tiny benchmark-layout tree built from the real samples."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from benchmark_trees import eth3d_tree, kitti_tree, middlebury_tree
from conftest import compose
from omegaconf import OmegaConf

from stereo.config import CONFIG_DIR
from stereo.models import PSMNet
from stereo.train import train


def _finetuning_recipes() -> dict[str, str]:
    """Every recipe built on psmnet_finetune.yaml (conf/experiment, globbed) -> the data option it selects."""
    recipes = {}
    for path in sorted((Path(CONFIG_DIR) / "experiment").glob("*.yaml")):
        defaults = OmegaConf.to_container(OmegaConf.load(path)).get("defaults", [])
        if "psmnet_finetune" in defaults:
            recipes[path.stem] = next(d["override /data"] for d in defaults if isinstance(d, dict) and "override /data" in d)
    return recipes


RECIPES = _finetuning_recipes()


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_composes_with_the_authors_finetuning_values(recipe):
    cfg = compose("train", [f"experiment={recipe}", "init_from=weights.tar"])
    assert (cfg.data.crop_size, cfg.data.batch_size, cfg.data.augment.color) == ([256, 512], 12, False)
    assert cfg.optim.optimizer._target_ == "torch.optim.Adam" and cfg.optim.optimizer.lr == 1e-3
    assert list(cfg.optim.optimizer.betas) == [0.9, 0.999]
    assert cfg.optim.scheduler._target_ == "torch.optim.lr_scheduler.MultiStepLR"
    assert (list(cfg.optim.scheduler.milestones), cfg.optim.scheduler.gamma, cfg.optim.interval) == ([200], 0.1, "epoch")
    assert cfg.trainer.max_epochs == 300 and cfg.seed == 1 and cfg.model.max_disp == 192
    assert cfg.loss.mask_rule == ("positive" if RECIPES[recipe].startswith("kitti") else "positive_below_max")
    assert cfg.data.train is not None and cfg.ckpt_path is None


def _tree(data: str, real: Path, root: Path) -> list[str]:
    """The tree for the data option ``data`` and the overrides pointing the recipe's datasets at it."""
    if data in ("kitti2015", "kitti2012"):
        kitti_tree(real, root, int(data[-4:]), frames=[0, 1, 160])  # two training frames, one validation frame
    elif data == "middlebury":
        middlebury_tree(real, root, {"Cones": 64, "Cones2": 64})
    elif data == "eth3d":
        eth3d_tree(real, root, ["cones_1", "cones_2"])
    else:
        raise NotImplementedError(f"no benchmark-layout tree for data={data} (tests/benchmark_trees.py)")
    return [f"data.train.root={root}", f"data.val.root={root}"]


@pytest.mark.slow
@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_runs_two_steps_from_pretrained_weights(recipe, real_data_dir, tmp_path):
    """Each recipe's own part: its data option on the benchmark layout, its mask rule and schedule,
    init_from. The network is psmnet_basic (model=psmnet's training path is tested on synthetic data in
    tests/test_train.py; loading PSMNet weights into EA-PSMNet with init_strict=false in tests/test_init_from.py)."""
    torch.manual_seed(0)
    weights = tmp_path / "pretrained.ckpt"
    state = {f"model.{k}": v for k, v in PSMNet(max_disp=16, aggregation="basic").state_dict().items()}
    torch.save({"state_dict": state, "hyper_parameters": {"model_config": {}}}, weights)
    overrides = [f"experiment={recipe}", "model=psmnet_basic", f"init_from={weights}",
                 *_tree(RECIPES[recipe], real_data_dir, tmp_path / "data"),
                 "trainer=cpu", "trainer.max_steps=2", "trainer.limit_val_batches=1", "model.max_disp=16",
                 "data.crop_size=[256,256]", "data.batch_size=2", "data.num_workers=0", "logger=none",
                 f"paths.log_dir={tmp_path / 'logs'}", f"paths.output_dir={tmp_path / 'run'}"]
    results = train(compose("train", overrides))
    assert results["global_step"] == 2
    assert torch.isfinite(torch.tensor(results["train/loss"])) and torch.isfinite(torch.tensor(results["val/epe"]))
    assert Path(results["checkpoint"]).is_file()
