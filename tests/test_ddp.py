"""Distributed code paths on CPU: a 2-process gloo DDP fit, and torchrun evaluation counting each sample once."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch


@pytest.mark.slow
def test_two_process_gloo_ddp_fit_takes_synchronised_steps(train_overrides, tmp_path):
    run_dir = tmp_path / "ddp"
    overrides = train_overrides(
        "model=psmnet_basic", "model.max_disp=16", "trainer=ddp_cpu", "trainer.max_steps=2",
        "trainer.limit_val_batches=1", "data.batch_size=2", "logger=none", f"paths.output_dir={run_dir}",
    )
    done = subprocess.run([sys.executable, "-m", "stereo.train", *overrides, f"hydra.run.dir={run_dir}"],
                          capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-4000:]
    assert "MEMBER: 2/2" in done.stderr + done.stdout  # Lightning launched and joined the second process
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert checkpoint["global_step"] == 2


@pytest.mark.slow
def test_torchrun_evaluation_counts_every_sample_exactly_once(synthetic_root, tiny_checkpoint, tmp_path):
    out = tmp_path / "eval"
    # 3 processes over the 4 TRAIN pairs: a padding DistributedSampler would score 6 samples (2 twice).
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "3", "--master_port", "29517",
               "-m", "stereo.evaluate", f"ckpt_path={tiny_checkpoint}", "data.generate=null",
               f"data.val.root={synthetic_root}", f"data.train.root={synthetic_root}", "data.val.split=train",
               "num_workers=0", "export.max_images=0", f"paths.output_dir={out}", f"hydra.run.dir={out}"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-4000:]
    record = json.loads((out / "metrics.json").read_text())
    rows = list(csv.DictReader(open(out / "per_image.csv")))
    assert record["world_size"] == 3 and record["count"] == 4
    assert len(rows) == 4 and len({r["name"] for r in rows}) == 4
    assert not (out / "disparity").exists()
