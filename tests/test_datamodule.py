"""The default data config end to end: Hydra compose -> generate -> Scene Flow reader -> batches."""

from __future__ import annotations

import functools
import logging

import hydra
import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from lightning.fabric.utilities.seed import seed_everything

from stereo.config import CONFIG_DIR
from stereo.data.datamodule import StereoDataModule
from stereo.data.io import DataError
from stereo.data.synthetic import sample_paths

TINY = ["data.generate.num_train=4", "data.generate.num_test=2", "data.generate.height=64",
        "data.generate.width=128", "data.generate.max_disp=32", "data.crop_size=[32,64]", "data.num_workers=0"]


def _datamodule(tmp_path, *overrides: str) -> StereoDataModule:
    # Only the data and paths groups matter here; drop the others so this test depends on nothing else.
    with hydra.initialize_config_dir(version_base="1.3", config_dir=CONFIG_DIR):
        cfg = hydra.compose("train", overrides=["~model", "~trainer", "~logger", "~callbacks",
                                                f"paths.data_dir={tmp_path}", *TINY, *overrides])
    return instantiate(cfg.data)


def test_default_config_generates_data_and_yields_model_ready_batches(tmp_path):
    dm = _datamodule(tmp_path)
    dm.prepare_data()
    assert sample_paths(tmp_path / "synthetic", "test", 1)["disparity_left"].is_file()
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["left"].shape == batch["right"].shape == (2, 3, 32, 64)
    assert batch["disparity"].shape == batch["valid"].shape == (2, 32, 64)
    assert batch["left"].dtype == torch.float32 and batch["valid"].dtype == torch.bool
    assert batch["valid"].all() and (batch["disparity"] > 0).all() and (batch["disparity"] < 32).all()
    assert all(name.startswith("flyingthings3d/TRAIN/A/0000/") for name in batch["name"])
    val = next(iter(dm.val_dataloader()))
    assert val["left"].shape == (1, 3, 64, 128)  # evaluation sees whole images
    dm.setup("test")
    assert len(dm.test_dataloader().dataset) == 2  # test: null -> the val (TEST) split


def _corrupt_first_train_pfm(tmp_path):
    path = sample_paths(tmp_path / "synthetic", "train", 0)["disparity_left"]
    path.write_bytes(path.read_bytes()[:100])  # truncated: header says 128x64 floats
    return path


def test_skip_policy_logs_the_bad_file_and_loads_the_next_sample(tmp_path, caplog):
    dm = _datamodule(tmp_path, "data.on_error=skip")
    dm.prepare_data()
    bad = _corrupt_first_train_pfm(tmp_path)
    dm.setup("fit")
    with caplog.at_level(logging.WARNING, logger="stereo.data.datamodule"):
        samples = [dm.train_set[i] for i in range(len(dm.train_set))]
    assert str(bad) in caplog.text and caplog.text.count("skipping sample") == 1
    assert [s["name"] for s in samples][:2] == ["flyingthings3d/TRAIN/A/0000/0007"] * 2  # replaced by the next


def test_raise_policy_names_the_bad_file(tmp_path):
    dm = _datamodule(tmp_path)
    dm.prepare_data()
    bad = _corrupt_first_train_pfm(tmp_path)
    dm.setup("fit")
    with pytest.raises(DataError, match=bad.name) as failure:
        dm.train_set[0]
    assert str(bad) in str(failure.value)
    assert any("flyingthings3d/TRAIN/A/0000/0006" in note for note in failure.value.__notes__)


class _SameSample(torch.utils.data.Dataset):
    """Every index holds the same random image, so differences between items are augmentation only."""

    def __init__(self, transform):
        rng = np.random.default_rng(0)
        self.sample = {"left": rng.integers(0, 256, (40, 72, 3), dtype=np.uint8), "name": "same",
                       "disparity": np.arange(40 * 72, dtype=np.float32).reshape(40, 72), "valid": np.ones((40, 72), bool)}
        self.sample["right"] = self.sample["left"].copy()
        self.transform = transform

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index):
        return self.transform({k: v.copy() if isinstance(v, np.ndarray) else v for k, v in self.sample.items()})


def _two_epochs(seed: int) -> list[torch.Tensor]:
    seed_everything(seed, workers=True)
    dm = StereoDataModule(train=functools.partial(_SameSample), val=None, batch_size=1, num_workers=2,
                          crop_size=(16, 32))
    dm.setup("fit")
    loader = dm.train_dataloader()
    return [torch.cat([b["disparity"].flatten(), b["left"].flatten()]) for _ in range(2) for b in loader]


def test_worker_seeding_differs_per_worker_and_epoch_and_is_reproducible():
    first, again, other = _two_epochs(3), _two_epochs(3), _two_epochs(4)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.equal(first[0], first[1])  # items 0 and 1 come from different workers
    assert not all(torch.equal(a, b) for a, b in zip(first[:4], first[4:]))  # epoch 2 draws anew
    assert not all(torch.equal(a, b) for a, b in zip(first, other))


def test_unknown_policy_or_augmentation_key_is_rejected_by_name():
    with pytest.raises(ValueError, match="on_error must be one of"):
        StereoDataModule(train=None, val=None, on_error="ignore")
    with pytest.raises(ValueError, match=r"unknown keys \['hue'\]"):
        StereoDataModule(train=None, val=None, augment={"hue": 0.1})
