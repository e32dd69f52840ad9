"""``python -m stereo.infer``: every input kind, output files, public-checkpoint inference, bad inputs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import hydra
import numpy as np
import pytest

from inference_checkpoints import write_authors_checkpoint, write_our_checkpoint
from stereo.config import CONFIG_DIR
from stereo.data.io import DataError, read_pfm
from stereo.infer import run
from stereo.inference.inputs import PairError, pairs_from_folder
from stereo.inference.predictor import InputError


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_our_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.ckpt")


def write_pair(left_path, right_path, height=75, width=131, seed=0):
    rng = np.random.default_rng(seed)
    left = cv2.GaussianBlur(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), (3, 3), 0)
    for path, image in ((left_path, left), (right_path, np.roll(left, -4, axis=1))):
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), image)


def compose(checkpoint, output_dir, *overrides):
    with hydra.initialize_config_dir(version_base="1.3", config_dir=CONFIG_DIR):
        return hydra.compose("infer", overrides=[f"ckpt_path={checkpoint}", f"output_dir={output_dir}", *overrides])


@pytest.mark.slow  # 2-2.5 s on 2 cores (the quick tier's budget is 2 minutes)
def test_cli_on_two_files_of_odd_size_writes_every_format(tmp_path, checkpoint):
    write_pair(tmp_path / "in" / "a_left.png", tmp_path / "in" / "a_right.png")
    out = tmp_path / "out"
    command = [sys.executable, "-m", "stereo.infer", f"ckpt_path={checkpoint}",
               f"left={tmp_path / 'in' / 'a_left.png'}", f"right={tmp_path / 'in' / 'a_right.png'}",
               f"output_dir={out}", "formats=[pfm,png16,npy,color,depth,ply,confidence]",
               "focal=100.0", "baseline=0.5", "swap_check=false"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    expected = ["a_left_disp.pfm", "a_left_disp.png", "a_left_disp.npy", "a_left_disp_color.png",
                "a_left_depth.pfm", "a_left.ply", "a_left_conf.png"]
    assert sorted(p.name for p in out.iterdir() if p.is_file()) == sorted([*expected, "manifest.json"])
    assert sorted(json.loads((out / "manifest.json").read_text())["files"]) == sorted(expected)
    disparity = read_pfm(out / "a_left_disp.pfm")
    assert disparity.shape == (75, 131), "odd-sized input comes back at its own size"
    np.testing.assert_array_equal(np.load(out / "a_left_disp.npy"), disparity)
    depth = read_pfm(out / "a_left_depth.pfm")
    positive = disparity > 0
    np.testing.assert_allclose(depth[positive], 100.0 * 0.5 / disparity[positive], rtol=1e-5)
    assert "1 pair(s)" in done.stdout and "ply" in done.stdout


@pytest.mark.parametrize("batch_size", [1, 2])  # 3 pairs: one per call, and a full + a partial batch
def test_globs_are_paired_in_sorted_order_and_batched(tmp_path, checkpoint, batch_size):
    for index in (2, 1, 0):
        write_pair(tmp_path / "cam0" / f"f{index}.png", tmp_path / "cam1" / f"f{index}.png", 64, 96, seed=index)
    cfg = compose(checkpoint, tmp_path / "out", f"left={tmp_path}/cam0/*.png", f"right={tmp_path}/cam1/*.png",
                  "formats=[npy]", f"batch_size={batch_size}", "swap_check=false")
    written = run(cfg)
    assert [p.split("/")[-1] for p in written["npy"]] == ["f0_disp.npy", "f1_disp.npy", "f2_disp.npy"]
    maps = [np.load(p) for p in written["npy"]]
    assert all(m.shape == (64, 96) for m in maps)
    assert not np.array_equal(maps[0], maps[1]) and not np.array_equal(maps[1], maps[2])  # each pair its own map
    (tmp_path / "cam1" / "f1.png").unlink()
    with pytest.raises(PairError, match="matches 3 files but right"):
        run(cfg)


def test_scene_folders_with_calib_give_depth_and_point_cloud(tmp_path, checkpoint):
    scene = tmp_path / "data" / "Piano"
    write_pair(scene / "im0.png", scene / "im1.png", 64, 96)
    (scene / "calib.txt").write_text(
        "cam0=[120 0 47.5; 0 120 31.5; 0 0 1]\ncam1=[120 0 57.5; 0 120 31.5; 0 0 1]\n"
        "doffs=10\nbaseline=200\nwidth=96\nheight=64\nndisp=32\n"
    )
    written = run(compose(checkpoint, tmp_path / "out", f"input_dir={tmp_path / 'data'}",
                          "formats=[pfm,depth,ply]", "swap_check=false"))
    disparity = read_pfm(written["pfm"][0])
    depth = read_pfm(written["depth"][0])
    assert written["ply"][0].endswith("Piano.ply")
    np.testing.assert_allclose(depth[disparity > 0], 120 * 200 / (disparity[disparity > 0] + 10), rtol=1e-5)


@pytest.mark.parametrize("layout", [("left", "right"), ("image_2", "image_3"), ("colored_0", "colored_1")])
def test_folder_layouts_pair_files_by_name(tmp_path, layout):
    for name in ("000001_10.png", "000000_10.png"):
        for side in layout:
            (tmp_path / side).mkdir(exist_ok=True)
            (tmp_path / side / name).write_bytes(b"x")
    pairs = pairs_from_folder(tmp_path)
    assert [(Path(p.left).parent.name, Path(p.right).parent.name, p.name) for p in pairs] == [
        (layout[0], layout[1], "000000_10"), (layout[0], layout[1], "000001_10")]
    (tmp_path / layout[1] / "000001_10.png").unlink()
    with pytest.raises(PairError, match="no right image"):
        pairs_from_folder(tmp_path)


def test_list_file_with_authors_checkpoint(tmp_path):
    authors = write_authors_checkpoint(tmp_path / "pretrained_sceneflow.tar")
    write_pair(tmp_path / "imgs" / "L.png", tmp_path / "imgs" / "R.png", 64, 96)
    (tmp_path / "pairs.txt").write_text("# left right\nimgs/L.png imgs/R.png\n")
    written = run(compose(authors, tmp_path / "out", f"list_file={tmp_path / 'pairs.txt'}",
                          "formats=[pfm]", "max_disp=32", "swap_check=false"))
    disparity = read_pfm(written["pfm"][0])
    assert disparity.shape == (64, 96) and np.isfinite(disparity).all() and disparity.max() <= 32


@pytest.mark.parametrize("case", ["missing file", "corrupt image", "size mismatch", "too small"])
def test_bad_inputs_fail_with_the_file_named(tmp_path, checkpoint, case):
    left, right = tmp_path / "l.png", tmp_path / "r.png"
    write_pair(left, right, 64, 96)
    expected = {"missing file": (PairError, "not found"), "corrupt image": (DataError, "truncated|decode"),
                "size mismatch": (InputError, "equal sizes"), "too small": (InputError, "too small")}[case]
    if case == "missing file":
        right.unlink()
    elif case == "corrupt image":
        right.write_bytes(right.read_bytes()[:100])
    elif case == "size mismatch":
        cv2.imwrite(str(right), np.zeros((64, 80, 3), np.uint8))
    else:
        write_pair(left, right, 20, 96)
    cfg = compose(checkpoint, tmp_path / "out", f"left={left}", f"right={right}", "formats=[pfm]")
    with pytest.raises(expected[0], match=expected[1]) as error:
        run(cfg)
    assert str(left if case in ("too small", "size mismatch") else right) in str(error.value)
    assert not (tmp_path / "out" / "l_disp.pfm").exists()


def test_missing_checkpoint_and_missing_calibration_are_reported(tmp_path, checkpoint):
    write_pair(tmp_path / "l.png", tmp_path / "r.png", 64, 96)
    with pytest.raises(FileNotFoundError, match="nope.ckpt"):
        run(compose(tmp_path / "nope.ckpt", tmp_path / "out", f"left={tmp_path}/l.png", f"right={tmp_path}/r.png"))
    with pytest.raises(ValueError, match="calibration"):
        run(compose(checkpoint, tmp_path / "out", f"left={tmp_path}/l.png", f"right={tmp_path}/r.png", "formats=[ply]"))
    with pytest.raises(PairError, match="exactly one input"):
        run(compose(checkpoint, tmp_path / "out"))


@pytest.mark.slow
def test_an_interrupted_run_lists_its_partial_files_and_overwrite_removes_them(tmp_path, checkpoint, monkeypatch):
    """The manifest names each file before it is written, so a run stopped mid-file (here: interrupted
    while writing the second pair's PFM) leaves a manifest from which overwrite=true removes everything."""
    from stereo.inference.outputs import OutputWriter

    for index in (0, 1):
        write_pair(tmp_path / "cam0" / f"f{index}.png", tmp_path / "cam1" / f"f{index}.png", 64, 96, seed=index)
    cfg = compose(checkpoint, tmp_path / "out", f"left={tmp_path}/cam0/*.png", f"right={tmp_path}/cam1/*.png",
                  "formats=[pfm]", "swap_check=false")
    write_pfm = OutputWriter._write_pfm

    def interrupted_on_second_pair(self, path, *args):
        if "f1" in path.name:
            path.write_bytes(b"half a file")
            raise KeyboardInterrupt
        return write_pfm(self, path, *args)

    monkeypatch.setattr(OutputWriter, "_write_pfm", interrupted_on_second_pair)
    with pytest.raises(KeyboardInterrupt):
        run(cfg)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["status"] == "failed" and manifest["files"] == ["f0_disp.pfm", "f1_disp.pfm"]
    monkeypatch.setattr(OutputWriter, "_write_pfm", write_pfm)
    (tmp_path / "cam0" / "f1.png").unlink()
    (tmp_path / "cam1" / "f1.png").unlink()
    run(compose(checkpoint, tmp_path / "out", f"left={tmp_path}/cam0/*.png", f"right={tmp_path}/cam1/*.png",
                "formats=[pfm]", "swap_check=false", "overwrite=true"))
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["f0_disp.pfm", "manifest.json"]
