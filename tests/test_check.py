"""The Scene Flow checker: counts against the published numbers, missing and unreadable files, exit codes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sceneflow_fakes import build_tree, full_sequences, install_virtual_tree, small_sequences
from conftest import compose
from stereo.data.check import check_sceneflow, run
from stereo.data.io import write_image

VIRTUAL_ROOT = Path("/virtual/sceneflow")


def test_full_download_passes(monkeypatch, capsys):
    install_virtual_tree(monkeypatch, VIRTUAL_ROOT, full_sequences(), "merged", passes=("final",), right_disparity=True)
    assert run(compose("check", [f"root={VIRTUAL_ROOT}"])) == 0  # passes default to those on disk: final only here
    output = capsys.readouterr().out
    assert "OK: matches the published standard split" in output and "clean" not in output
    for line in ("final  train  total              35,454              35,454", "final  test   total               4,370               4,370",
                 "final  train  flyingthings3d     22,390    22,500    22,390  ok"):
        assert line in output


def test_both_passes_are_checked_when_both_are_on_disk(tmp_path):
    sequences = {**small_sequences(), "driving": [], "monkaa": []}
    for pass_ in ("clean", "final"):
        build_tree(tmp_path, sequences, "separate", right_disparity=True, pass_=pass_)
    (tmp_path / "FlyingThings3D/frames_finalpass/TEST/A/0001/right/0007.png").unlink()
    report = check_sceneflow(tmp_path, subsets=["flyingthings3d"])
    assert [row[:4] for row in report.rows] == [("clean", "train", "flyingthings3d", 12), ("clean", "test", "flyingthings3d", 12),
                                                ("final", "train", "flyingthings3d", 12), ("final", "test", "flyingthings3d", 11)]
    assert len(report.problems) == 1 and "finalpass test: " in report.problems[0] and "0007.png: missing right image" in report.problems[0]


def test_missing_files_and_count_mismatch_fail(monkeypatch, capsys):
    sequences = full_sequences()
    sequences["monkaa"][0] = (sequences["monkaa"][0][0], sequences["monkaa"][0][1][:-5])  # five frames short
    install_virtual_tree(monkeypatch, VIRTUAL_ROOT, sequences, "separate", right_disparity=False)
    assert run(compose("check", [f"root={VIRTUAL_ROOT}", "passes=clean"])) == 1
    output = capsys.readouterr().out
    assert "monkaa              8,659     8,659     8,664  MISMATCH (-5)" in output
    assert "missing right disparity" in output and "(limit=0 lists all)" in output and "FAILED" in output


def test_subsets_restrict_the_check_and_absent_subsets_are_reported(tmp_path, capsys):
    build_tree(tmp_path, {**small_sequences(), "driving": [], "monkaa": []}, "separate", right_disparity=True)
    report = check_sceneflow(tmp_path, subsets=["flyingthings3d"])
    assert not report.problems and [row[:4] for row in report.rows] == [("clean", "train", "flyingthings3d", 12),
                                                                          ("clean", "test", "flyingthings3d", 12)]
    assert not report.ok  # far from the published counts
    report = check_sceneflow(tmp_path)
    assert any("no driving cleanpass frames found" in problem for problem in report.problems)


def test_verify_reads_every_file_and_names_the_unreadable(tmp_path, capsys):
    sequences = {"flyingthings3d": [(("TEST", "A", "0001"), ["0006", "0007"])], "driving": [], "monkaa": []}
    build_tree(tmp_path, sequences, "separate", right_disparity=True, content=(4, 6))
    bad = tmp_path / "FlyingThings3D/disparity/TEST/A/0001/right/0007.pfm"
    bad.write_bytes(bad.read_bytes()[:30])
    write_image(tmp_path / "FlyingThings3D/frames_cleanpass/TEST/A/0001/right/0006.png", np.zeros((4, 5, 3), np.uint8))
    (tmp_path / "FlyingThings3D/disparity/TEST/A/0001/right/0006.pfm").unlink()  # still verified without it
    report = check_sceneflow(tmp_path, subsets=["flyingthings3d"], verify=True, workers=1)
    assert len(report.problems) == 1 and "right/0006.pfm: missing right disparity" in report.problems[0]
    assert len(report.unreadable) == 2
    unreadable = sorted(report.unreadable)
    assert "flyingthings3d/TEST/A/0001/0006: " in unreadable[0] and "right image is 5x4" in unreadable[0]
    assert "0007.pfm: PFM header says 6x4x1" in unreadable[1]


def test_argument_errors_exit_2_with_one_line(capsys, monkeypatch):
    """Through the command itself (Hydra's parser, the one-line error convention of stereo.cli)."""
    import sys

    from stereo.data.check import main

    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    for argv, message in ((["passes=clean"], "config key root"), (["root=x", "passes=dirty"], "passes: 'dirty' is not one of")):
        monkeypatch.setattr(sys, "argv", ["check", *argv])
        with pytest.raises(SystemExit) as exit_info:
            main()
        assert exit_info.value.code == 2
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert line.startswith("error: ") and message in line
