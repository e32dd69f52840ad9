"""The fine-tuning recipes (conf/experiment/psmnet_{kitti2015,kitti2012,middlebury,eth3d}.yaml, built on
psmnet_finetune.yaml): each composes with the authors' values and runs two real training steps from
pretrained weights on a tiny benchmark-layout tree built from the real samples."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from benchmark_trees import eth3d_tree, kitti_tree, middlebury_tree
from conftest import compose

from stereo.models import PSMNet
from stereo.train import train

RECIPES = ("psmnet_kitti2015", "psmnet_kitti2012", "psmnet_middlebury", "psmnet_eth3d")


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_composes_with_the_authors_finetuning_values(recipe):
    cfg = compose("train", [f"experiment={recipe}", "init_from=weights.tar"])
    assert (cfg.data.crop_size, cfg.data.batch_size, cfg.data.augment.color) == ([256, 512], 12, False)
    assert cfg.optim.optimizer._target_ == "torch.optim.Adam" and cfg.optim.optimizer.lr == 1e-3
    assert list(cfg.optim.optimizer.betas) == [0.9, 0.999]
    assert cfg.optim.scheduler._target_ == "torch.optim.lr_scheduler.MultiStepLR"
    assert (list(cfg.optim.scheduler.milestones), cfg.optim.scheduler.gamma, cfg.optim.interval) == ([200], 0.1, "epoch")
    assert cfg.trainer.max_epochs == 300 and cfg.seed == 1 and cfg.model.max_disp == 192
    assert cfg.loss.mask_rule == ("positive" if "kitti" in recipe else "positive_below_max")
    assert cfg.data.train is not None and cfg.ckpt_path is None


def _tree(recipe: str, real: Path, root: Path) -> list[str]:
    """The tree for ``recipe`` and the overrides pointing the recipe's datasets at it."""
    if recipe in ("psmnet_kitti2015", "psmnet_kitti2012"):
        year = int(recipe[-4:])
        kitti_tree(real, root, year, frames=[0, 1, 160])  # two training frames, one validation frame
        return [f"data.train.root={root}", f"data.val.root={root}"]
    if recipe == "psmnet_middlebury":
        middlebury_tree(real, root, {"Cones": 64, "Cones2": 64})
        return [f"data.val.root={root}", f"data.train.root={root}"]
    eth3d_tree(real, root, ["cones_1", "cones_2"])
    return [f"data.val.root={root}", f"data.train.root={root}"]


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
                 *_tree(recipe, real_data_dir, tmp_path / "data"),
                 "trainer=cpu", "trainer.max_steps=2", "trainer.limit_val_batches=1", "model.max_disp=16",
                 "data.crop_size=[256,256]", "data.batch_size=2", "data.num_workers=0", "logger=none",
                 f"paths.log_dir={tmp_path / 'logs'}", f"paths.output_dir={tmp_path / 'run'}"]
    results = train(compose("train", overrides))
    assert results["global_step"] == 2
    assert torch.isfinite(torch.tensor(results["train/loss"])) and torch.isfinite(torch.tensor(results["val/epe"]))
    assert Path(results["checkpoint"]).is_file()
