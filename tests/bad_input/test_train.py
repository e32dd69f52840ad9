"""stereo.train: a refused run changes nothing in the earlier run's folder (Hydra's .hydra/ included)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bad_input.conftest import run_cli, snapshot
from conftest import compose

from stereo.cli import check_command_line


def earlier_run(folder):
    """A run folder as a finished training leaves it (as far as the checks look)."""
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "checkpoints" / "last.ckpt").write_bytes(b"earlier weights")
    (folder / ".hydra").mkdir()
    (folder / ".hydra" / "config.yaml").write_text("seed: 1\n")
    (folder / ".hydra" / "overrides.yaml").write_text("- seed=1\n")
    (folder / "train.log").write_text("earlier log\n")


def test_a_new_run_into_a_folder_with_checkpoints_is_refused_and_writes_nothing(workspace, run_command, train_overrides):
    run = workspace / "run"
    earlier_run(run)
    before = snapshot(run)
    overrides = [o for o in train_overrides() if not o.startswith("paths.output_dir=")]
    result = run_command("train", *overrides, f"hydra.run.dir={run}")
    result.error_line(f"paths.output_dir={run}", f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}")
    assert snapshot(run) == before


def test_a_recorded_run_of_another_producer_is_refused_naming_the_difference(workspace, run_command, train_overrides):
    run = workspace / "run"
    run.mkdir()
    (run / "manifest.json").write_text(json.dumps({"command": "stereo.train", "checkpoint": None,
                                                  "checkpoint_sha256": None, "settings": {"seed": 7},
                                                  "status": "complete", "files": []}))
    before = snapshot(run)
    result = run_command("train", *train_overrides(), "trainer.max_steps=1")
    result.error_line("another producer", "seed=7 there, 1 now")
    assert snapshot(run) == before


def test_a_value_of_the_wrong_type_names_the_key(workspace, run_command, train_overrides):
    run_command("train", *train_overrides(), "trainer.max_steps=abc").error_line("trainer.max_steps=abc",
                                                                                  "whole number")
    assert not (workspace / "run").exists()


@pytest.mark.slow
def test_every_checkpoint_a_run_writes_is_accepted_by_ckpt_path_as_printed(train_overrides, tmp_path):
    """Checkpoint names carry no '=' (Hydra's override grammar), the printed resume command resumes,
    and a new run into a directory with checkpoints is refused without touching them."""
    import shlex

    from stereo.train import validate_resume_checkpoint

    overrides = train_overrides("model=psmnet_basic", "model.max_disp=16", "trainer.max_steps=2",
                                "trainer.limit_val_batches=1", "trainer.val_check_interval=1", "logger=none",
                                "callbacks.last_checkpoint.every_n_train_steps=1")
    overrides = [o for o in overrides if not o.startswith("paths.output_dir=")]
    run_dir = tmp_path / "run"
    first = run_cli("train", *overrides, f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    written = sorted((run_dir / "checkpoints").glob("*.ckpt"))
    assert {p.name for p in written} >= {"last.ckpt"} and any(p.name.startswith("best-") for p in written)
    for checkpoint in written:
        assert "=" not in checkpoint.name
        validate_resume_checkpoint(checkpoint)
        arguments = [*overrides, f"ckpt_path={checkpoint}"]  # as the command line parses it, in process
        assert check_command_line("train", arguments) is None
        assert compose("train", arguments).ckpt_path == str(checkpoint)

    before = snapshot(run_dir)
    refused = run_cli("train", *overrides, f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert refused.returncode == 2 and f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}" in refused.stderr
    assert snapshot(run_dir) == before

    resume = next(line for line in first.stdout.splitlines() if "resume with:" in line).split("resume with:")[1]
    args = shlex.split(resume)
    assert args[:3] == ["python", "-m", "stereo.train"]
    resumed = run_cli("train", *args[3:], "trainer.max_steps=3", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    printed = next(line for line in resumed.stdout.splitlines() if "resume with:" in line)
    ckpt = Path(printed.split("ckpt_path=")[1].split()[0])
    assert ckpt.is_file() and torch_step(ckpt) == 3, printed


def torch_step(path: Path) -> int:
    import torch

    return int(torch.load(path, map_location="cpu", weights_only=True)["global_step"])
