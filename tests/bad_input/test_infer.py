"""stereo.infer: bad inputs, values, checkpoints and output folders."""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from bad_input.conftest import make_pair, snapshot
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


def test_output_dir_that_is_a_file(workspace, run_command):
    (workspace / "taken").write_text("keep me\n")
    infer(run_command, "output_dir=taken").error_line("output_dir=taken", "not a folder")
    assert (workspace / "taken").read_text() == "keep me\n"


def test_output_dir_in_use_by_a_running_inference(workspace, run_command):
    folder = workspace / "out"
    folder.mkdir()
    (folder / "left_disp.pfm").write_bytes(b"earlier result")
    lock = folder / ".stereo-run.lock"  # owned by this (live) test process
    lock.write_text(json.dumps({"host": os.uname().nodename, "pid": os.getpid(), "started": "now"}))
    before = snapshot(folder)
    infer(run_command).error_line("output_dir=out", "in use by another run", str(os.getpid()))
    assert snapshot(folder) == before


def test_results_of_another_checkpoint_are_refused_naming_it_and_overwrite_replaces_them(
        workspace, run_command, other_weights, earlier_out):
    out = copy_of(earlier_out, workspace)
    before = snapshot(out)
    infer(run_command, f"ckpt_path={other_weights}").error_line("output_dir=out", "another producer", "sha256",
                                                                str(other_weights), "overwrite=true")
    infer(run_command, "max_disp=64").error_line("max_disp=null there, 64 now")
    assert snapshot(out) == before
    assert infer(run_command, f"ckpt_path={other_weights}", "overwrite=true").status == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["checkpoint"] == str(other_weights.resolve()) and manifest["files"] == ["left_disp.pfm"]
    assert snapshot(out) != before


def test_a_rerun_of_the_same_producer_redoes_its_results_but_not_over_a_changed_one(workspace, run_command, earlier_out):
    out = copy_of(earlier_out, workspace)
    assert infer(run_command).status == 0
    assert (out / "left_disp.pfm").read_bytes() == (earlier_out / "left_disp.pfm").read_bytes()
    (out / "left_disp.pfm").write_bytes(b"edited since the run wrote it")  # its size and hash no longer match
    infer(run_command).error_line("left_disp.pfm", "changed since", "overwrite=true")
    assert (out / "left_disp.pfm").read_bytes() == b"edited since the run wrote it"
    assert infer(run_command, "overwrite=true").status == 0
    assert (out / "left_disp.pfm").read_bytes() == (earlier_out / "left_disp.pfm").read_bytes()


def test_a_file_no_recorded_run_wrote_is_not_replaced(workspace, run_command):
    (workspace / "out").mkdir()
    (workspace / "out" / "left_disp.pfm").write_bytes(b"the user's own result")
    infer(run_command).error_line("left_disp.pfm", "no recorded run", "overwrite=true")
    assert (workspace / "out" / "left_disp.pfm").read_bytes() == b"the user's own result"


def test_a_manifest_edited_to_list_the_lock_and_an_outside_file_deletes_nothing(workspace, run_command, other_weights,
                                                                                   earlier_out):
    manifest_path = copy_of(earlier_out, workspace) / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    (workspace / "unrelated.txt").write_text("the user's")
    manifest["files"] += [".stereo-run.lock", "../unrelated.txt"]
    manifest_path.write_text(json.dumps(manifest))
    before = snapshot(workspace)
    infer(run_command, f"ckpt_path={other_weights}", "overwrite=true").error_line("manifest was edited", "nothing was deleted")
    assert snapshot(workspace) == before


def test_a_manifest_edited_to_list_a_users_file_and_folder_deletes_neither(workspace, run_command, other_weights,
                                                                          earlier_out):
    """Only files whose size and sha256 are those recorded when the run wrote them are deleted."""
    out = copy_of(earlier_out, workspace)
    (out / "notes.txt").write_text("the user's")
    (out / "mine").mkdir()
    (out / "mine" / "data.bin").write_bytes(b"the user's data")
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["files"] += ["notes.txt", "mine/data.bin"]
    manifest["folders"] = ["mine"]
    (out / "manifest.json").write_text(json.dumps(manifest))
    users = snapshot(out / "notes.txt", out / "mine")
    result = infer(run_command, f"ckpt_path={other_weights}", "overwrite=true")
    assert result.status == 0, result.stderr
    kept = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(kept) == 1 and "kept 2 file(s)" in kept[0] and "mine/data.bin, notes.txt" in kept[0], kept
    assert snapshot(out / "notes.txt", out / "mine") == users
    assert json.loads((out / "manifest.json").read_text())["files"] == ["left_disp.pfm"]


def test_a_symlink_in_the_output_folder_is_named(workspace, run_command, tmp_path_factory):
    elsewhere = tmp_path_factory.mktemp("elsewhere") / "target.pfm"
    elsewhere.write_bytes(b"not ours")
    (workspace / "out").mkdir()
    (workspace / "out" / "left_disp.pfm").symlink_to(elsewhere)
    infer(run_command, "overwrite=true").error_line("left_disp.pfm is a symbolic link", "remove the link")
    assert elsewhere.read_bytes() == b"not ours"


def test_an_empty_lock_left_by_a_full_disk_is_taken_over(workspace, run_command):
    """The run gets past the lock (and then stops at its corrupt input, before predicting anything)."""
    (workspace / "out").mkdir()
    lock = workspace / "out" / ".stereo-run.lock"
    lock.write_bytes(b"")
    os.utime(lock, (0, 0))
    (workspace / "corrupt.png").write_bytes(b"not an image")
    infer(run_command, "right=corrupt.png").error_line("corrupt.png")
    assert not lock.exists()


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
