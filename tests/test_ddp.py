"""Distributed code paths on CPU: a 2-process gloo DDP fit, the evaluation shards and the per-process GPU
choice of distributed evaluation (torchrun evaluation itself runs once, as the GPU kit's check:
tests/test_bench_gpu.py)."""

from __future__ import annotations

import csv
import subprocess
import sys

import pytest
import torch


@pytest.mark.slow
def test_two_process_gloo_ddp_fit_takes_synchronised_steps_and_validates_each_frame_once(train_overrides, tmp_path):
    from stereo.data.synthetic import generate

    val_root = tmp_path / "val3"  # 3 frames on 2 processes: a padding sampler would score one twice
    generate(val_root, num_train=0, num_test=3, height=256, width=256, max_disp=32, seed=1, progress=False)
    run_dir = tmp_path / "ddp"
    overrides = train_overrides(
        "model=psmnet_basic", "model.max_disp=16", "trainer=ddp_cpu", "trainer.max_steps=2",
        f"data.val.root={val_root}", "data.batch_size=2", "logger=csv", "callbacks=none",
        f"paths.output_dir={run_dir}",
    )
    done = subprocess.run([sys.executable, "-m", "stereo.train", *overrides, f"hydra.run.dir={run_dir}"],
                          capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-4000:]
    assert "MEMBER: 2/2" in done.stderr + done.stdout  # Lightning launched and joined the second process
    rows = list(csv.DictReader(open(run_dir / "csv" / "metrics.csv")))
    frames = [float(r["val/frames"]) for r in rows if r.get("val/frames")]
    assert frames and all(count == 3 for count in frames), frames


def test_distributed_evaluation_selects_each_process_gpu_before_starting_nccl(monkeypatch):
    """torchrun rank 1 of 2 on a CUDA machine (CUDA and the process group faked): the GPU is set first."""
    import torch.distributed as dist

    from stereo.evaluation import runner

    calls = []
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: calls.append(("set_device", torch.device(device))))
    monkeypatch.setattr(dist, "is_initialized", lambda: any(c[0] == "init" for c in calls))
    monkeypatch.setattr(dist, "init_process_group", lambda backend: calls.append(("init", backend)))
    monkeypatch.setattr(dist, "get_rank", lambda: 1)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    assert runner.distributed_rank() == (1, 2)
    assert calls == [("set_device", torch.device("cuda", 1)), ("init", "nccl")]


def test_evaluation_shards_cover_each_sample_once_without_padding():
    from stereo.data.datamodule import ShardSampler

    data = list(range(5))
    shards = [list(ShardSampler(data, 3, rank)) for rank in range(3)]
    assert shards == [[0, 3], [1, 4], [2]] and [len(ShardSampler(data, 3, r)) for r in range(3)] == [2, 2, 1]
    with pytest.raises(ValueError, match="2 samples, fewer than the 3 processes"):
        ShardSampler([0, 1], 3, 0)
