"""stereo.submit: bad calibrations are named (one upload never holds frames of two producers: test_output_folders.py)."""

from __future__ import annotations

import shutil

CALIB = "cam0=[500 0 48; 0 500 32; 0 0 1]\ncam1=[500 0 48; 0 500 32; 0 0 1]\ndoffs=0\nbaseline=100\nwidth=96\nheight=64\nndisp={ndisp}\n"


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


def test_an_ndisp_whose_cost_volume_cannot_fit_is_refused_with_the_estimate(workspace, run_command):
    root = middlebury(workspace, 1_048_576)  # the largest ndisp calib.txt may hold
    submit(run_command, "benchmark=middlebury", f"data_root={root}").error_line("max_disp 1048576", "GB")
    assert not list((workspace / "sub").rglob("*.pfm"))


def test_a_negative_ndisp_in_calib_txt_is_refused(workspace, run_command):
    root = middlebury(workspace, -64)
    submit(run_command, "benchmark=middlebury", f"data_root={root}").error_line("calib.txt", "ndisp=-64")
    assert not (workspace / "sub").exists()
