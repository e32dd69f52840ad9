"""Scene Flow indexing: standard counts on the full published shape (both layouts), list files,
right-view GT, loading, and the bad-input cases (missing right image/GT, empty folders, size mismatch)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from sceneflow_fakes import build_tree, expected_counts, full_sequences, install_virtual_tree, small_sequences
from stereo.data import sceneflow
from stereo.data.io import DataError, write_image, write_pfm
from stereo.data.sceneflow import PUBLISHED_COUNTS, SceneFlowDataset, index_sceneflow, sample_name_from_path

VIRTUAL_ROOT = Path("/virtual/sceneflow")


@pytest.mark.parametrize("layout", ["separate", "merged"])
@pytest.mark.parametrize("split", ["train", "test"])
def test_full_published_shape_gives_the_standard_counts(monkeypatch, layout, split):
    install_virtual_tree(monkeypatch, VIRTUAL_ROOT, full_sequences(), layout)
    dataset = SceneFlowDataset(VIRTUAL_ROOT, split=split, files="standard")
    assert dataset.describe() == PUBLISHED_COUNTS[split]
    assert len(dataset) == {"train": 35454, "test": 4370}[split]
    everything = index_sceneflow(VIRTUAL_ROOT, split, files="all")
    assert len(everything.records) == {"train": 35564, "test": 4500}[split]  # plain glob sees 11/13 more sequences


def test_full_shape_sample_names_and_paths(monkeypatch):
    install_virtual_tree(monkeypatch, VIRTUAL_ROOT, full_sequences(), "separate")
    records = SceneFlowDataset(VIRTUAL_ROOT, split="test").records
    first = records[0]
    assert first.name == "flyingthings3d/TEST/A/0000/0006"
    assert first.left == str(VIRTUAL_ROOT / "FlyingThings3D/frames_cleanpass/TEST/A/0000/left/0006.png")
    assert first.right == str(VIRTUAL_ROOT / "FlyingThings3D/frames_cleanpass/TEST/A/0000/right/0006.png")
    assert first.disparity == str(VIRTUAL_ROOT / "FlyingThings3D/disparity/TEST/A/0000/left/0006.pfm")
    names = {r.name for r in records}
    assert "flyingthings3d/TEST/A/0004/0006" not in names and "flyingthings3d/TEST/A/0005/0006" in names


@pytest.mark.parametrize("layout", ["separate", "merged"])
def test_small_real_tree_both_layouts_with_excluded_sequences(tmp_path, layout):
    sequences = small_sequences()
    build_tree(tmp_path, sequences, layout)
    for split in ("train", "test"):
        for files in ("standard", "all"):
            assert SceneFlowDataset(tmp_path, split=split, files=files).describe() == expected_counts(sequences, split, files)
    names = SceneFlowDataset(tmp_path, split="train").names
    assert "driving/15mm_focallength/scene_backwards/fast/0001" in names
    assert "monkaa/eating_x2/0000" in names
    assert "flyingthings3d/TRAIN/A/0018/0006" not in names  # excluded
    assert "flyingthings3d/TRAIN/A/0018/0006" in SceneFlowDataset(tmp_path, split="train", files="all").names


def test_download_folder_names_are_accepted(tmp_path):
    sequences = small_sequences()
    build_tree(tmp_path / "sep", sequences, "separate")
    root = tmp_path / "downloads"
    for subset, folder in (("flyingthings3d", "FlyingThings3D"), ("driving", "Driving"), ("monkaa", "Monkaa")):
        # archives extracted into folders named after them: <subset>__frames_cleanpass/frames_cleanpass/...
        shutil.move(tmp_path / "sep" / folder / "frames_cleanpass", root / f"{subset}__frames_cleanpass" / "frames_cleanpass")
        shutil.move(tmp_path / "sep" / folder / "disparity", root / f"{subset}__disparity" / "disparity")
    assert SceneFlowDataset(root, split="train").describe() == expected_counts(sequences, "train")


def test_subsets_and_passes_select(tmp_path):
    sequences = small_sequences()
    build_tree(tmp_path, sequences, "separate")
    only_ft3d = SceneFlowDataset(tmp_path, split="train", subsets=["flyingthings3d"])
    assert set(only_ft3d.describe()) == {"flyingthings3d"}
    with pytest.raises(DataError, match="no flyingthings3d finalpass frames found"):
        SceneFlowDataset(tmp_path, split="train", passes="final")
    with pytest.raises(ValueError, match="passes must be one of clean, final"):
        SceneFlowDataset(tmp_path, passes="dirty")


def test_list_file_accepts_paths_in_any_layout_and_sample_names(tmp_path):
    build_tree(tmp_path, small_sequences(), "separate")
    list_file = tmp_path / "list.txt"
    list_file.write_text(
        "# comment\n"
        "flyingthings3d/frames_finalpass/TEST/A/0001/left/0007.png flyingthings3d/.../right/0007.png x.pfm\n"
        "frames_cleanpass/TRAIN/35mm_focallength/scene_forwards/slow/left/0002.png\n"
        "monkaa/eating_x2/0001\n\n"
    )
    dataset = SceneFlowDataset(tmp_path, split="train", files=str(list_file))
    assert dataset.names == ["flyingthings3d/TEST/A/0001/0007", "driving/35mm_focallength/scene_forwards/slow/0002",
                             "monkaa/eating_x2/0001"]
    list_file.write_text("flyingthings3d/TEST/A/0001/left/0099.png\n")
    with pytest.raises(DataError, match=r"list.txt:1: flyingthings3d/TEST/A/0001/0099 is not on disk"):
        SceneFlowDataset(tmp_path, files=str(list_file))
    list_file.write_text("what/is/this\n")
    with pytest.raises(DataError, match=r"list.txt:1: cannot tell which Scene Flow frame"):
        SceneFlowDataset(tmp_path, files=str(list_file))


def test_sample_name_from_path():
    assert sample_name_from_path("FlyingThings3D/frames_finalpass/TRAIN/B/0749/left/0015.webp") == "flyingthings3d/TRAIN/B/0749/0015"
    assert sample_name_from_path("x/Monkaa/frames_cleanpass/family_x2/left/0100.png") == "monkaa/family_x2/0100"
    assert sample_name_from_path("left.png") is None


def _one_real_sequence(root: Path, frames=("0006", "0007"), size=(8, 12)) -> Path:
    sequences = {"flyingthings3d": [(("TEST", "A", "0000"), list(frames))], "driving": [], "monkaa": []}
    return build_tree(root, sequences, "separate", right_disparity=True, content=size)


def test_loading_a_sample_follows_the_raw_sample_contract(tmp_path):
    _one_real_sequence(tmp_path)
    gt = np.arange(96, dtype=np.float32).reshape(8, 12) / 8
    write_pfm(tmp_path / "FlyingThings3D/disparity/TEST/A/0000/right/0006.pfm", gt + 1)
    dataset = SceneFlowDataset(tmp_path, split="test", subsets=["flyingthings3d"], right_disparity=True,
                               transform=lambda sample: {**sample, "seen": True})
    sample = dataset[0]
    assert sample["seen"] and sample["name"] == "flyingthings3d/TEST/A/0000/0006"
    assert sample["left"].shape == sample["right"].shape == (8, 12, 3) and sample["left"].dtype == np.uint8
    assert sample["disparity"].dtype == np.float32 and sample["valid"].dtype == bool and sample["valid"].all()
    np.testing.assert_array_equal(sample["disparity_right"], gt + 1)
    assert sample["valid_right"].shape == (8, 12)


def test_missing_right_image_and_gt_are_named_at_index_time(tmp_path):
    _one_real_sequence(tmp_path)
    sequence = tmp_path / "FlyingThings3D"
    (sequence / "frames_cleanpass/TEST/A/0000/right/0006.png").unlink()
    (sequence / "disparity/TEST/A/0000/left/0007.pfm").unlink()
    with pytest.raises(DataError) as error:
        SceneFlowDataset(tmp_path, split="test", subsets=["flyingthings3d"])
    message = str(error.value)
    assert "frames_cleanpass/TEST/A/0000/right/0006.png: missing right image" in message
    assert "disparity/TEST/A/0000/left/0007.pfm: missing left disparity" in message


def test_empty_folders_are_reported(tmp_path):
    with pytest.raises(DataError, match="Scene Flow root folder does not exist"):
        SceneFlowDataset(tmp_path / "nothing", subsets=["flyingthings3d"])
    (tmp_path / "FlyingThings3D/frames_cleanpass/TEST/A/0000/left").mkdir(parents=True)
    (tmp_path / "FlyingThings3D/disparity").mkdir(parents=True)
    with pytest.raises(DataError, match="TEST/A/0000/left: no PNG/WebP images"):
        SceneFlowDataset(tmp_path, split="test", subsets=["flyingthings3d"])
    (tmp_path / "FlyingThings3D/frames_cleanpass/TEST/A/0000/left").rmdir()
    with pytest.raises(DataError, match="TEST/A/0000/left: missing folder"):
        SceneFlowDataset(tmp_path, split="test", subsets=["flyingthings3d"])
    (tmp_path / "FlyingThings3D/frames_cleanpass/TEST/A/0000").rmdir()
    with pytest.raises(DataError, match="no stereo pairs found"):
        SceneFlowDataset(tmp_path, split="test", subsets=["flyingthings3d"])


def test_missing_disparity_folder_is_reported_once(tmp_path):
    _one_real_sequence(tmp_path)
    shutil.rmtree(tmp_path / "FlyingThings3D/disparity")
    index = index_sceneflow(tmp_path, "test", subsets=["flyingthings3d"])
    assert index.problems == [f"{tmp_path / 'FlyingThings3D/disparity'}: missing flyingthings3d disparity folder"]


def test_left_right_and_gt_size_mismatch_names_the_files(tmp_path):
    _one_real_sequence(tmp_path)
    dataset = SceneFlowDataset(tmp_path, split="test", subsets=["flyingthings3d"])
    write_image(tmp_path / "FlyingThings3D/frames_cleanpass/TEST/A/0000/right/0006.png", np.zeros((8, 10, 3), np.uint8))
    with pytest.raises(DataError, match=r"right/0006.png: right image is 10x8 but the left image .*left/0006.png is 12x8"):
        dataset[0]
    write_pfm(tmp_path / "FlyingThings3D/disparity/TEST/A/0000/left/0007.pfm", np.zeros((4, 12), np.float32))
    with pytest.raises(DataError, match=r"left/0007.pfm: is 12x4 but the left image .*left/0007.png is 12x8"):
        dataset[1]


def test_corrupt_files_are_named_at_load_time(tmp_path):
    _one_real_sequence(tmp_path)
    dataset = SceneFlowDataset(tmp_path, split="test", subsets=["flyingthings3d"])
    gt = tmp_path / "FlyingThings3D/disparity/TEST/A/0000/left/0006.pfm"
    gt.write_bytes(gt.read_bytes()[:-8])
    with pytest.raises(DataError, match="left/0006.pfm: PFM header says 12x8x1"):
        dataset[0]


def test_indexing_never_opens_files(tmp_path, monkeypatch):
    build_tree(tmp_path, small_sequences(), "merged")

    def forbidden(*args, **kwargs):
        raise AssertionError("indexing opened a file")

    monkeypatch.setattr("builtins.open", forbidden)
    monkeypatch.setattr(Path, "read_bytes", forbidden)
    assert len(SceneFlowDataset(tmp_path, split="train")) > 0
    assert sceneflow.locate_subset(tmp_path, "monkaa", "clean").layout == "merged"


def test_hydra_sceneflow_config_builds_the_standard_split(tmp_path):
    import hydra
    from hydra.utils import instantiate

    from stereo.config import CONFIG_DIR

    sequences = small_sequences()
    build_tree(tmp_path, sequences, "merged", pass_="final")
    with hydra.initialize_config_dir(version_base="1.3", config_dir=CONFIG_DIR):
        cfg = hydra.compose("train", overrides=["data=sceneflow", f"paths.data_dir={tmp_path}"])
    assert cfg.data.train.passes == "final" and cfg.data.train.files == "standard"
    train = instantiate(cfg.data.train, root=str(tmp_path))(transform=None)
    val = instantiate(cfg.data.val, root=str(tmp_path))(transform=None)
    assert train.describe() == expected_counts(sequences, "train")
    assert val.describe() == expected_counts(sequences, "test")


def test_webp_frames_folder_is_accepted(tmp_path):
    sequences = {"flyingthings3d": [(("TEST", "B", "0003"), ["0006"])], "driving": [], "monkaa": []}
    build_tree(tmp_path, sequences, "separate")
    ft3d = tmp_path / "FlyingThings3D"
    (ft3d / "frames_cleanpass").rename(ft3d / "frames_cleanpass_webp")
    for side in ("left", "right"):
        (ft3d / f"frames_cleanpass_webp/TEST/B/0003/{side}/0006.png").rename(ft3d / f"frames_cleanpass_webp/TEST/B/0003/{side}/0006.webp")
    records = SceneFlowDataset(tmp_path, split="test", subsets=["flyingthings3d"]).records
    assert [r.name for r in records] == ["flyingthings3d/TEST/B/0003/0006"] and records[0].right.endswith("right/0006.webp")
