"""stereo.export: overwrite=true replaces an unrelated file; dead exports' temporaries go (what every command's output
shares: test_output_folders.py)."""

from __future__ import annotations

import json
import subprocess
import sys

FAST = ("ckpt_path=tiny.ckpt", "format=weights", "verify=false")


def export(run_command, *overrides):
    return run_command("export", *FAST, *overrides)


def test_overwrite_replaces_an_unrelated_file_and_records_the_export(workspace, run_command):
    (workspace / "model.pt").write_bytes(b"the user's file")  # refused without overwrite: test_output_folders.py
    assert export(run_command, "output=model.pt", "overwrite=true").status == 0
    manifest = json.loads((workspace / "model.pt.manifest.json").read_text())
    assert manifest["command"] == "stereo.export" and manifest["settings"]["format"] == "weights"


def test_a_killed_exports_temporary_file_is_removed_by_the_next_run(workspace, run_command):
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout)
    orphan = workspace / f".model.pt.{dead}.tmp"
    orphan.write_bytes(b"half an export")
    assert export(run_command, "output=model.pt").status == 0
    assert not orphan.exists()
    assert sorted(p.name for p in workspace.iterdir() if p.name.startswith(".")) == []
