"""The bad-input matrix, through the real commands: one clear line, exit status 2, nothing lost.

Each case calls a command's real ``main()`` in this process (Hydra's parser and composition, the
command-line checks, the entry-point wrapper and the exit status are all part of what runs) with
``sys.argv`` set as the shell would, and asserts: the status, exactly one ``error:`` line on stderr
naming the file or option, no traceback, and the bytes of every file in the affected folders before
and after (:func:`snapshot`). Only the kill -9 tests start subprocesses.
"""

from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest

from inference_checkpoints import write_our_checkpoint
from stereo.cli import EXIT_USER_ERROR


def snapshot(*folders: Path) -> dict[str, bytes | None]:
    """Every file (hidden ones included) under ``folders`` with its bytes; a missing folder maps to None."""
    found: dict[str, bytes | None] = {}
    for folder in folders:
        if not folder.exists():
            found[str(folder)] = None
        elif folder.is_file():
            found[str(folder)] = folder.read_bytes()
        else:
            found.update({str(p): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file() and not p.is_symlink()})
    return found


@dataclass
class Result:
    status: int
    stdout: str
    stderr: str

    def error_line(self, *names: str) -> str:
        """The single ``error:`` line; asserts status 2, no traceback and every name in the line."""
        lines = [line for line in self.stderr.splitlines() if line.startswith("error:")]
        assert self.status == EXIT_USER_ERROR, self.stderr[-3000:]
        assert "Traceback" not in self.stderr and len(lines) == 1, self.stderr[-3000:]
        for name in names:
            assert name in lines[0], lines[0]
        return lines[0]


@pytest.fixture
def run_command(monkeypatch, capsys):
    """``run_command("infer", "key=value", ...)``: the command's ``main()`` as ``python -m stereo.infer`` runs it."""

    def run(command: str, *arguments: str, full_error: bool = False) -> Result:
        module = importlib.import_module(f"stereo.{command}")
        monkeypatch.setattr(sys, "argv", [f"stereo/{command}.py", *arguments])
        if full_error:
            monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
        else:
            monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
        capsys.readouterr()
        try:
            module.main()
            status = 0
        except SystemExit as exit_:
            status = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
        finally:
            monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
        captured = capsys.readouterr()
        return Result(status, captured.out, captured.err)

    return run


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory) -> Path:
    return write_our_checkpoint(tmp_path_factory.mktemp("weights") / "tiny.ckpt")


@pytest.fixture(scope="session")
def other_weights(tmp_path_factory) -> Path:
    """Another checkpoint of the same network (other seed): another producer."""
    return write_our_checkpoint(tmp_path_factory.mktemp("weights_b") / "other.ckpt", seed=1)


def make_pair(folder: Path, weights: Path) -> None:
    """tiny.ckpt (a link to ``weights``) and a small valid pair left.png / right.png (64x96) in ``folder``."""
    os.symlink(weights, folder / "tiny.ckpt")
    rng = np.random.default_rng(0)
    left = cv2.GaussianBlur(rng.integers(0, 256, (64, 96, 3), dtype=np.uint8), (3, 3), 0)
    cv2.imwrite(str(folder / "left.png"), left)
    cv2.imwrite(str(folder / "right.png"), np.roll(left, -3, axis=1))


@pytest.fixture
def workspace(tmp_path, tiny_weights, monkeypatch) -> Path:
    """The current folder of a command, holding :func:`make_pair`'s files."""
    make_pair(tmp_path, tiny_weights)
    monkeypatch.chdir(tmp_path)
    return tmp_path


REPO = Path(__file__).resolve().parents[2]


def run_cli(command: str, *overrides: str, cwd: Path, **popen) -> "subprocess.CompletedProcess | subprocess.Popen":
    """``python -m stereo.<command>`` in a subprocess (for kill -9 and printed shell commands only);
    ``popen`` options start it without waiting."""
    import subprocess

    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    args = [sys.executable, "-m", f"stereo.{command}", *overrides]
    if popen:
        return subprocess.Popen(args, cwd=cwd, env=env, **popen)
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
