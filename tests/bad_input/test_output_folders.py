"""Every command writes its results through ``stereo.output_dirs``: one case per command for each
behaviour the commands share. The behaviours themselves (locks, overwrite, clean-up, tampered
manifests, orphans) are tested once, where they live: tests/test_output_dirs.py.

- another producer (another checkpoint; a setting of the command's own) is refused, naming what
  differs, and changes nothing; the same producer reruns; ``overwrite=true`` replaces the results;
- a file at a result's place that no recorded run wrote is refused and kept;
- an output of the wrong kind (a file for a folder, a folder for a file) is refused before anything runs;
- an output another run holds (its lock) is refused, naming that run.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from bad_input.conftest import snapshot
from conftest import compose

COMMANDS = ("infer", "evaluate", "submit", "export", "train")
# an evaluation takes a while: the case that needs a real one is slow (train's earlier run is a recorded
# producer, never a training); infer's and submit's cases run two real predictions each (3-4 s): the
# quick tier keeps the mechanism's unit tests (test_output_dirs.py) and the export and train cases
SLOW = {"evaluate", "infer", "submit"}


def with_overrides(base: list[str], *extra: str) -> list[str]:
    """``base`` with the keys of ``extra`` replaced by ``extra``'s values."""
    given = {o.split("=", 1)[0] for o in extra}
    return [o for o in base if o.split("=", 1)[0] not in given] + list(extra)


def kitti_testing(workspace: Path) -> Path:
    """A KITTI 2015 testing tree with one frame (the workspace pair)."""
    for side, image in (("image_2", "left.png"), ("image_3", "right.png")):
        (workspace / "kitti" / "testing" / side).mkdir(parents=True, exist_ok=True)
        shutil.copy(workspace / image, workspace / "kitti" / "testing" / side / "000000_10.png")
    return workspace / "kitti"


def arguments(command: str, workspace: Path, request) -> list[str]:
    """The command's overrides for a quick run on the workspace's files."""
    if command == "infer":
        return ["ckpt_path=tiny.ckpt", "left=left.png", "right=right.png", "formats=[pfm]", "swap_check=false",
                "optimize=false", "output_dir=out"]
    if command == "submit":
        kitti_testing(workspace)
        return ["benchmark=kitti2015", "ckpt_path=tiny.ckpt", "data_root=kitti", "output=sub", "device=cpu"]
    if command == "export":
        return ["ckpt_path=tiny.ckpt", "format=weights", "verify=false", "output=model.pt"]
    if command == "evaluate":
        root, checkpoint = request.getfixturevalue("synthetic_root"), request.getfixturevalue("tiny_checkpoint")
        return [f"ckpt_path={checkpoint}", "data.generate=null", f"data.val.root={root}", f"data.train.root={root}",
                "num_workers=0", "paths.output_dir=eval", "export.max_images=0"]
    return request.getfixturevalue("train_overrides")("model=psmnet_basic", "model.max_disp=16", "logger=csv",
                                                      "trainer.limit_val_batches=1")


# command -> (the output as its option names it, its manifest, a setting that changes the producer and how
# the refusal names the change)
OUTPUTS = {
    "infer": ("output_dir=out", "out/manifest.json", "max_disp=64", "max_disp=null there, 64 now"),
    "evaluate": ("paths.output_dir=eval", "eval/manifest.json", "split=train", 'split="test" there, "train" now'),
    "submit": ("output=sub", "sub/manifest.json", "precision=bf16", 'precision="fp32" there, "bf16" now'),
    "export": ("output=model.pt", "model.pt.manifest.json", None, None),
}


# command -> what its runs write (Hydra's own logs elsewhere aside)
RESULTS = {"infer": ("out",), "evaluate": ("eval",), "submit": ("sub",),
           "export": ("model.pt", "model.pt.manifest.json"), "train": ("run",)}


def results(command: str, workspace: Path) -> dict[str, bytes | None]:
    """Every byte of the command's output, for before/after comparisons."""
    return snapshot(*(workspace / name for name in RESULTS[command]))


@pytest.mark.parametrize("command", [pytest.param(c, marks=pytest.mark.slow) if c in SLOW else c for c in COMMANDS])
def test_another_producer_is_refused_naming_the_difference_and_changes_nothing(command, workspace, run_command,
                                                                               other_weights, request):
    base = arguments(command, workspace, request)
    if command == "train":  # an earlier training of another learning rate (nested setting: named by its key path)
        from stereo.train import training_producer

        earlier = training_producer(compose("train", base))
        lr = earlier["settings"]["optim"]["optimizer"]["lr"]
        earlier["settings"]["optim"]["optimizer"]["lr"] = lr * 2
        (workspace / "run").mkdir()
        (workspace / "run" / "manifest.json").write_text(json.dumps({**earlier, "status": "complete", "files": []}))
        before = results(command, workspace)
        run_command("train", *base).error_line("another producer", f"optim.optimizer.lr={lr * 2} there, {lr} now",
                                               "overwrite=true")
        assert results(command, workspace) == before
        return
    option, manifest, changed, difference = OUTPUTS[command]
    assert run_command(command, *base).status == 0
    if command not in SLOW:
        assert run_command(command, *base).status == 0  # the same producer reruns
    if command == "submit":  # a new frame: a resumed run would add it beside the other producer's frames
        for side, image in (("image_2", "left.png"), ("image_3", "right.png")):
            shutil.copy(workspace / image, workspace / "kitti" / "testing" / side / "000001_10.png")
    before = results(command, workspace)
    run_command(command, *with_overrides(base, f"ckpt_path={other_weights}")).error_line(
        option, "another producer", "sha256", str(other_weights), "overwrite=true")
    if changed is not None:
        run_command(command, *with_overrides(base, changed)).error_line("another producer", difference)
    assert results(command, workspace) == before
    if command in SLOW:
        return
    assert run_command(command, *with_overrides(base, f"ckpt_path={other_weights}"), "overwrite=true").status == 0
    assert json.loads((workspace / manifest).read_text())["checkpoint"] == str(other_weights.resolve())
    assert results(command, workspace) != before


# command -> (a result file a user may have put there, the words of the refusal)
USERS_FILES = {
    "infer": ("out/left_disp.pfm", ("left_disp.pfm", "no recorded run", "overwrite=true")),
    "evaluate": ("eval/metrics.json", ("metrics.json", "no recorded run")),
    "submit": ("sub/disp_0/000000_10.png", ("000000_10.png", "no recorded run", "overwrite=true")),
    "export": ("model.pt", ("output=model.pt", "already exists", "overwrite=true")),
    "train": ("run/checkpoints/last.ckpt",  # a folder holding checkpoints: the refusal names the resume option
              ("paths.output_dir={workspace}/run", "ckpt_path={workspace}/run/checkpoints/last.ckpt")),
}


@pytest.mark.parametrize("command", COMMANDS)
def test_a_result_file_no_recorded_run_wrote_is_refused_and_kept(command, workspace, run_command, request):
    base = arguments(command, workspace, request)
    name, words = USERS_FILES[command]
    (workspace / name).parent.mkdir(parents=True, exist_ok=True)
    (workspace / name).write_bytes(b"the user's own file")
    if command == "train":  # as a finished training leaves its folder, given as Hydra's run folder
        (workspace / "run" / ".hydra").mkdir()
        (workspace / "run" / ".hydra" / "config.yaml").write_text("seed: 1\n")
        (workspace / "run" / "train.log").write_text("earlier log\n")
        base = [o for o in base if not o.startswith("paths.output_dir=")] + [f"hydra.run.dir={workspace / 'run'}"]
    before = results(command, workspace)
    run_command(command, *base).error_line(*(word.format(workspace=workspace) for word in words))
    assert results(command, workspace) == before


# command -> (an output of the wrong kind, made by the test, the override naming it, the words of the refusal)
WRONG_KINDS = {
    "infer": ("file", "output_dir=taken", ("output_dir=taken", "not a folder")),
    "submit": ("file", "output=taken", ("output=taken", "not a folder")),
    "export": ("folder", "output=taken", ("output=taken is a folder",)),
}


@pytest.mark.parametrize("command", sorted(WRONG_KINDS))
def test_an_output_of_the_wrong_kind_is_refused_before_anything_runs(command, workspace, run_command, request):
    kind, override, words = WRONG_KINDS[command]
    if kind == "file":
        (workspace / "taken").write_text("keep me\n")
    else:
        (workspace / "taken").mkdir()
    base = with_overrides(arguments(command, workspace, request), override)
    if command == "export":  # refused before the checkpoint is even looked for
        base = with_overrides(base, "ckpt_path=missing.ckpt")
    run_command(command, *base).error_line(*words)
    if kind == "file":
        assert (workspace / "taken").read_text() == "keep me\n"
    else:
        assert list((workspace / "taken").iterdir()) == []


# command -> the lock its run takes (a folder's, or the file's beside it)
LOCKS = {"infer": "out/.stereo-run.lock", "evaluate": "eval/.stereo-run.lock", "submit": "sub/.stereo-run.lock",
         "export": ".model.pt.lock", "train": "run/.stereo-run.lock"}


@pytest.mark.parametrize("command", COMMANDS)
def test_an_output_in_use_by_a_running_command_is_refused_naming_the_run(command, workspace, run_command, request):
    base = arguments(command, workspace, request)
    lock = workspace / LOCKS[command]  # owned by this (live) test process
    lock.parent.mkdir(parents=True, exist_ok=True)
    lock.write_text(json.dumps({"host": os.uname().nodename, "pid": os.getpid(), "started": "now"}))
    before = {**results(command, workspace), **snapshot(lock)}
    run_command(command, *base).error_line("in use by another run", str(os.getpid()))
    assert {**results(command, workspace), **snapshot(lock)} == before
