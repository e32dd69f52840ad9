"""stereo.infer: bad inputs, values, checkpoints and output folders (what every command's output shares:
test_output_folders.py)."""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from bad_input.conftest import make_pair
from inference_checkpoints import TINY_CONFIG, write_our_checkpoint

PAIR = ("ckpt_path=tiny.ckpt", "left=left.png", "right=right.png", "formats=[pfm]", "swap_check=false", "optimize=false")


def infer(run_command, *overrides: str, full_error: bool = False):
    given = {o.split("=", 1)[0] for o in overrides}
    base = [o for o in (*PAIR, "output_dir=out") if o.split("=", 1)[0] not in given]
    return run_command("infer", *base, *overrides, full_error=full_error)


@pytest.fixture(scope="module")
def earlier_out(tmp_path_factory, tiny_weights) -> Path:
    """``out/`` as a successful ``stereo.infer`` run of PAIR leaves it (predicted once, copied per test)."""
    from stereo.config import compose
    from stereo.infer import run

    folder = tmp_path_factory.mktemp("earlier")
    make_pair(folder, tiny_weights)
    cwd = Path.cwd()
    os.chdir(folder)
    try:
        run(compose("infer", [*PAIR, "output_dir=out"]))
    finally:
        os.chdir(cwd)
    return folder / "out"


def copy_of(earlier_out: Path, workspace: Path) -> Path:
    shutil.copytree(earlier_out, workspace / "out")
    return workspace / "out"


def test_missing_image(workspace, run_command):
    infer(run_command, "right=missing.png").error_line("missing.png", "not found")
    assert not (workspace / "out").exists()


def test_corrupt_image_ends_the_run_leaves_nothing_and_the_corrected_rerun_runs(workspace, run_command):
    """A run that failed before writing a result leaves no manifest that would refuse the corrected
    rerun (another producer: other input) as "another producer"."""
    (workspace / "corrupt.png").write_bytes((workspace / "right.png").read_bytes()[:200])
    infer(run_command, "right=corrupt.png").error_line("corrupt.png")
    assert not (workspace / "out").exists()
    assert infer(run_command).status == 0
    assert json.loads((workspace / "out" / "manifest.json").read_text())["status"] == "complete"


def test_random_bytes_checkpoint_does_not_suggest_weights_only_false(workspace, run_command):
    (workspace / "random.ckpt").write_bytes(np.random.default_rng(1).bytes(4096))
    line = infer(run_command, "ckpt_path=random.ckpt").error_line("random.ckpt", "not a PyTorch checkpoint")
    assert "weights_only" not in line


def test_a_checkpoint_with_nan_weights_is_refused_before_predicting(workspace, run_command):
    checkpoint = torch.load(workspace / "tiny.ckpt", weights_only=True)
    name = next(k for k, v in checkpoint["state_dict"].items() if v.is_floating_point() and v.dim() > 1)
    checkpoint["state_dict"][name] = torch.full_like(checkpoint["state_dict"][name], float("nan"))
    torch.save(checkpoint, workspace / "nan.ckpt")
    infer(run_command, "ckpt_path=nan.ckpt").error_line("nan.ckpt", "NaN/inf", name.removeprefix("model."))
    assert not (workspace / "out").exists()


def test_a_max_disp_whose_cost_volume_cannot_fit_is_refused_with_the_estimate(workspace, run_command):
    write_our_checkpoint(workspace / "huge.ckpt", {**TINY_CONFIG, "max_disp": 1_600_000_000})
    line = infer(run_command, "ckpt_path=huge.ckpt").error_line("max_disp 1600000000", "GB", "lower max_disp")
    assert "e+" in line  # the estimate, in GB, far beyond any machine
    assert not list((workspace / "out").glob("*.pfm"))


@pytest.mark.parametrize("override, named", [
    ("formats=[pfm,bogus]", "'bogus'"),
    ("batch_size=0", "batch_size=0"),
    ("batch_size=-2", "batch_size=-2"),
    ("focal=0", "focal=0"),
    ("baseline=-0.1", "baseline=-0.1"),
    ("device=tpu7", "device=tpu7"),
    ("input_dir=left.png", "is a file, not a folder"),
    ("video=left.png", "PNG still image, not a video"),
])
def test_a_bad_value_is_named_before_anything_is_written(workspace, run_command, override, named):
    extra = {"focal=0": ["formats=[depth]", "baseline=100"], "baseline=-0.1": ["formats=[depth]", "focal=500"],
             "input_dir=left.png": ["left=null", "right=null"], "video=left.png": ["left=null", "right=null"]}
    infer(run_command, override, *extra.get(override, [])).error_line(named)
    assert not (workspace / "out").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this torch sees a CUDA GPU")
def test_device_cuda_on_a_cpu_only_torch(workspace, run_command):
    infer(run_command, "device=cuda").error_line("device=cuda", "device=cpu")
    assert not (workspace / "out").exists()


@pytest.mark.parametrize("ndisp", ["-64", "0"])
def test_a_calib_txt_with_a_non_positive_ndisp_is_refused(workspace, run_command, ndisp):
    (workspace / "calib.txt").write_text(f"cam0=[500 0 48; 0 500 32; 0 0 1]\ncam1=[500 0 48; 0 500 32; 0 0 1]\n"
                                         f"doffs=0\nbaseline=100\nwidth=96\nheight=64\nndisp={ndisp}\n")
    infer(run_command, "formats=[depth]", "calib=calib.txt").error_line("calib.txt", f"ndisp={ndisp}")


def test_missing_calib_file_names_the_option(workspace, run_command):
    infer(run_command, "formats=[depth]", "calib=nowhere/calib.txt").error_line("calib=nowhere/calib.txt")


def test_missing_required_option(workspace, run_command):
    # ckpt_path is optional (the shipped weights); the input is not
    run_command("infer", "output_dir=out").error_line("give exactly one input", "left=", "input_dir=")
    assert not (workspace / "out").exists()


def test_a_rerun_of_the_same_producer_redoes_its_results_but_not_over_a_changed_one(workspace, run_command, earlier_out):
    out = copy_of(earlier_out, workspace)
    assert infer(run_command).status == 0
    assert (out / "left_disp.pfm").read_bytes() == (earlier_out / "left_disp.pfm").read_bytes()
    (out / "left_disp.pfm").write_bytes(b"edited since the run wrote it")  # its size and hash no longer match
    infer(run_command).error_line("left_disp.pfm", "changed since", "overwrite=true")
    assert (out / "left_disp.pfm").read_bytes() == b"edited since the run wrote it"
    assert infer(run_command, "overwrite=true").status == 0
    assert (out / "left_disp.pfm").read_bytes() == (earlier_out / "left_disp.pfm").read_bytes()


def test_a_full_disk_gives_what_to_do_and_leaves_no_lock(workspace, run_command, monkeypatch):
    import stereo.output_dirs.manifest as manifest

    def full(path, *args):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(manifest, "atomic_write", full)  # the manifest is the first file a run writes
    line = infer(run_command).error_line("manifest.json", "disk is full", "free space")
    assert "[Errno" not in line
    assert not (workspace / "out").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_output_folder_gives_what_to_do(workspace, run_command):
    (workspace / "out").mkdir()
    (workspace / "out").chmod(0o555)
    try:
        line = infer(run_command).error_line("out", "writable")
    finally:
        (workspace / "out").chmod(0o755)
    assert "[Errno" not in line


def test_full_traceback_on_request(workspace, run_command):
    from stereo.inference.inputs import PairError

    with pytest.raises(PairError, match="missing.png"):
        infer(run_command, "right=missing.png", full_error=True)


@pytest.mark.slow  # two strips predicted; tests/test_predictor.py covers the strip planning quickly
def test_a_pair_too_large_for_max_memory_gb_is_announced_as_tiled_with_a_time_estimate(tiny_weights, capsys):
    from stereo.inference.predictor import Predictor

    predictor = Predictor.from_checkpoint(tiny_weights, device="cpu", max_memory_gb=0.5, swap_check=False,
                                          optimize=False)
    image = np.random.default_rng(0).integers(0, 256, (400, 64, 3), dtype=np.uint8)
    predictor.predict(image, image, ("tall.png", "tall_right.png"))
    err = capsys.readouterr().err
    assert "tall.png: 64x400 runs in 2 strips of 256 rows (mode=auto" in err and "max_memory_gb=0.5" in err, err
    assert "first of 2 strips:" in err and "s per pair" in err, err
