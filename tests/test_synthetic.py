"""The synthetic generator: deterministic, geometrically exact, readable by the project's readers."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from conftest import compose

from stereo.data import io
from stereo.data.io import read_disparity, read_image
from stereo.data.synthetic import MARKER_NAME, SceneStyle, ensure_generated, generate, run, sample_paths

SIZE = {"height": 64, "width": 128, "max_disp": 32.0}
CLEAN = SceneStyle(noise_std=0.0, blur_probability=0.0, texture_kinds=("noise", "blobs"))
# every knob of the transfer style (experiment=ea_census_cpu) on; procedural textures (no package needed)
TRANSFER = SceneStyle(thin_probability=0.3, near_surface_probability=1.0, scene_range=(0.2, 1.0),
                      disparity_exponent=0.6, min_object_size=0.04, max_object_size=0.5)


def _tree_bytes(root) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted((root / "FlyingThings3D").rglob("*")) if p.is_file()}


def _load(root, split, index):
    paths = sample_paths(root, split, index)
    left, right = read_image(paths["left"]), read_image(paths["right"])
    disp_left, valid_left = read_disparity(paths["disparity_left"])
    disp_right, valid_right = read_disparity(paths["disparity_right"])
    return left, right, disp_left, valid_left, disp_right, valid_right


def _warp_right_to_left(right: np.ndarray, disp_left: np.ndarray) -> np.ndarray:
    h, w = disp_left.shape
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return cv2.remap(right.astype(np.float32), xs - disp_left, ys, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def _non_occluded(disp_left: np.ndarray, disp_right: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Left-right consistency: the right GT at x - d agrees with d. Also returns the sampled right GT."""
    h, w = disp_left.shape
    xs = np.arange(w, dtype=np.float32)[None, :].repeat(h, 0)
    target = np.rint(xs - disp_left).astype(int)
    inside = (target >= 0) & (target < w)
    sampled = np.take_along_axis(disp_right, np.clip(target, 0, w - 1), axis=1)
    return inside & (np.abs(sampled - disp_left) < 0.5), np.where(inside, sampled, np.nan)


def test_same_seed_gives_identical_bytes_for_any_worker_count_and_subset(tmp_path):
    generate(tmp_path / "a", num_train=3, num_test=1, seed=5, progress=False, workers=2, **SIZE)
    generate(tmp_path / "b", num_train=3, num_test=1, seed=5, progress=False, workers=1, **SIZE)
    generate(tmp_path / "subset", num_train=2, num_test=0, seed=5, progress=False, workers=1, **SIZE)
    a, b, subset = _tree_bytes(tmp_path / "a"), _tree_bytes(tmp_path / "b"), _tree_bytes(tmp_path / "subset")
    assert len(a) == 4 * 4 and a == b
    assert subset and all(a[name] == data for name, data in subset.items())


def test_different_seed_gives_different_scenes(tmp_path):
    generate(tmp_path / "a", num_train=1, num_test=0, seed=1, progress=False, **SIZE)
    generate(tmp_path / "b", num_train=1, num_test=0, seed=2, progress=False, **SIZE)
    left_a = read_image(sample_paths(tmp_path / "a", "train", 0)["left"])
    left_b = read_image(sample_paths(tmp_path / "b", "train", 0)["left"])
    assert np.abs(left_a.astype(int) - left_b.astype(int)).mean() > 5


def test_files_follow_flyingthings3d_layout_and_are_readable(tmp_path):
    generate(tmp_path, num_train=11, num_test=1, seed=0, progress=False, **SIZE)
    base = tmp_path / "FlyingThings3D"
    assert (base / "frames_cleanpass/TRAIN/A/0000/left/0006.png").is_file()
    assert (base / "frames_cleanpass/TRAIN/A/0000/right/0015.png").is_file()
    assert (base / "frames_cleanpass/TRAIN/A/0001/left/0006.png").is_file()  # the 11th pair starts sequence 1
    assert (base / "disparity/TEST/A/0000/right/0006.pfm").is_file()
    left, right, disp_left, valid_left, disp_right, valid_right = _load(tmp_path, "train", 10)
    assert left.shape == right.shape == (64, 128, 3) and left.dtype == np.uint8
    assert disp_left.shape == disp_right.shape == (64, 128)
    assert valid_left.all() and valid_right.all()
    for disp in (disp_left, disp_right):
        assert 0 < disp.min() and disp.max() < SIZE["max_disp"]
    assert disp_left.max() - disp_left.min() > 5  # objects at several depths, not one plane


@pytest.mark.parametrize("style", [CLEAN, SceneStyle(), TRANSFER], ids=["noise-free", "default-with-camera-noise",
                                                                      "transfer-style"])
def test_right_view_warped_by_left_gt_matches_left_on_non_occluded_pixels(tmp_path, style):
    generate(tmp_path, num_train=3, num_test=0, seed=3, style=style, progress=False, **SIZE)
    for index in range(3):
        left, right, disp_left, _, disp_right, _ = _load(tmp_path, "train", index)
        noc, _ = _non_occluded(disp_left, disp_right)
        assert noc.mean() > 0.6
        error = np.abs(_warp_right_to_left(right, disp_left) - left).mean(-1)[noc]
        error_zero = np.abs(right.astype(np.float32) - left).mean(-1)[noc]  # d = 0: no geometry
        assert error.mean() < 0.3 * error_zero.mean()
        # Pixels next to layer boundaries carry bilinear mixing; the typical pixel must match closely.
        assert np.median(error) < (0.5 if style is CLEAN else 2.0)
        if style is CLEAN:  # only resampling and 8-bit rounding remain: a 1-pixel-off GT is clearly worse
            error_shifted = np.abs(_warp_right_to_left(right, disp_left + 1.0) - left).mean(-1)[noc]
            assert np.median(error_shifted) > 3 * np.median(error)


def test_left_right_ground_truth_disagree_only_where_a_closer_surface_occludes(tmp_path):
    generate(tmp_path, num_train=3, num_test=0, seed=4, style=CLEAN, progress=False, **SIZE)
    for index in range(3):
        _, _, disp_left, _, disp_right, _ = _load(tmp_path, "train", index)
        noc, sampled = _non_occluded(disp_left, disp_right)
        inside = np.isfinite(sampled)
        occluded = inside & ~noc
        assert occluded.any()  # scenes have occlusions
        # An occluder is nearer (larger disparity); a farther surface can never hide a point.
        farther = occluded & (sampled < disp_left - 1.0)
        assert farther.sum() <= 0.01 * inside.sum()


def test_ensure_generated_skips_complete_trees_and_redoes_interrupted_or_changed_ones(tmp_path, monkeypatch):
    params = dict(num_train=2, num_test=1, seed=0, progress=False, workers=1, **SIZE)  # in-process: patchable
    marker = tmp_path / MARKER_NAME
    calls = []

    def write_then_die(path, array):
        calls.append(path)
        if len(calls) == 3:
            raise KeyboardInterrupt  # the user pressed Ctrl-C half-way
        real_write_pfm(path, array)

    real_write_pfm = io.write_pfm
    monkeypatch.setattr(io, "write_pfm", write_then_die)
    with pytest.raises(KeyboardInterrupt):
        ensure_generated(tmp_path, **params)
    monkeypatch.setattr(io, "write_pfm", real_write_pfm)
    assert not marker.exists() and sample_paths(tmp_path, "train", 0)["left"].is_file()

    assert ensure_generated(tmp_path, **params) is True
    assert json.loads(marker.read_text())["num_train"] == 2
    left = sample_paths(tmp_path, "train", 0)["left"]
    stamp = left.stat().st_mtime_ns
    assert ensure_generated(tmp_path, **params) is False
    assert left.stat().st_mtime_ns == stamp

    sample_paths(tmp_path, "test", 0)["disparity_right"].unlink()  # a file lost after completion
    assert ensure_generated(tmp_path, **params) is True
    assert sample_paths(tmp_path, "test", 0)["disparity_right"].is_file()

    assert ensure_generated(tmp_path, **(params | {"num_train": 1, "width": 96})) is True
    assert read_image(sample_paths(tmp_path, "train", 0)["left"]).shape == (64, 96, 3)
    assert not sample_paths(tmp_path, "train", 1)["left"].exists()  # the old, larger tree is gone


def test_ensure_generated_refuses_to_overwrite_a_tree_it_did_not_make(tmp_path):
    (tmp_path / "FlyingThings3D" / "frames_cleanpass").mkdir(parents=True)
    with pytest.raises(FileExistsError, match="not made by stereo.data.synthetic"):
        ensure_generated(tmp_path, num_train=1, num_test=1, seed=0, progress=False, **SIZE)


def test_bad_parameters_are_rejected_with_the_reason():
    with pytest.raises(ValueError, match="max_disp"):
        generate("unused", num_train=1, num_test=0, height=64, width=128, max_disp=200)
    with pytest.raises(ValueError, match="positive number of samples"):
        generate("unused", num_train=0, num_test=0, **SIZE)


def test_command_generates_the_tree_and_defaults_to_the_training_data_config(tmp_path, capsys):
    cfg = compose("synthetic", [f"root={tmp_path}", "num_train=1", "num_test=1", "height=48", "width=96", "max_disp=24", "seed=3"])
    assert run(cfg) is True and "generated" in capsys.readouterr().out
    assert read_image(sample_paths(tmp_path, "test", 0)["right"]).shape == (48, 96, 3)
    assert run(cfg) is False  # complete with the same parameters: nothing to do
    defaults = compose("synthetic", ["paths.data_dir=DATA"])
    assert {key: defaults[key] for key in defaults.data.generate} == dict(defaults.data.generate)


def test_natural_image_textures_come_from_a_folder(tmp_path):
    photos = tmp_path / "photos"
    io.write_image(photos / "a.png", np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8))
    generate(tmp_path / "tree", num_train=1, num_test=0, seed=0, progress=False,
             style=SceneStyle(texture_dir=str(photos)), **SIZE)
    assert read_image(sample_paths(tmp_path / "tree", "train", 0)["left"]).shape == (64, 128, 3)
    with pytest.raises(FileNotFoundError, match="no images"):
        generate(tmp_path / "none", num_train=1, num_test=0, progress=False,
                 style=SceneStyle(texture_dir=str(tmp_path / "tree" / "missing")), **SIZE)
    assert not (tmp_path / "none").exists()


def test_style_is_a_config_recorded_in_the_marker_and_a_changed_style_regenerates_keeping_other_files(tmp_path, capsys):
    base = [f"root={tmp_path}", "num_train=2", "num_test=0", "height=48", "width=96", "max_disp=24", "seed=3"]
    assert run(compose("synthetic", base + ["style={thin_probability: 0.5}"])) is True
    marker = json.loads((tmp_path / MARKER_NAME).read_text())
    assert marker["style"]["thin_probability"] == 0.5 and marker["style"]["near_surface_probability"] == 0.0
    first = read_image(sample_paths(tmp_path, "train", 0)["left"])
    notes = tmp_path / "FlyingThings3D" / "frames_cleanpass" / "TRAIN" / "my_notes.txt"
    notes.write_text("not the generator's")
    capsys.readouterr()
    assert run(compose("synthetic", base + ["style={thin_probability: 0.5}"])) is False  # same style: nothing to do
    assert run(compose("synthetic", base + ["style={near_surface_probability: 1.0}"])) is True
    assert "kept 1 file(s) the generator did not write: frames_cleanpass/TRAIN/my_notes.txt" in capsys.readouterr().out
    assert notes.read_text() == "not the generator's"
    assert not np.array_equal(read_image(sample_paths(tmp_path, "train", 0)["left"]), first)


def test_unknown_or_invalid_style_settings_are_named():
    with pytest.raises(ValueError, match=r"unknown keys \['thin'\]"):
        SceneStyle.from_dict({"thin": 0.1})
    with pytest.raises(ValueError, match="invalid scene_range"):
        SceneStyle.from_dict({"scene_range": [0.5, 0.2]})
    with pytest.raises(ValueError, match="invalid near_surface_probability"):
        SceneStyle(near_surface_probability=2.0)
