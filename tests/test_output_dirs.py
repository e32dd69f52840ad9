"""Output folders: one run at a time, earlier results never mixed in, checkpoints written atomically."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from stereo import output_dirs
from stereo.cli import OutputDirError


def test_lock_is_exclusive_released_and_a_dead_owners_lock_is_taken_over(tmp_path):
    folder = tmp_path / "out"
    with output_dirs.claim(folder):
        with pytest.raises(OutputDirError, match=f"output_dir={folder} is in use by another run .pid {os.getpid()}"):
            with output_dirs.claim(folder):
                pass
    assert not (folder / output_dirs.LOCK_NAME).exists()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (folder / output_dirs.LOCK_NAME).write_text(json.dumps({"host": os.uname().nodename, "pid": int(dead.stdout)}))
    with output_dirs.claim(folder):  # the owner is gone: the stale lock is replaced
        owner = json.loads((folder / output_dirs.LOCK_NAME).read_text())
        assert owner["pid"] == os.getpid()


def test_overwrite_deletes_only_what_the_earlier_manifest_lists(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "a_disp.pfm").write_bytes(b"old")
    (folder / "notes.txt").write_text("the user's own file")
    output_dirs.write_manifest(folder, {"command": "test"}, [folder / "a_disp.pfm"], "complete")
    with pytest.raises(OutputDirError, match="overwrite=true"):
        output_dirs.clear_earlier_run(folder, overwrite=False, command="test")
    assert (folder / "a_disp.pfm").exists()
    (folder / output_dirs.MANIFEST_NAME).write_text(json.dumps({"command": "test", "files": ["a_disp.pfm", "../outside.txt"]}))
    (tmp_path / "outside.txt").write_text("not the run's")
    output_dirs.clear_earlier_run(folder, overwrite=True, command="test")
    assert not (folder / "a_disp.pfm").exists() and not (folder / output_dirs.MANIFEST_NAME).exists()
    assert (folder / "notes.txt").exists() and (tmp_path / "outside.txt").exists()


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


@pytest.mark.slow
def test_inference_manifest_lists_every_file_and_overwrite_replaces_the_earlier_run(tmp_path):
    """formats=pfm (one name, not a list) is accepted; a second run is refused, overwrite=true replaces."""
    import cv2
    import hydra
    import numpy as np

    from inference_checkpoints import write_our_checkpoint
    from stereo.config import CONFIG_DIR
    from stereo.infer import run

    checkpoint = write_our_checkpoint(tmp_path / "tiny.ckpt")
    image = cv2.GaussianBlur(np.random.default_rng(0).integers(0, 256, (64, 96, 3), dtype=np.uint8), (3, 3), 0)
    for name in ("a", "b"):
        cv2.imwrite(str(tmp_path / f"{name}_left.png"), image)
        cv2.imwrite(str(tmp_path / f"{name}_right.png"), np.roll(image, -3, axis=1))

    def infer(stem, *extra):
        with hydra.initialize_config_dir(version_base="1.3", config_dir=CONFIG_DIR):
            cfg = hydra.compose("infer", overrides=[f"ckpt_path={checkpoint}", f"output_dir={tmp_path / 'out'}",
                                                    f"left={tmp_path}/{stem}_left.png", f"right={tmp_path}/{stem}_right.png",
                                                    "formats=pfm", "swap_check=false", *extra])
        return run(cfg)

    infer("a")
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["files"] == ["a_left_disp.pfm"]
    assert manifest["config"]["formats"] == "pfm" and manifest["checkpoint"] == str(checkpoint.resolve())
    with pytest.raises(OutputDirError, match="earlier run"):
        infer("b")
    infer("b", "overwrite=true")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["b_left_disp.pfm", "manifest.json"]


def test_a_manifest_another_tool_wrote_is_never_used_to_delete(tmp_path):
    folder = tmp_path / "dataset"
    folder.mkdir()
    (folder / "train.csv").write_text("the user's data")
    (folder / output_dirs.MANIFEST_NAME).write_text(json.dumps({"name": "my dataset", "files": ["train.csv"]}))
    with pytest.raises(OutputDirError, match="did not write"):
        output_dirs.clear_earlier_run(folder, overwrite=True, command="stereo.infer")
    assert (folder / "train.csv").exists() and (folder / output_dirs.MANIFEST_NAME).exists()
