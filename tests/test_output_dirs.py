"""Output folders: one mechanism (stereo.output_dirs.open_run) for provenance, resume, overwrite and locks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from stereo import output_dirs
from stereo.cli import OutputDirError


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (hidden ones included) with its bytes."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def dead_pid() -> int:
    """The pid of a process that has exited."""
    return int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout)


def made_by(tmp_path: Path, weights: bytes = b"weights A", **settings) -> dict:
    checkpoint = tmp_path / f"ckpt_{len(weights)}_{weights[-1]}.bin"
    checkpoint.write_bytes(weights)
    return output_dirs.producer("test", checkpoint, {"max_disp": 192, **settings})


def write_run(folder: Path, producer: dict, names: list[str], **options) -> None:
    with output_dirs.open_run(folder, "output_dir", producer, **options) as run:
        run.plan(folder / name for name in names)
        for name in names:
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_text(f"{name} by {producer['checkpoint_sha256'][:8]}")


def test_lock_is_exclusive_released_and_a_dead_owners_lock_is_taken_over(tmp_path):
    folder = tmp_path / "out"
    with output_dirs.claim(folder):
        with pytest.raises(OutputDirError, match=f"output_dir={folder} is in use by another run .pid {os.getpid()}"):
            with output_dirs.claim(folder):
                pass
    assert not (folder / output_dirs.LOCK_NAME).exists()
    (folder / output_dirs.LOCK_NAME).write_text(json.dumps({"host": os.uname().nodename, "pid": dead_pid()}))
    with output_dirs.claim(folder):  # the owner is gone: the stale lock is replaced
        owner = json.loads((folder / output_dirs.LOCK_NAME).read_text())
        assert owner["pid"] == os.getpid()
    assert sorted(p.name for p in folder.iterdir()) == []


def test_an_empty_lock_left_by_a_full_disk_is_taken_over_once_old_and_refused_while_fresh(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    lock = folder / output_dirs.LOCK_NAME
    lock.write_bytes(b"")
    with pytest.raises(OutputDirError, match=f"lock file {lock} is empty"):
        with output_dirs.claim(folder):
            pass
    old = time.time() - 2 * output_dirs.EMPTY_LOCK_GRACE_S
    os.utime(lock, (old, old))
    with output_dirs.claim(folder):
        assert json.loads(lock.read_text())["pid"] == os.getpid()


def test_a_lock_from_another_host_names_the_file_to_delete(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    lock = folder / output_dirs.LOCK_NAME
    lock.write_text(json.dumps({"host": "elsewhere", "pid": 1, "started": "then"}))
    with pytest.raises(OutputDirError, match=f"on elsewhere.*lock file {lock}.*delete the lock file"):
        with output_dirs.claim(folder):
            pass
    assert lock.exists()


def test_same_producer_resumes_another_is_refused_naming_the_difference_overwrite_replaces(tmp_path):
    folder = tmp_path / "out"
    first = made_by(tmp_path)
    write_run(folder, first, ["a.pfm"], resumable=True)
    with output_dirs.open_run(folder, "output_dir", first, resumable=True) as run:
        assert run.resumed and run.owns(folder / "a.pfm")
    before = snapshot(folder)
    other = made_by(tmp_path, b"weights B")
    with pytest.raises(OutputDirError, match=r"another producer .*checkpoint .*sha256 .* there, .* now"):
        write_run(folder, other, ["b.pfm"], resumable=True)
    with pytest.raises(OutputDirError, match=r"max_disp=192 there, 256 now"):
        write_run(folder, made_by(tmp_path, max_disp=256), ["b.pfm"], resumable=True)
    assert snapshot(folder) == before
    write_run(folder, other, ["b.pfm"], overwrite=True)
    manifest = json.loads((folder / output_dirs.MANIFEST_NAME).read_text())
    assert manifest["files"] == ["b.pfm"] and manifest["checkpoint_sha256"] == other["checkpoint_sha256"]
    assert sorted(snapshot(folder)) == ["b.pfm", "manifest.json"]


def test_a_folder_given_as_a_relative_path_resumes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first = made_by(tmp_path)
    write_run(Path("out"), first, ["disp_0/a.png"], resumable=True)
    with output_dirs.open_run(Path("out"), "output", first, resumable=True) as run:
        assert run.resumed and run.owns(Path("out") / "disp_0" / "a.png")


def test_a_file_no_recorded_run_wrote_is_never_replaced_without_overwrite(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "a.pfm").write_text("the user's")
    with pytest.raises(OutputDirError, match="a.pfm exists and no recorded run"):
        write_run(folder, made_by(tmp_path), ["a.pfm"])
    assert (folder / "a.pfm").read_text() == "the user's"


@pytest.mark.parametrize("entry", ["../outside.txt", output_dirs.LOCK_NAME, "link/x", "/etc/hostname", 3])
def test_a_manifest_listing_a_path_outside_or_the_lock_is_tampered_and_nothing_is_deleted(tmp_path, entry):
    folder = tmp_path / "out"
    write_run(folder, made_by(tmp_path), ["a.pfm"])
    (tmp_path / "outside.txt").write_text("not the run's")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "x").write_text("not the run's")
    (folder / "link").symlink_to(tmp_path / "elsewhere")
    manifest = json.loads((folder / output_dirs.MANIFEST_NAME).read_text())
    manifest["files"].append(entry)
    (folder / output_dirs.MANIFEST_NAME).write_text(json.dumps(manifest))
    before, outside = snapshot(folder), snapshot(tmp_path / "elsewhere")
    with pytest.raises(OutputDirError, match="the manifest was edited or corrupted; nothing was deleted"):
        write_run(folder, made_by(tmp_path, b"weights B"), ["b.pfm"], overwrite=True)
    assert snapshot(folder) == before and snapshot(tmp_path / "elsewhere") == outside
    assert (tmp_path / "outside.txt").read_text() == "not the run's"


def test_a_symlink_among_the_outputs_is_refused_clearly(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    (tmp_path / "target.pfm").write_text("elsewhere")
    (folder / "a.pfm").symlink_to(tmp_path / "target.pfm")
    with pytest.raises(OutputDirError, match=r"a.pfm is a symbolic link .*remove the link"):
        write_run(folder, made_by(tmp_path), ["a.pfm"], overwrite=True)
    assert (tmp_path / "target.pfm").read_text() == "elsewhere"


def test_orphan_temporaries_of_dead_processes_are_removed_live_ones_kept(tmp_path):
    folder = tmp_path / "out"
    (folder / "disp_0").mkdir(parents=True)
    dead, live = dead_pid(), os.getpid()
    orphans = [folder / f".a.pfm.{dead}.k2j_x9.tmp", folder / "disp_0" / f".b.png.{dead}.tmp",
               folder / f".seq_disp.{dead}.partial.mp4"]
    kept = [folder / f".a.pfm.{live}.abc.tmp", folder / "notes.tmp"]
    for path in orphans + kept:
        path.write_bytes(b"x")
    write_run(folder, made_by(tmp_path), ["a.pfm"])
    assert not any(p.exists() for p in orphans) and all(p.exists() for p in kept)


def test_a_file_target_refuses_an_unrelated_file_and_a_folder(tmp_path):
    target = tmp_path / "model.onnx"
    target.write_bytes(b"the user's model")
    producer = made_by(tmp_path)
    with pytest.raises(OutputDirError, match="already exists and has no model.onnx.manifest.json"):
        with output_dirs.open_run(target, "output", producer, is_file=True):
            pass
    with output_dirs.open_run(target, "output", producer, is_file=True, overwrite=True):
        target.write_bytes(b"exported")
    with output_dirs.open_run(target, "output", producer, is_file=True):  # the same producer replaces its file
        target.write_bytes(b"exported again")
    with pytest.raises(OutputDirError, match="another producer"):
        with output_dirs.open_run(target, "output", made_by(tmp_path, b"weights B"), is_file=True):
            pass
    target.write_bytes(b"edited by hand")  # no longer the file its manifest describes
    with pytest.raises(OutputDirError, match="already exists and has no"):
        with output_dirs.open_run(target, "output", producer, is_file=True):
            pass
    with pytest.raises(OutputDirError, match="is a folder"):
        with output_dirs.open_run(tmp_path, "output", producer, is_file=True):
            pass


def test_checkpoint_io_writes_in_the_checkpoint_folder_and_keeps_the_old_file_on_failure(tmp_path, monkeypatch):
    from stereo.training.checkpoint_io import AtomicCheckpointIO

    monkeypatch.setenv("TMPDIR", str(tmp_path / "elsewhere"))
    io = AtomicCheckpointIO()
    path = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"global_step": 1, "state_dict": {"model.w": torch.ones(2)}}, path)
    assert io.load_checkpoint(path)["global_step"] == 1
    before = path.read_bytes()

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("serialisation fails half-way")

    with pytest.raises(RuntimeError, match="half-way"):
        io.save_checkpoint({"global_step": 2, "bad": Unpicklable()}, path)
    assert path.read_bytes() == before and sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]


def test_a_manifest_another_tool_wrote_is_never_used_to_delete(tmp_path):
    folder = tmp_path / "dataset"
    folder.mkdir()
    (folder / "train.csv").write_text("the user's data")
    (folder / output_dirs.MANIFEST_NAME).write_text(json.dumps({"name": "my dataset", "files": ["train.csv"]}))
    before = snapshot(folder)
    with pytest.raises(OutputDirError, match="was not written by test .*never used to delete"):
        write_run(folder, made_by(tmp_path), ["a.pfm"], overwrite=True)
    assert snapshot(folder) == before


def test_a_killed_runs_unrecorded_files_and_a_users_file_in_its_folders_are_kept_and_named(tmp_path, capsys):
    folder = tmp_path / "run"
    producer = made_by(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        with output_dirs.open_run(folder, "paths.output_dir", producer, resumable=True) as run:
            run.own_folders([folder / "checkpoints", folder / "tensorboard"])
            run.record_written(folder / "checkpoints" / "last.ckpt", _write(folder / "checkpoints" / "last.ckpt"))
            _write(folder / "tensorboard" / "version_0" / "events.1")  # a logger's file, not yet recorded
            raise KeyboardInterrupt
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "keep").write_text("not the run's")
    (folder / "tensorboard" / "link").symlink_to(tmp_path / "elsewhere")
    (folder / "checkpoints" / "notes.txt").write_text("the user's")
    capsys.readouterr()
    with output_dirs.open_run(folder, "paths.output_dir", producer):  # not resuming: redone
        assert not (folder / "checkpoints" / "last.ckpt").exists()  # recorded as written: deleted
    kept = capsys.readouterr().err
    assert kept.count("\n") == 1 and "kept 3 file(s)" in kept
    assert "checkpoints/notes.txt" in kept and "tensorboard/version_0/events.1" in kept and "tensorboard/link" in kept
    assert (folder / "checkpoints" / "notes.txt").read_text() == "the user's"
    assert (folder / "tensorboard" / "version_0" / "events.1").exists()
    assert (tmp_path / "elsewhere" / "keep").read_text() == "not the run's"


def _write(path: Path, data: bytes = b"written by the run") -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return data


def test_the_manifest_records_size_and_hash_and_overwrite_deletes_only_unchanged_files(tmp_path, capsys):
    folder = tmp_path / "out"
    write_run(folder, made_by(tmp_path), ["a.pfm", "b.pfm", "sub/c.pfm"])
    manifest = json.loads((folder / output_dirs.MANIFEST_NAME).read_text())
    assert manifest["hashes"]["a.pfm"] == {"size": len((folder / "a.pfm").read_bytes()),
                                          "sha256": output_dirs.file_sha256(folder / "a.pfm")}
    (folder / "b.pfm").write_text("edited by the user")
    capsys.readouterr()
    write_run(folder, made_by(tmp_path, b"weights B"), ["d.pfm"], overwrite=True)
    err = capsys.readouterr().err
    assert "kept 1 file(s)" in err and "changed since the earlier run wrote them: b.pfm" in err
    assert sorted(snapshot(folder)) == ["b.pfm", "d.pfm", "manifest.json"]  # sub/ went with its file
    assert (folder / "b.pfm").read_text() == "edited by the user"


def test_a_manifest_without_hashes_deletes_nothing_and_says_so(tmp_path, capsys):
    folder = tmp_path / "out"
    write_run(folder, made_by(tmp_path), ["a.pfm"])
    manifest = json.loads((folder / output_dirs.MANIFEST_NAME).read_text())
    del manifest["hashes"]  # as an older version wrote it
    manifest["files"].append("notes.txt")
    (folder / output_dirs.MANIFEST_NAME).write_text(json.dumps(manifest))
    (folder / "notes.txt").write_text("the user's")
    before = snapshot(folder)
    capsys.readouterr()
    write_run(folder, made_by(tmp_path, b"weights B"), ["b.pfm"], overwrite=True)
    err = capsys.readouterr().err
    assert "no size and hash recorded" in err and "a.pfm, notes.txt" in err
    assert {k: v for k, v in snapshot(folder).items() if k in ("a.pfm", "notes.txt")} == \
        {k: v for k, v in before.items() if k in ("a.pfm", "notes.txt")}


def test_a_manifest_edited_to_list_a_users_file_and_folder_deletes_neither(tmp_path, capsys):
    """Only files whose size and sha256 are those recorded when the run wrote them are deleted; a listed
    folder holding a user's file stays; the kept files are named in one line."""
    folder = tmp_path / "out"
    write_run(folder, made_by(tmp_path), ["a.pfm"])
    (folder / "notes.txt").write_text("the user's")
    _write(folder / "mine" / "data.bin", b"the user's data")
    manifest = json.loads((folder / output_dirs.MANIFEST_NAME).read_text())
    manifest["files"] += ["notes.txt", "mine/data.bin"]
    manifest["folders"] = ["mine"]
    (folder / output_dirs.MANIFEST_NAME).write_text(json.dumps(manifest))
    users = {k: v for k, v in snapshot(folder).items() if k in ("notes.txt", "mine/data.bin")}
    capsys.readouterr()
    write_run(folder, made_by(tmp_path, b"weights B"), ["a.pfm"], overwrite=True)
    kept = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(kept) == 1 and "kept 2 file(s)" in kept[0] and "mine/data.bin, notes.txt" in kept[0], kept
    assert "no size and hash recorded for them" in kept[0]
    assert {k: v for k, v in snapshot(folder).items() if k in ("notes.txt", "mine/data.bin")} == users
    assert json.loads((folder / output_dirs.MANIFEST_NAME).read_text())["files"] == ["a.pfm"]


def test_a_run_that_fails_before_writing_a_result_leaves_nothing_behind(tmp_path):
    folder = tmp_path / "out"
    with pytest.raises(ValueError):
        with output_dirs.open_run(folder, "output_dir", made_by(tmp_path)) as run:
            run.plan([folder / ".hydra" / "config.yaml"])
            run.save("running")
            _write(folder / ".hydra" / "config.yaml")
            raise ValueError("refused")
    assert not folder.exists()  # a corrected rerun (another producer) is not refused
    write_run(folder, made_by(tmp_path, b"weights B"), ["a.pfm"])
    with pytest.raises(ValueError):  # a run that wrote a result records its failure
        with output_dirs.open_run(folder, "output_dir", made_by(tmp_path, b"weights B")) as run:
            run.plan([folder / "b.pfm"])
            _write(folder / "b.pfm")
            raise ValueError("failed half-way")
    assert json.loads((folder / output_dirs.MANIFEST_NAME).read_text())["status"] == "failed"


def test_a_full_disk_at_the_end_writes_the_status_in_place_and_says_so(tmp_path, monkeypatch):
    import errno

    folder = tmp_path / "out"
    real = output_dirs.manifest.atomic_write
    with pytest.raises(OutputDirError, match=r"the disk is full.*status 'complete', written in place"):
        with output_dirs.open_run(folder, "output_dir", made_by(tmp_path)) as run:
            run.plan([folder / "a.pfm"])
            _write(folder / "a.pfm")

            def full(path, data):
                raise OSError(errno.ENOSPC, "No space left on device")

            monkeypatch.setattr(output_dirs.manifest, "atomic_write", full)
    monkeypatch.setattr(output_dirs.manifest, "atomic_write", real)
    assert json.loads((folder / output_dirs.MANIFEST_NAME).read_text())["status"] == "complete"


def test_a_nested_setting_difference_names_the_key_path_and_both_values():
    earlier = {"settings": {"optim": {"optimizer": {"_target_": "torch.optim.AdamW" + "x" * 60, "lr": 0.001}}}}
    now = {"settings": {"optim": {"optimizer": {"_target_": "torch.optim.AdamW" + "x" * 60, "lr": 0.0005}}}}
    assert output_dirs.differences(earlier, now) == ["optim.optimizer.lr=0.001 there, 0.0005 now"]
    assert output_dirs.differences({"settings": {"a": [1, 2]}}, {"settings": {"a": [1, 3], "b": 1}}) == \
        ["a[1]=2 there, 3 now", "b=(not set) there, 1 now"]


def test_lightning_may_delete_only_an_unchanged_checkpoint_the_run_wrote(tmp_path, capsys):
    """AtomicCheckpointIO records each checkpoint as written; Lightning's rotation (remove_checkpoint)
    deletes through the run's record, whatever path a resumed checkpoint's state names."""
    from stereo.training.checkpoint_io import AtomicCheckpointIO

    folder, victim = tmp_path / "run", tmp_path / "victim.txt"
    victim.write_bytes(b"precious")
    with output_dirs.open_run(folder, "paths.output_dir", made_by(tmp_path)) as run:
        io = AtomicCheckpointIO(run)
        ours = folder / "checkpoints" / "best.ckpt"
        io.save_checkpoint({"global_step": 1}, ours)
        users = folder / "checkpoints" / "mine.ckpt"
        users.write_bytes(b"the user's")
        for path in (f"{folder / 'checkpoints'}/../../victim.txt", users, victim, folder):
            io.remove_checkpoint(path)
        assert victim.read_bytes() == b"precious" and users.read_bytes() == b"the user's"
        assert capsys.readouterr().err.count("kept, not deleted for Lightning's checkpoint rotation") == 4
        io.remove_checkpoint(ours)
        assert not ours.exists() and "checkpoints/best.ckpt" not in run.files


def test_a_resume_checkpoints_callback_state_naming_paths_outside_the_run_is_not_restored(tmp_path):
    from stereo.training.checkpoint_io import drop_foreign_paths

    folder = tmp_path / "run"
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "checkpoints" / "out").symlink_to(tmp_path)
    inside = str(folder / "checkpoints" / "best.ckpt")

    def state(**changes):
        return {"dirpath": str(folder / "checkpoints"), "best_model_path": inside, "last_model_path": "",
                "kth_best_model_path": inside, "best_k_models": {inside: torch.tensor(1.0)},
                "best_model_score": torch.tensor(1.0), "kth_value": torch.tensor(1.0), "current_score": None, **changes}

    hostile = {"dotdot": state(last_model_path=f"{folder / 'checkpoints'}/../../victim.txt"),
               "absolute": state(best_k_models={"/etc/hostname": torch.tensor(0.0)}),
               "through a link": state(kth_best_model_path=str(folder / "checkpoints" / "out" / "victim.txt")),
               "another folder": state(dirpath=str(tmp_path)), "not a path": state(best_model_path=3),
               "not a score": state(best_model_score="low"), "not a mapping": [1]}
    checkpoint = {"callbacks": {"good": state(), **hostile}}
    assert sorted(drop_foreign_paths(checkpoint, "last.ckpt", folder)) == sorted(hostile)
    assert list(checkpoint["callbacks"]) == ["good"]
