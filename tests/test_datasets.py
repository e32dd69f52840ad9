"""KITTI 2012/2015, MiddEval3, ETH3D and older Middlebury datasets on tiny trees written in tmp_path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from stereo.data.eth3d import ETH3DDataset
from stereo.data.io import DataError, write_disparity_png16, write_image, write_pfm
from stereo.data.kitti import KITTIDataset
from stereo.data.middlebury import LegacyMiddleburyDataset, MiddleburyDataset

SIZE = (6, 10)
RNG = np.random.default_rng(0)


def _image(path: Path, size=SIZE, grey=False) -> None:
    write_image(path, RNG.integers(0, 256, size if grey else (*size, 3), dtype=np.uint8))


def _kitti_tree(root: Path, year: int, frames: range, noc: bool = True) -> Path:
    left, right, occ, noc_folder = {2012: ("colored_0", "colored_1", "disp_occ", "disp_noc"),
                                    2015: ("image_2", "image_3", "disp_occ_0", "disp_noc_0")}[year]
    for frame in frames:
        name = f"{frame:06d}_10.png"
        _image(root / "training" / left / name)
        _image(root / "training" / right / name)
        write_disparity_png16(root / "training" / occ / name, np.full(SIZE, 2.5, np.float32))
        if noc:
            half = np.full(SIZE, 2.5, np.float32)
            half[:, : SIZE[1] // 2] = 0
            write_disparity_png16(root / "training" / noc_folder / name, half)
        (root / "training" / left / f"{frame:06d}_11.png").touch()  # the other frame of the pair is ignored
    return root


@pytest.mark.parametrize("year", [2012, 2015])
def test_kitti_psmnet_split_first_160_frames_train(tmp_path, year):
    _kitti_tree(tmp_path, year, range(158, 163))
    train = KITTIDataset(tmp_path, year=year, split="train")
    val = KITTIDataset(tmp_path / "training", year=year, split="val")  # the training folder itself works too
    assert train.names == [f"kitti{year}/000158_10", f"kitti{year}/000159_10"]
    assert val.names == [f"kitti{year}/000160_10", f"kitti{year}/000161_10", f"kitti{year}/000162_10"]
    assert len(KITTIDataset(tmp_path, year=year, split="all")) == 5
    sample = val[0]
    assert sample["disparity"].dtype == np.float32 and np.allclose(sample["disparity"], 2.5) and sample["valid"].all()
    assert sample["noc"].sum() == SIZE[0] * SIZE[1] // 2 and not sample["noc"][:, 0].any()


def test_kitti_without_noc_folder_has_no_noc_and_missing_gt_is_named(tmp_path):
    _kitti_tree(tmp_path, 2015, range(2), noc=False)
    assert "noc" not in KITTIDataset(tmp_path, split="all")[0]
    (tmp_path / "training/disp_occ_0/000001_10.png").unlink()
    with pytest.raises(DataError, match=r"disp_occ_0/000001_10.png: missing \(kitti2015/000001_10\)"):
        KITTIDataset(tmp_path, split="all")


def test_kitti_bad_arguments_and_empty_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match="image_2: KITTI 2015 left-image folder not found"):
        KITTIDataset(tmp_path)
    (tmp_path / "training/image_2").mkdir(parents=True)
    with pytest.raises(DataError, match=r"KITTI 2015 train\): no stereo pairs found"):
        KITTIDataset(tmp_path)
    with pytest.raises(ValueError, match="year must be 2012 or 2015"):
        KITTIDataset(tmp_path, year=2013)


def _middlebury_scene(folder: Path, size=SIZE) -> None:
    _image(folder / "im0.png", size)
    _image(folder / "im1.png", size)
    gt = np.full(size, 3.25, np.float32)
    gt[0, 0] = np.inf
    write_pfm(folder / "disp0GT.pfm", gt)
    mask = np.full(size, 255, np.uint8)
    mask[1, :] = 128
    write_image(folder / "mask0nocc.png", mask)
    (folder / "calib.txt").write_text("cam0=[10 0 5; 0 10 3; 0 0 1]\ncam1=[10 0 6; 0 10 3; 0 0 1]\ndoffs=1\n"
                                      f"baseline=100\nwidth={size[1]}\nheight={size[0]}\nndisp=16\n")


def test_middeval3_resolution_scenes_inf_and_noc(tmp_path):
    for scene in ("Adirondack", "Jadeplant"):
        _middlebury_scene(tmp_path / "MiddEval3" / "trainingQ" / scene)
    dataset = MiddleburyDataset(tmp_path, resolution="Q")
    assert dataset.names == ["middlebury/Q/Adirondack", "middlebury/Q/Jadeplant"]
    sample = dataset[0]
    assert not sample["valid"][0, 0] and sample["disparity"][0, 0] == 0 and sample["valid"].sum() == SIZE[0] * SIZE[1] - 1
    assert not sample["noc"][1].any() and sample["noc"][2:].all() and not sample["noc"][0, 0]
    assert dataset.calibration(0).ndisp == 16
    assert MiddleburyDataset(tmp_path / "MiddEval3", resolution="q", scenes=["Jadeplant"]).names == ["middlebury/Q/Jadeplant"]
    with pytest.raises(FileNotFoundError, match="no scene\\(s\\) Motorcycle"):
        MiddleburyDataset(tmp_path, resolution="Q", scenes=["Motorcycle"])


def test_middlebury_size_mismatch_and_missing_mask_only_drop_noc(tmp_path):
    scene = tmp_path / "trainingH" / "Piano"
    _middlebury_scene(scene)
    (scene / "mask0nocc.png").unlink()
    assert "noc" not in MiddleburyDataset(tmp_path)[0]
    _image(scene / "im1.png", (6, 9))
    with pytest.raises(DataError, match=r"im1.png: right image is 9x6 but the left image .*im0.png is 10x6"):
        MiddleburyDataset(tmp_path)[0]


def test_eth3d_grey_images_become_three_channels(tmp_path):
    for scene in ("delivery_area_1l", "electro_1l"):
        _image(tmp_path / "two_view_training" / scene / "im0.png", grey=True)
        _image(tmp_path / "two_view_training" / scene / "im1.png", grey=True)
        write_pfm(tmp_path / "two_view_training_gt" / scene / "disp0GT.pfm", np.full(SIZE, 1.5, np.float32))
        write_image(tmp_path / "two_view_training_gt" / scene / "mask0nocc.png", np.full(SIZE, 255, np.uint8))
    dataset = ETH3DDataset(tmp_path)
    sample = dataset[1]
    assert sample["name"] == "eth3d/electro_1l" and sample["left"].shape == (*SIZE, 3)
    assert (sample["left"][..., 0] == sample["left"][..., 2]).all() and sample["noc"].all()
    (tmp_path / "two_view_training_gt/electro_1l/disp0GT.pfm").unlink()
    with pytest.raises(DataError, match=r"electro_1l/disp0GT.pfm: missing"):
        ETH3DDataset(tmp_path)


def test_legacy_middlebury_scales_by_scene_and_size(tmp_path):
    raw = np.full(SIZE, 40, np.uint8)
    raw[0, 0] = 0
    for scene, left, right, gt in (("tsukuba", "scene1.row3.col3.ppm", "scene1.row3.col4.ppm", "truedisp.row3.col3.pgm"),
                                   ("cones", "im2.png", "im6.png", "disp2.png"),
                                   ("Reindeer", "view1.png", "view5.png", "disp1.png")):
        _image(tmp_path / scene / left)
        _image(tmp_path / scene / right)
        write_image(tmp_path / scene / gt, raw)
    dataset = LegacyMiddleburyDataset(tmp_path)
    values = {s["name"]: s["disparity"][1, 1] for s in (dataset[i] for i in range(len(dataset)))}
    assert values == {"middlebury/Reindeer": 20.0, "middlebury/cones": 10.0, "middlebury/tsukuba": 2.5}
    assert not dataset[0]["valid"][0, 0]
    assert LegacyMiddleburyDataset(tmp_path, scenes=["Reindeer"], size="third")[0]["disparity"][1, 1] == pytest.approx(40 / 3)
    (tmp_path / "mystery").mkdir()
    _image(tmp_path / "mystery" / "im2.png")
    _image(tmp_path / "mystery" / "im6.png")
    write_image(tmp_path / "mystery" / "disp2.png", raw)
    with pytest.raises(ValueError, match="mystery: unknown GT scale"):
        LegacyMiddleburyDataset(tmp_path)
    assert LegacyMiddleburyDataset(tmp_path, scenes=["mystery"], scale=5)[0]["disparity"][1, 1] == 8.0


def _tiny_tree_for(config: str, root: Path) -> Path:
    if config.startswith("kitti"):
        return _kitti_tree(root, int(config[-4:]), range(158, 162))
    if config == "middlebury":
        _middlebury_scene(root / "MiddEval3" / "trainingH" / "Adirondack")
    elif config == "eth3d":
        _image(root / "two_view_training" / "lakeside_1l" / "im0.png", grey=True)
        _image(root / "two_view_training" / "lakeside_1l" / "im1.png", grey=True)
        write_pfm(root / "two_view_training_gt" / "lakeside_1l" / "disp0GT.pfm", np.ones(SIZE, np.float32))
    return root


@pytest.mark.parametrize("config", ["kitti2012", "kitti2015", "middlebury", "eth3d"])
def test_hydra_data_configs_build_their_datasets(tmp_path, config):
    import hydra
    from hydra.utils import instantiate

    from stereo.config import CONFIG_DIR

    root = _tiny_tree_for(config, tmp_path)
    with hydra.initialize_config_dir(version_base="1.3", config_dir=CONFIG_DIR):
        cfg = hydra.compose("train", overrides=[f"data={config}"])
    assert cfg.data._target_ == "stereo.data.datamodule.StereoDataModule" and cfg.data.generate is None
    for key in ("train", "val"):
        if cfg.data[key] is None:
            continue
        factory = instantiate(cfg.data[key], root=str(root))
        dataset = factory(transform=None)
        assert len(dataset) > 0 and dataset[0]["left"].shape == (*SIZE, 3)
