"""stereo.export: an unrelated file is never replaced, a folder is refused up front, dead exports' temporaries go."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bad_input.conftest import snapshot

FAST = ("ckpt_path=tiny.ckpt", "format=weights", "verify=false")


def export(run_command, *overrides):
    return run_command("export", *FAST, *overrides)


def test_an_existing_unrelated_file_is_refused_unless_overwrite(workspace, run_command):
    (workspace / "model.pt").write_bytes(b"the user's file")
    export(run_command, "output=model.pt").error_line("output=model.pt", "already exists", "overwrite=true")
    assert (workspace / "model.pt").read_bytes() == b"the user's file"
    assert export(run_command, "output=model.pt", "overwrite=true").status == 0
    manifest = json.loads((workspace / "model.pt.manifest.json").read_text())
    assert manifest["command"] == "stereo.export" and manifest["settings"]["format"] == "weights"


def test_the_same_export_replaces_its_own_file_another_checkpoint_is_refused(workspace, run_command, other_weights):
    assert export(run_command, "output=model.pt").status == 0
    assert export(run_command, "output=model.pt").status == 0
    before = snapshot(workspace / "model.pt", workspace / "model.pt.manifest.json")
    export(run_command, "output=model.pt", f"ckpt_path={other_weights}").error_line("another producer", "sha256")
    assert snapshot(workspace / "model.pt", workspace / "model.pt.manifest.json") == before


def test_a_folder_as_output_is_refused_before_exporting(workspace, run_command):
    (workspace / "models").mkdir()
    export(run_command, "output=models", "ckpt_path=missing.ckpt").error_line("output=models is a folder")
    assert list((workspace / "models").iterdir()) == []


def test_a_killed_exports_temporary_file_is_removed_by_the_next_run(workspace, run_command):
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout)
    orphan = workspace / f".model.pt.{dead}.tmp"
    orphan.write_bytes(b"half an export")
    assert export(run_command, "output=model.pt").status == 0
    assert not orphan.exists()
    assert sorted(p.name for p in workspace.iterdir() if p.name.startswith(".")) == []
