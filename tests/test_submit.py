"""stereo.submit on tiny test-layout trees made from the real samples: exact layouts, values, resume."""

from __future__ import annotations

import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from benchmark_trees import eth3d_tree, kitti_tree, middlebury_tree
from conftest import compose

from stereo.data.io import read_disparity, read_image, read_pfm
from stereo.data.pairs import FOLDER_LAYOUTS
from stereo.evaluation.submission import SubmissionError, find_frames, round_up_disparity
from stereo.inference.predictor import Predictor
from stereo.submit import submit


def _run(benchmark: str, checkpoint: Path, data_root: Path, output: Path, *extra: str) -> dict:
    return submit(compose("submit", [f"benchmark={benchmark}", f"ckpt_path={checkpoint}", f"data_root={data_root}",
                                     f"output={output}", "device=cpu", *extra]))


def _files(folder: Path) -> set[str]:
    """The benchmark's files (the manifest beside them records what produced them; it is not uploaded)."""
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()} - {"manifest.json"}


def _reference(checkpoint: Path, left: Path, right: Path, max_disp: int | None = None) -> np.ndarray:
    predictor = Predictor.from_checkpoint(checkpoint, device="cpu", max_disp=max_disp, swap_check=False)
    return predictor.predict(read_image(left), read_image(right)).disparity


@pytest.mark.slow
@pytest.mark.parametrize("year", [2015, 2012])
def test_kitti_submission_is_full_size_png16_of_disparity_x256_every_pixel_filled(year, real_data_dir, calibrated_checkpoint, tmp_path):
    root = kitti_tree(real_data_dir, tmp_path / "kitti", year, frames=[0, 7], side="testing")
    output = tmp_path / "submission"
    summary = _run(f"kitti{year}", calibrated_checkpoint, root, output)
    assert summary["predicted"] == 2
    assert _files(output) == {"disp_0/000000_10.png", "disp_0/000007_10.png", f"kitti{year}_submission.zip"}
    with zipfile.ZipFile(output / f"kitti{year}_submission.zip") as archive:
        assert sorted(archive.namelist()) == ["disp_0/000000_10.png", "disp_0/000007_10.png"]
    layout = FOLDER_LAYOUTS[f"kitti{year}"]
    left = root / "testing" / layout.left / "000000_10.png"
    expected = _reference(calibrated_checkpoint, left, root / "testing" / layout.right / "000000_10.png")
    stored = cv2.imread(str(output / "disp_0" / "000000_10.png"), cv2.IMREAD_UNCHANGED)
    assert stored.dtype == np.uint16 and stored.shape == read_image(left).shape[:2]
    assert stored.min() > 0
    # round(d * 256), except that d < 1/512 is stored as 1: within 1/256 px of the prediction everywhere
    assert np.abs(stored / 256.0 - expected).max() <= 1 / 256
    ours, valid = read_disparity(output / "disp_0" / "000000_10.png")
    assert valid.all() and np.array_equal(ours, (stored / 256.0).astype(np.float32))


def test_middlebury_submission_uses_each_scenes_ndisp_and_writes_pfm_and_time(real_data_dir, calibrated_checkpoint, tmp_path, monkeypatch):
    root = middlebury_tree(real_data_dir, tmp_path / "mb", {"Australia": 40, "Bicycle2": 64}, folder="testH")
    ranges = []
    original = Predictor.predict
    monkeypatch.setattr(Predictor, "predict", lambda self, l, r, names=("left", "right"), max_disp=None: (
        ranges.append(max_disp), original(self, l, r, names, max_disp))[1])
    output = tmp_path / "submission"
    _run("middlebury", calibrated_checkpoint, root, output, "method=TinyNet")
    assert _files(output) == {"Australia/disp0TinyNet.pfm", "Australia/timeTinyNet.txt",
                              "Bicycle2/disp0TinyNet.pfm", "Bicycle2/timeTinyNet.txt"}
    assert ranges == [48, 64]  # ndisp 40 rounded up to the network's step of 16; 64 as is
    scene = root / "MiddEval3" / "testH" / "Australia"
    disparity = read_pfm(output / "Australia" / "disp0TinyNet.pfm")
    assert np.array_equal(disparity, _reference(calibrated_checkpoint, scene / "im0.png", scene / "im1.png", max_disp=48))
    assert float((output / "Australia" / "timeTinyNet.txt").read_text()) > 0


@pytest.mark.slow
def test_eth3d_submission_layout_runtime_files_zip_and_resume(real_data_dir, calibrated_checkpoint, tmp_path):
    root = eth3d_tree(real_data_dir, tmp_path / "eth3d", ["lakeside_1l", "sandbox_1l"], side="test")
    output = tmp_path / "submission"
    _run("eth3d", calibrated_checkpoint, root, output)
    names = {"low_res_two_view/lakeside_1l.pfm", "low_res_two_view/lakeside_1l.txt",
             "low_res_two_view/sandbox_1l.pfm", "low_res_two_view/sandbox_1l.txt"}
    assert _files(output) == names | {"eth3d_submission.zip"}
    with zipfile.ZipFile(output / "eth3d_submission.zip") as archive:
        assert set(archive.namelist()) == names
    keyword, seconds = (output / "low_res_two_view" / "sandbox_1l.txt").read_text().split()
    assert keyword == "runtime" and float(seconds) > 0
    assert read_pfm(output / "low_res_two_view" / "sandbox_1l.pfm").shape == read_image(root / "two_view_test" / "sandbox_1l" / "im0.png").shape[:2]

    kept = (output / "low_res_two_view" / "lakeside_1l.pfm").stat().st_mtime_ns
    (output / "low_res_two_view" / "sandbox_1l.txt").unlink()  # as if interrupted between its two files
    summary = _run("eth3d", calibrated_checkpoint, root, output)
    assert (summary["predicted"], summary["skipped"]) == (1, 1)
    assert (output / "low_res_two_view" / "lakeside_1l.pfm").stat().st_mtime_ns == kept
    assert _files(output) == names | {"eth3d_submission.zip"}


def test_wrong_layouts_and_options_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        find_frames("kitti2015", tmp_path / "nowhere")
    (tmp_path / "testing" / "image_2").mkdir(parents=True)
    with pytest.raises(SubmissionError, match="image_3"):
        find_frames("kitti2015", tmp_path)
    with pytest.raises(SubmissionError, match="benchmark must be one of"):
        find_frames("sintel", tmp_path)
    with pytest.raises(SubmissionError, match="resolution must be F, H or Q"):
        find_frames("middlebury", tmp_path, resolution="X")
    assert [round_up_disparity(n) for n in (1, 16, 17, 290)] == [16, 16, 32, 304]
