"""A training process killed with SIGKILL after writing a checkpoint resumes at the same global step."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import compose

from stereo.models import load_model
from stereo.train import train, validate_resume_checkpoint


@pytest.mark.slow
def test_kill_9_then_resume_continues_step_count_and_optimizer_state(train_overrides, tmp_path):
    overrides = train_overrides(
        "model=psmnet_basic", "model.max_disp=16", "trainer.max_steps=50", "trainer.limit_val_batches=0",
        "callbacks.last_checkpoint.every_n_train_steps=1", "logger=none",
    )
    run_dir = Path(next(o.split("=", 1)[1] for o in overrides if o.startswith("paths.output_dir=")))
    last = run_dir / "checkpoints" / "last.ckpt"
    process = subprocess.Popen(
        [sys.executable, "-m", "stereo.train", *overrides, f"hydra.run.dir={run_dir}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        deadline = time.monotonic() + 240
        while not last.is_file():
            assert process.poll() is None, process.stderr.read().decode()[-3000:]
            assert time.monotonic() < deadline, "no checkpoint within 240 s"
            time.sleep(0.2)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    # Lightning writes checkpoints atomically: even after kill -9 the file is complete.
    validate_resume_checkpoint(last)
    killed = torch.load(last, map_location="cpu", weights_only=True)  # plain containers only (docs/training.md#checkpoints)
    killed_step = killed["global_step"]
    assert killed_step >= 1
    assert killed["hyper_parameters"]["model_config"]["_target_"] == "stereo.models.StereoNetwork"
    assert all(key.startswith("model.") for key in killed["state_dict"])
    assert load_model(last).max_disp == 16

    resumed = train(compose("train", [*overrides, f"ckpt_path={last}", f"trainer.max_steps={killed_step + 1}",
                                      f"paths.output_dir={tmp_path / 'resumed'}"]))
    assert resumed["global_step"] == killed_step + 1  # one more step, not a restart from 0
    final = torch.load(resumed["checkpoint"], map_location="cpu", weights_only=True)
    adam_steps = {int(state["step"]) for state in final["optimizer_states"][0]["state"].values()}
    assert adam_steps == {killed_step + 1}, "Adam's moments were restored, not re-initialised"
