"""stereo.train: printed checkpoints resume; resume checkpoints and overwrite delete no file a run did not write; a
failed run never blocks the corrected rerun (what every command's output shares: test_output_folders.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from bad_input.conftest import run_cli, snapshot
from conftest import compose

from stereo.cli import check_command_line


def test_a_value_of_the_wrong_type_names_the_key(workspace, run_command, train_overrides):
    run_command("train", *train_overrides(), "trainer.max_steps=abc").error_line("trainer.max_steps=abc",
                                                                                  "whole number")
    assert not (workspace / "run").exists()


def test_two_checkpoint_callbacks_lightning_cannot_tell_apart_are_refused_before_the_run_folder(
        workspace, run_command, train_overrides):
    """experiment=ea_census_cpu keeps last.ckpt every 250 steps; snapshots every 250 too used to stop the
    Trainer with Lightning's RuntimeError about state keys, after the run folder was claimed."""
    result = run_command("train", *train_overrides("model=ea_light", "model.max_disp=16"),
                         "callbacks.last_checkpoint.every_n_train_steps=250",
                         "+callbacks.snapshots._target_=lightning.pytorch.callbacks.ModelCheckpoint",
                         "+callbacks.snapshots.every_n_train_steps=250")
    result.error_line("callbacks.last_checkpoint and callbacks.snapshots", "give callbacks.snapshots.every_n_train_steps")
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


# ---------------------------------------------------------------- resume checkpoints and overwrite
# Lightning's ModelCheckpoint restores the paths of its saved state and deletes them when it rotates
# checkpoints; overwrite=true deletes what the earlier run recorded. Neither may touch a file no run wrote.

TINY_TRAINING = ("model=psmnet_basic", "model.max_disp=16", "logger=csv", "trainer.limit_val_batches=1",
                 "callbacks.last_checkpoint.every_n_train_steps=1")
PRECIOUS = b"precious data, not written by any run\n"


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, synthetic_root) -> Path:
    """A finished one-step training run (checkpoints/last.ckpt, csv/, .hydra/, manifest), copied per test."""
    from conftest import training_overrides

    base = tmp_path_factory.mktemp("trained")
    result = run_cli("train", *training_overrides(synthetic_root, base, *TINY_TRAINING, "trainer.max_steps=1"), cwd=base)
    assert result.returncode == 0, result.stderr[-3000:]
    return base / "run"


def copy_run(trained_run: Path, folder: Path) -> Path:
    shutil.copytree(trained_run, folder / "run")
    return folder / "run"


def edit_callback_states(checkpoint: Path, dirpath: Path, named: Path, score: float) -> None:
    """Make every ModelCheckpoint state of ``checkpoint`` name ``named`` as its last, best and k-th best file."""
    state = torch.load(checkpoint, weights_only=True)
    for callback in state["callbacks"].values():
        callback.update(dirpath=str(dirpath), last_model_path=str(named), best_model_path=str(named),
                        kth_best_model_path=str(named), best_k_models={str(named): torch.tensor(score)})
    torch.save(state, checkpoint)


@pytest.mark.slow  # two real trainings (a few seconds each on an idle machine)
@pytest.mark.parametrize("into", ["its own folder", "a fresh folder"])
def test_a_resume_checkpoint_naming_a_file_outside_the_run_deletes_nothing(trained_run, tmp_path, run_command,
                                                                         train_overrides, into):
    run = copy_run(trained_run, tmp_path)
    target = run if into == "its own folder" else tmp_path / "fresh"
    victim = tmp_path / "victim.txt"
    victim.write_bytes(PRECIOUS)
    checkpoint = run / "checkpoints" / "last.ckpt"
    # as in the issue: <its dirpath>/../../victim.txt, with the dirpath the resumed run's own, as Lightning checks
    edit_callback_states(checkpoint, target / "checkpoints", Path(f"{target / 'checkpoints'}/../../victim.txt"), 1e9)
    result = run_command("train", *train_overrides(*TINY_TRAINING, "trainer.max_steps=3"),
                         f"paths.output_dir={target}", f"ckpt_path={checkpoint}")
    assert result.status == 0, result.stderr[-3000:]
    assert victim.read_bytes() == PRECIOUS
    assert "names files outside this run's folder" in result.stderr and "not restored" in result.stderr


@pytest.mark.slow  # two real trainings (a few seconds each on an idle machine)
def test_a_resume_checkpoint_naming_a_users_file_inside_the_checkpoints_folder_deletes_nothing(
        trained_run, tmp_path, run_command, train_overrides):
    run = copy_run(trained_run, tmp_path)
    users = run / "checkpoints" / "my-best.ckpt"  # copied there by the user: no run recorded it
    users.write_bytes(PRECIOUS)
    checkpoint = run / "checkpoints" / "last.ckpt"
    edit_callback_states(checkpoint, run / "checkpoints", users, 1e9)  # a score every new checkpoint beats
    result = run_command("train", *train_overrides(*TINY_TRAINING, "trainer.max_steps=3"), f"ckpt_path={checkpoint}")
    assert result.status == 0, result.stderr[-3000:]
    assert users.read_bytes() == PRECIOUS
    assert f"warning: {users}: kept, not deleted for Lightning's checkpoint rotation" in result.stderr


@pytest.mark.slow  # two real trainings (a few seconds each on an idle machine)
def test_overwrite_deletes_only_the_files_the_earlier_run_wrote(trained_run, tmp_path, run_command, train_overrides):
    run = copy_run(trained_run, tmp_path)
    users = [run / "checkpoints" / "notes.txt", run / "csv" / "my_plot.png"]
    for path in users:
        path.write_bytes(PRECIOUS)
    earlier = json.loads((run / "manifest.json").read_text())
    result = run_command("train", *train_overrides(*TINY_TRAINING, "trainer.max_steps=1", "seed=2"), "overwrite=true")
    assert result.status == 0, result.stderr[-3000:]
    assert all(path.read_bytes() == PRECIOUS for path in users)
    kept = [line for line in result.stderr.splitlines() if "not deleted with the earlier run's results" in line]
    assert len(kept) == 1 and "checkpoints/notes.txt" in kept[0] and "csv/my_plot.png" in kept[0]
    now = json.loads((run / "manifest.json").read_text())
    assert now["settings"]["seed"] == 2 and "checkpoints/last.ckpt" in earlier["hashes"]
    assert not {"checkpoints/notes.txt", "csv/my_plot.png"} & set(now["files"])


@pytest.mark.slow  # two real trainings (a few seconds each on an idle machine)
def test_a_run_that_fails_before_training_does_not_block_the_corrected_rerun(workspace, run_command, train_overrides,
                                                                             synthetic_root):
    """The first run fails inside the training (no data at data.train.root) after claiming the folder; the
    corrected rerun (another producer: other data) runs instead of being refused as another producer."""
    missing = workspace / "no_data"
    failed = run_command("train", *train_overrides(*TINY_TRAINING, "trainer.max_steps=1"), f"data.train.root={missing}")
    failed.error_line(str(missing))
    assert not (workspace / "run").exists()
    result = run_command("train", *train_overrides(*TINY_TRAINING, "trainer.max_steps=1"))
    assert result.status == 0, result.stderr[-3000:]
