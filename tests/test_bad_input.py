"""The bad-input matrix, through the real commands: one clear line, exit status 2, nothing lost.

Each case runs ``python -m stereo.<command>`` in a subprocess (Hydra, the entry-point wrapper and the
exit status are part of what is tested) and asserts: status 2, exactly one ``error:`` line on stderr
naming the file or option, no traceback, and that files already on disk are unchanged.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from hostile_checkpoints import hostile_configs, make_victim, untouched, write_hostile_checkpoint
from inference_checkpoints import write_our_checkpoint
from stereo.cli import EXIT_USER_ERROR

REPO = Path(__file__).resolve().parents[1]


def run_cli(command: str, *overrides: str, cwd: Path, full_error: bool = False) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    if full_error:
        env["HYDRA_FULL_ERROR"] = "1"
    return subprocess.run([sys.executable, "-m", f"stereo.{command}", *overrides], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def error_line(result: subprocess.CompletedProcess, *names: str) -> str:
    """The single ``error:`` line; asserts status 2, no traceback and every name in the line."""
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == EXIT_USER_ERROR, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and len(lines) == 1, result.stderr[-3000:]
    for name in names:
        assert name in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """A folder with a tiny checkpoint and a small valid pair (64x96)."""
    root = tmp_path_factory.mktemp("bad_input")
    write_our_checkpoint(root / "tiny.ckpt")
    rng = np.random.default_rng(0)
    left = cv2.GaussianBlur(rng.integers(0, 256, (64, 96, 3), dtype=np.uint8), (3, 3), 0)
    cv2.imwrite(str(root / "left.png"), left)
    cv2.imwrite(str(root / "right.png"), np.roll(left, -3, axis=1))
    return root


def infer(workspace: Path, *overrides: str, full_error: bool = False) -> subprocess.CompletedProcess:
    base = {"ckpt_path": "tiny.ckpt", "left": "left.png", "right": "right.png", "output_dir": "out", "formats": "[pfm]"}
    base.update(dict(o.split("=", 1) for o in overrides))
    return run_cli("infer", *(f"{k}={v}" for k, v in base.items()), cwd=workspace, full_error=full_error)


# --- inference inputs ----------------------------------------------------------------------------


def test_missing_image(workspace):
    error_line(infer(workspace, "right=missing.png"), "missing.png", "not found")


def test_corrupt_image(workspace):
    (workspace / "corrupt.png").write_bytes((workspace / "right.png").read_bytes()[:200])
    error_line(infer(workspace, "right=corrupt.png", "output_dir=out_corrupt"), "corrupt.png")
    assert not any((workspace / "out_corrupt").glob("*.pfm"))


def test_random_bytes_checkpoint_does_not_suggest_weights_only_false(workspace):
    (workspace / "random.ckpt").write_bytes(np.random.default_rng(1).bytes(4096))
    line = error_line(infer(workspace, "ckpt_path=random.ckpt"), "random.ckpt", "not a PyTorch checkpoint")
    assert "weights_only" not in line


def test_unknown_output_format_is_named(workspace):
    error_line(infer(workspace, "formats=[pfm,bogus]"), "'bogus'")


def test_missing_calib_names_the_option(workspace):
    error_line(infer(workspace, "formats=[depth]", "calib=nowhere/calib.txt"), "calib=nowhere/calib.txt")


def test_missing_required_option(workspace):
    result = run_cli("infer", "left=left.png", "right=right.png", cwd=workspace)
    error_line(result, "ckpt_path")


def test_output_dir_that_is_a_file(workspace):
    (workspace / "taken").write_text("keep me\n")
    error_line(infer(workspace, "output_dir=taken"), "output_dir=taken", "not a folder")
    assert (workspace / "taken").read_text() == "keep me\n"


def test_output_dir_in_use_by_a_running_inference(workspace):
    folder = workspace / "busy"
    folder.mkdir()
    (folder / "f1_disp.pfm").write_bytes(b"earlier result")
    lock = folder / ".stereo-run.lock"  # owned by this (live) test process
    lock.write_text(json.dumps({"host": os.uname().nodename, "pid": os.getpid(), "started": "now"}))
    error_line(infer(workspace, "output_dir=busy"), "output_dir=busy", "in use by another run", str(os.getpid()))
    assert (folder / "f1_disp.pfm").read_bytes() == b"earlier result" and lock.exists()


def test_output_dir_with_an_earlier_run_is_refused(workspace):
    folder = workspace / "earlier"
    folder.mkdir()
    (folder / "left_disp.pfm").write_bytes(b"earlier result")
    (folder / "manifest.json").write_text(json.dumps({"command": "stereo.infer", "status": "complete", "files": ["left_disp.pfm"]}))
    error_line(infer(workspace, "output_dir=earlier"), "output_dir=earlier", "overwrite=true")
    assert (folder / "left_disp.pfm").read_bytes() == b"earlier result"


def test_full_traceback_on_request(workspace):
    result = infer(workspace, "right=missing.png", full_error=True)
    assert result.returncode != 0 and "Traceback" in result.stderr and "missing.png" in result.stderr


# --- hostile checkpoints through every command --------------------------------------------------


@pytest.mark.parametrize("command", ["infer", "evaluate", "export", "train"])
def test_hostile_checkpoint_changes_nothing_through_each_command(workspace, tmp_path, command):
    victim, marker, payload = make_victim(tmp_path)
    checkpoint = write_hostile_checkpoint(tmp_path / "hostile.ckpt",
                                          hostile_configs(victim, marker, payload)["builtins.open"])
    overrides = {
        "infer": ["left=left.png", "right=right.png", f"output_dir={tmp_path / 'out'}"],
        "evaluate": [f"paths.log_dir={tmp_path / 'logs'}"],
        "export": [f"output={tmp_path / 'model.onnx'}"],
        "train": ["trainer=cpu", f"paths.log_dir={tmp_path / 'logs'}"],
    }[command]
    result = run_cli(command, f"ckpt_path={checkpoint}", *overrides, cwd=workspace)
    error_line(result, str(checkpoint), "builtins.open")
    assert untouched(victim, marker)
    assert not (tmp_path / "model.onnx").exists()


@pytest.mark.slow
@pytest.mark.parametrize("attack", ["os.system", "subprocess.run", "torch.load", "nested attention", "pickle"])
def test_every_hostile_checkpoint_kind_through_inference(workspace, tmp_path, attack):
    victim, marker, payload = make_victim(tmp_path)
    checkpoint = (payload if attack == "pickle" else
                  write_hostile_checkpoint(tmp_path / "hostile.ckpt", hostile_configs(victim, marker, payload)[attack]))
    result = run_cli("infer", f"ckpt_path={checkpoint}", "left=left.png", "right=right.png",
                     f"output_dir={tmp_path / 'out'}", cwd=workspace)
    error_line(result, str(checkpoint))
    assert untouched(victim, marker)


# --- evaluation --------------------------------------------------------------------------------


def _eval_cfg(root: Path, out: Path, checkpoint: Path, *extra: str):
    from conftest import compose

    return compose("eval", [f"ckpt_path={checkpoint}", "data.generate=null", f"data.val.root={root}",
                            f"data.train.root={root}", "num_workers=0", f"paths.output_dir={out}",
                            "export.max_images=0", *extra])


def test_evaluation_reads_with_on_error_raise_and_names_the_unreadable_file(synthetic_root, tiny_checkpoint, tmp_path):
    """data.on_error=skip would score a substitute sample twice; evaluation stops at the broken file instead."""
    import shutil

    from stereo.data.io import DataError
    from stereo.evaluate import evaluate

    root = tmp_path / "tree"
    shutil.copytree(synthetic_root, root)
    broken = sorted(p for p in root.rglob("*.png") if "TEST" in p.parts and "left" in p.parts)
    for path in broken:
        path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(DataError) as error:
        evaluate(_eval_cfg(root, tmp_path / "eval", tiny_checkpoint, "data.on_error=skip"))
    assert any(str(path) in str(error.value) for path in broken)
    assert not (tmp_path / "eval" / "metrics.json").exists()


def test_evaluation_refuses_a_folder_with_an_earlier_evaluation(synthetic_root, tiny_checkpoint, tmp_path):
    from stereo.cli import OutputDirError
    from stereo.evaluate import evaluate

    out = tmp_path / "eval"
    out.mkdir()
    (out / "metrics.json").write_text('{"epe": 1.0}\n')
    with pytest.raises(OutputDirError, match="paths.output_dir=.*eval already holds an earlier evaluation"):
        evaluate(_eval_cfg(synthetic_root, out, tiny_checkpoint))
    assert (out / "metrics.json").read_text() == '{"epe": 1.0}\n'


def test_nonfinite_ground_truth_is_reported_per_image_and_in_metrics_json(tmp_path):
    import csv

    import torch

    from stereo.evaluation.runner import evaluate_model

    class Constant(torch.nn.Module):
        max_disp = 32

        def forward(self, left, right):
            return torch.full(left.shape[:1] + left.shape[-2:], 5.0)

    def sample(name, gt_value):
        return {"left": torch.zeros(3, 64, 64), "right": torch.zeros(3, 64, 64), "name": name,
                "disparity": torch.full((64, 64), gt_value), "valid": torch.ones(64, 64, dtype=torch.bool)}

    dataset = [sample("finite", 4.0), sample("all_nan", float("nan"))]
    summary = evaluate_model(Constant(), dataset, "synthetic", tmp_path, export={"max_images": 0})
    rows = {row["name"]: row for row in csv.DictReader(open(tmp_path / "per_image.csv"))}
    assert float(rows["all_nan"]["nonfinite_gt"]) == 64 * 64 and float(rows["finite"]["nonfinite_gt"]) == 0
    record = json.loads((tmp_path / "metrics.json").read_text())
    assert record["nonfinite_gt"] == 64 * 64 and record["nonfinite_gt_images"] == 1 and record["excluded"] == 1
    assert summary["epe"] == pytest.approx(1.0)
    assert not list(tmp_path.glob(".*.tmp")), "atomic writes leave no temporary files"


# --- training run directories and checkpoint names --------------------------------------------


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
        parsed = run_cli("train", *overrides, f"ckpt_path={checkpoint}", "--cfg", "job", cwd=tmp_path)
        assert parsed.returncode == 0 and f"ckpt_path: {checkpoint}" in parsed.stdout, parsed.stderr[-2000:]

    before = {p: p.read_bytes() for p in written}
    refused = run_cli("train", *overrides, f"hydra.run.dir={run_dir}", cwd=tmp_path)
    error_line(refused, f"paths.output_dir={run_dir}", f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}")
    assert {p: p.read_bytes() for p in written} == before

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
