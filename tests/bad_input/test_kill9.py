"""kill -9 at a random point of infer, submit, export and train, then reruns: no mixed producer, no
orphan temporary file, every file the manifest lists is there and whole. One seeded kill point per
command keeps the suite inside its time budget (each case is two real runs); add seeds to the
parametrisation to try more points."""

from __future__ import annotations

import csv
import json
import random
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from bad_input.conftest import run_cli, snapshot
from stereo.train import TRAINING_FOLDERS

TEMPORARY = re.compile(r"^\..+\.\d+(\.[A-Za-z0-9_]+)?\.tmp$|\.partial\.|\.lock$")


def kill_at_random(command: str, *overrides: str, cwd: Path, seed: int, window: tuple[float, float]) -> float:
    """Start the command and SIGKILL it after a random delay (seeded: reproducible); returns the delay."""
    delay = random.Random(seed).uniform(*window)
    process = run_cli(command, *overrides, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(delay)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    return delay


def assert_consistent(folder: Path, manifest: Path, checkpoint: Path) -> dict:
    """A complete run of ``checkpoint``'s producer: listed files exist, nothing temporary is left."""
    record = json.loads(manifest.read_text())
    assert record["status"] == "complete" and record["checkpoint"] == str(checkpoint.resolve()), record
    for name in record["files"]:
        assert (folder / name).is_file(), name
    leftovers = [p for p in folder.rglob(".*") if TEMPORARY.search(p.name)]
    assert not leftovers, leftovers
    return record


def refuses_another_producer(command: str, args: list[str], other: Path, folder: Path, cwd: Path) -> None:
    """Once the killed run left its manifest, a run of another checkpoint is refused and changes nothing."""
    if not (folder / "manifest.json").exists():
        return
    lock = str(folder / ".stereo-run.lock")  # the killed run's: taken over (its pid is gone), then released
    before = {name: data for name, data in snapshot(folder).items() if name != lock}
    refused = run_cli(command, *args, f"ckpt_path={other}", cwd=cwd)
    assert refused.returncode == 2 and "another producer" in refused.stderr, refused.stderr[-2000:]
    assert snapshot(folder) == before


@pytest.fixture
def frames(workspace):
    """input_dir with six pairs (left/, right/), long enough to be killed in the middle."""
    for side, image in (("left", "left.png"), ("right", "right.png")):
        (workspace / "pairs" / side).mkdir(parents=True)
        for index in range(6):
            shutil.copy(workspace / image, workspace / "pairs" / side / f"f{index}.png")
    return workspace / "pairs"


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0])
def test_infer_killed_then_rerun(workspace, frames, other_weights, seed):
    args = ["ckpt_path=tiny.ckpt", "input_dir=pairs", "output_dir=out", "formats=[pfm,color]", "swap_check=false"]
    kill_at_random("infer", *args, cwd=workspace, seed=seed, window=(4.0, 12.0))
    refuses_another_producer("infer", args, other_weights, workspace / "out", workspace)
    assert run_cli("infer", *args, cwd=workspace).returncode == 0
    record = assert_consistent(workspace / "out", workspace / "out" / "manifest.json", workspace / "tiny.ckpt")
    assert sorted(record["files"]) == sorted(f"f{i}_disp{s}" for i in range(6) for s in (".pfm", "_color.png"))
    assert sorted(p.name for p in (workspace / "out").iterdir()) == sorted([*record["files"], "manifest.json"])


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0])
def test_submit_killed_then_rerun(workspace, other_weights, seed):
    for side, image in (("image_2", "left.png"), ("image_3", "right.png")):
        (workspace / "kitti" / "testing" / side).mkdir(parents=True)
        for index in range(6):
            shutil.copy(workspace / image, workspace / "kitti" / "testing" / side / f"{index:06d}_10.png")
    args = ["benchmark=kitti2015", "ckpt_path=tiny.ckpt", "data_root=kitti", "output=sub", "device=cpu"]
    kill_at_random("submit", *args, cwd=workspace, seed=seed, window=(4.0, 12.0))
    refuses_another_producer("submit", args, other_weights, workspace / "sub", workspace)
    assert run_cli("submit", *args, cwd=workspace).returncode == 0
    record = assert_consistent(workspace / "sub", workspace / "sub" / "manifest.json", workspace / "tiny.ckpt")
    assert sorted(record["files"]) == sorted([*(f"disp_0/{i:06d}_10.png" for i in range(6)), "kitti2015_submission.zip"])


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0])
def test_export_killed_then_rerun(workspace, seed):
    from inference_checkpoints import write_our_checkpoint

    checkpoint = write_our_checkpoint(workspace / "calibrated.ckpt", calibrated=True)  # verifiable (module docstring there)
    args = [f"ckpt_path={checkpoint.name}", "format=onnx", "output=model.onnx"]
    kill_at_random("export", *args, cwd=workspace, seed=seed, window=(3.0, 10.0))
    assert not (workspace / "model.onnx").exists() or (workspace / "model.onnx.manifest.json").exists()
    assert run_cli("export", *args, cwd=workspace).returncode == 0
    record = assert_consistent(workspace, workspace / "model.onnx.manifest.json", checkpoint)
    assert record["files"] == ["model.onnx"]


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0])
def test_train_killed_then_rerun(workspace, train_overrides, seed):
    args = [*train_overrides("model=psmnet_basic", "model.max_disp=16", "trainer.max_steps=4", "logger=csv",
                             "trainer.limit_val_batches=1", "callbacks.last_checkpoint.every_n_train_steps=1")]
    run = workspace / "run"
    kill_at_random("train", *args, cwd=workspace, seed=seed, window=(6.0, 20.0))
    last = run / "checkpoints" / "last.ckpt"
    resuming = last.is_file()  # killed after its first checkpoint: resume it; before: a fresh run redoes it
    again = run_cli("train", *args, *([f"ckpt_path={last}"] if resuming else []), cwd=workspace)
    assert again.returncode == 0, again.stderr[-3000:]
    record = json.loads((run / "manifest.json").read_text())
    assert record["status"] == "complete" and set(record["folders"]) <= set(TRAINING_FOLDERS)
    assert not [p for p in run.rglob(".*") if TEMPORARY.search(p.name)]
    if not resuming:  # the redone run's log only: a log holding the killed run's rows too would restart its steps
        rows = list(csv.DictReader(open(run / "csv" / "metrics.csv")))
        steps = [int(row["step"]) for row in rows if row.get("step")]
        assert steps and steps == sorted(steps), steps
