"""The shipped weights: data inside the package, loaded through the validated checkpoint path, used by
``stereo.infer`` without ``ckpt_path`` and accepted by name wherever a checkpoint is."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from stereo.config import CONFIG_DIR
from stereo.data.io import read_pfm
from stereo.models import pretrained
from stereo.models.checkpoints import load_model, read_checkpoint


def test_each_shipped_file_is_small_half_precision_data_that_loads_through_the_validated_path():
    for name in pretrained.SHIPPED:
        path = pretrained.resolve_checkpoint(name)
        assert path.stat().st_size < 5_000_000
        checkpoint = read_checkpoint(path)  # tensors and plain data only (weights_only)
        tensors = [v for v in checkpoint["state_dict"].values() if v.is_floating_point()]
        assert tensors and all(v.dtype == torch.float16 for v in tensors)
        model = load_model(path)
        assert model.config["features"]["_target_"] == "stereo.models.features.CensusFeatures"
        assert all(p.dtype == torch.float32 for p in model.parameters())  # fp16 on disk, fp32 to run


def test_a_missing_shipped_file_is_one_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(pretrained, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(FileNotFoundError, match="the shipped weights 'ea_census_zero_shot' are missing"):
        pretrained.resolve_checkpoint("ea_census_zero_shot")
    assert pretrained.resolve_checkpoint("my.ckpt").name == "my.ckpt"  # anything else is a path


def test_infer_without_a_checkpoint_uses_the_shipped_weights_and_says_so_first(tmp_path):
    rng = np.random.default_rng(0)
    left = cv2.GaussianBlur(rng.integers(0, 256, (96, 160, 3), dtype=np.uint8), (3, 3), 0)
    cv2.imwrite(str(tmp_path / "left.png"), left)
    cv2.imwrite(str(tmp_path / "right.png"), np.roll(left, -6, axis=1))
    done = subprocess.run([sys.executable, "-m", "stereo.infer", f"left={tmp_path / 'left.png'}",
                           f"right={tmp_path / 'right.png'}", f"output_dir={tmp_path / 'out'}", "formats=[pfm]"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines()[0].startswith("using the shipped weights ea_census_zero_shot")
    disparity = read_pfm(tmp_path / "out" / "left_disp.pfm")
    assert disparity.shape == (96, 160) and np.isfinite(disparity).all()
    # a textured pair shifted by 6 px: the interior is matched (borders lack the right view's content)
    assert abs(float(np.median(disparity[16:-16, 32:-16])) - 6.0) < 1.0


def test_every_recipe_that_starts_from_a_shipped_name_finds_it():
    """A recipe continuing shipped weights (experiment=ea_census_cpu_stage2 starts from ea_census_stage1)
    must run from a fresh clone: the name it gives resolves to a file inside the package."""
    named = {}
    for recipe in sorted((Path(CONFIG_DIR) / "experiment").glob("*.yaml")):
        start = OmegaConf.load(recipe).get("init_from")
        if isinstance(start, str) and not start.endswith((".ckpt", ".tar", ".pth")):
            named[recipe.stem] = start
    assert named, "no recipe starts from a shipped name (the stage-2 recipe does)"
    for recipe, name in named.items():
        assert pretrained.is_shipped(name), f"{recipe}: init_from={name} is neither a file nor a shipped name"
        assert pretrained.resolve_checkpoint(name).is_file()
