"""stereo.submit: one upload never holds frames of two producers; bad layouts and calibrations are named."""

from __future__ import annotations

import shutil

import pytest

from bad_input.conftest import snapshot

CALIB = "cam0=[500 0 48; 0 500 32; 0 0 1]\ncam1=[500 0 48; 0 500 32; 0 0 1]\ndoffs=0\nbaseline=100\nwidth=96\nheight=64\nndisp={ndisp}\n"


@pytest.fixture
def kitti(workspace):
    """A KITTI 2015 testing tree with one frame (the workspace pair)."""
    for side, image in (("image_2", "left.png"), ("image_3", "right.png")):
        (workspace / "kitti" / "testing" / side).mkdir(parents=True)
        shutil.copy(workspace / image, workspace / "kitti" / "testing" / side / "000000_10.png")
    return workspace / "kitti"


def middlebury(workspace, ndisp: int):
    scene = workspace / "mb" / "MiddEval3" / "testH" / "Scene"
    scene.mkdir(parents=True)
    shutil.copy(workspace / "left.png", scene / "im0.png")
    shutil.copy(workspace / "right.png", scene / "im1.png")
    (scene / "calib.txt").write_text(CALIB.format(ndisp=ndisp))
    return workspace / "mb"


def submit(run_command, *overrides):
    return run_command("submit", "benchmark=kitti2015", "ckpt_path=tiny.ckpt", "data_root=kitti", "output=sub",
                       "device=cpu", *overrides)


def test_a_rerun_with_another_checkpoint_is_refused_instead_of_mixing_frames(workspace, kitti, run_command, other_weights):
    assert submit(run_command).status == 0
    (kitti / "testing" / "image_2" / "000001_10.png").write_bytes((workspace / "left.png").read_bytes())
    (kitti / "testing" / "image_3" / "000001_10.png").write_bytes((workspace / "right.png").read_bytes())
    before = snapshot(workspace / "sub")
    submit(run_command, f"ckpt_path={other_weights}").error_line("output=sub", "another producer", "sha256",
                                                                  str(other_weights), "overwrite=true")
    submit(run_command, "precision=bf16").error_line('precision="fp32" there, "bf16" now')
    assert snapshot(workspace / "sub") == before


def test_a_benchmark_file_no_recorded_run_wrote_is_refused(workspace, kitti, run_command):
    (workspace / "sub" / "disp_0").mkdir(parents=True)
    (workspace / "sub" / "disp_0" / "000000_10.png").write_bytes(b"another method's frame")
    before = snapshot(workspace / "sub")
    submit(run_command).error_line("000000_10.png", "no recorded run", "overwrite=true")
    assert snapshot(workspace / "sub") == before


def test_output_that_is_a_file(workspace, kitti, run_command):
    (workspace / "sub").write_text("keep me")
    submit(run_command).error_line("output=sub", "not a folder")
    assert (workspace / "sub").read_text() == "keep me"


def test_an_ndisp_whose_cost_volume_cannot_fit_is_refused_with_the_estimate(workspace, run_command):
    root = middlebury(workspace, 1_048_576)  # the largest ndisp calib.txt may hold
    submit(run_command, "benchmark=middlebury", f"data_root={root}").error_line("max_disp 1048576", "GB")
    assert not list((workspace / "sub").rglob("*.pfm"))


def test_a_negative_ndisp_in_calib_txt_is_refused(workspace, run_command):
    root = middlebury(workspace, -64)
    submit(run_command, "benchmark=middlebury", f"data_root={root}").error_line("calib.txt", "ndisp=-64")
    assert not (workspace / "sub").exists()
