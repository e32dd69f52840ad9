"""Checks of the GPU training path that a machine with a GPU confirms in one run (the GPU kit, bench_gpu.py
beside this file, imports it; so do the tests).

They run on any device, so the test suite exercises the same code on the CPU:

- :func:`training_step_ops` — host reads and host-to-device copies in one training step, by phase
  (expected: none; the non-finite guard's one read per step happens in ``optimizer_step``), and the
  ops of that step without a deterministic CUDA kernel (expected: none);
- :func:`deterministic_fits_match` — two short fits with ``trainer.deterministic=true`` run (no op
  without a deterministic kernel) and end with bit-identical weights;
- :func:`distributed_evaluation` — ``torchrun -m stereo.evaluate`` over several processes scores each
  sample exactly once.
"""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

import torch

from sync_counter import HostSyncCounter, NondeterministicOpCounter

from stereo.training.module import StereoModule

PHASES = ("model forward", "loss and logging", "backward")
REPO_ROOT = Path(__file__).resolve().parents[1]


def build_network(model: str, max_disp: int) -> torch.nn.Module:
    """The network exactly as ``python -m stereo.train model=<model>`` builds it (seeded: same weights each call)."""
    import hydra

    from stereo.config import CONFIG_DIR
    from stereo.models.build import build_training_network

    with hydra.initialize_config_dir(version_base="1.3", config_dir=CONFIG_DIR):
        cfg = hydra.compose("train", overrides=[f"model={model}", f"model.max_disp={max_disp}"])
    torch.manual_seed(0)
    return build_training_network(cfg)


def training_step_ops(
    device: str | torch.device = "cuda",
    model: str = "ea_psmnet",
    max_disp: int = 192,
    batch_size: int = 2,
    size: tuple[int, int] = (256, 512),
    autocast_dtype: torch.dtype | None = None,
) -> dict[str, Any]:
    """One ``StereoModule.training_step`` + backward on ``device`` (after one warm-up step), counted.

    Returns {"host_syncs": {phase: {kind: n}}, "cuda_nondeterministic_ops": {op: n}}. Without a Trainer,
    ``self.log`` returns at once; the logging path is covered by the CPU test that runs the real Trainer
    (tests/test_host_syncs.py). ``autocast_dtype`` wraps the step as ``precision=bf16-mixed`` does.
    """
    device = torch.device(device)
    network = build_network(model, max_disp)
    module = StereoModule(network, optimizer=partial(torch.optim.Adam, lr=1e-3)).to(device).train()
    generator = torch.Generator().manual_seed(0)
    height, width = size
    batch = {
        "left": torch.randn(batch_size, 3, height, width, generator=generator),
        "right": torch.randn(batch_size, 3, height, width, generator=generator),
        "disparity": torch.rand(batch_size, height, width, generator=generator) * (max_disp - 1),
        "valid": torch.ones(batch_size, height, width, dtype=torch.bool),
    }
    batch = {key: value.to(device) for key, value in batch.items()}
    syncs, nondeterministic = HostSyncCounter(), NondeterministicOpCounter()
    network.register_forward_pre_hook(lambda *_: setattr(syncs, "phase", "model forward"))
    network.register_forward_hook(lambda *_: setattr(syncs, "phase", "loss and logging"))

    def step() -> None:
        with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
            loss = module.training_step(batch, 0)
        syncs.phase = "backward"
        loss.backward()
        module.zero_grad(set_to_none=True)
        module._stats_snapshot = module._nonfinite = None  # as optimizer_step leaves them

    step()  # warm-up: one-off initialisation is not a per-step cost
    with syncs, nondeterministic:
        step()
    return {"host_syncs": {phase: dict(syncs.in_phase(phase)) for phase in PHASES},
            "cuda_nondeterministic_ops": dict(nondeterministic.counts)}


def deterministic_fits_match(accelerator: str = "gpu", model: str = "psmnet", steps: int = 2,
                             workdir: str | Path | None = None, max_disp: int = 32,
                             size: tuple[int, int] = (256, 512)) -> dict[str, Any]:
    """Two identical short fits (tiny synthetic data, ``trainer.deterministic=true``): are the weights identical?

    Returns {"identical": bool, "max_abs_diff": float, "tensors": int}. Raises if an op of the training
    path has no deterministic implementation on this device. The process-wide flags the Trainer sets
    for deterministic mode are restored afterwards, so later work in the process runs as before. On
    CUDA, ``CUBLAS_WORKSPACE_CONFIG`` must be set before CUDA starts (scripts/bench_gpu.py sets it).
    """
    import hydra

    from stereo.config import CONFIG_DIR
    from stereo.data.synthetic import generate
    from stereo.train import train

    height, width = size
    flags = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic)
    cublas = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    try:
        with tempfile.TemporaryDirectory() as temp:
            root = Path(workdir or temp)
            data = root / "data"
            generate(data, num_train=4, num_test=2, height=height, width=width, max_disp=max_disp, seed=0,
                     progress=False)
            weights = []
            for run in ("a", "b"):
                overrides = [
                    "data.generate=null", f"data.train.root={data}", f"data.val.root={data}",
                    f"data.crop_size=[{height},{width}]", "data.batch_size=2", "data.num_workers=0",
                    f"model={model}", f"model.max_disp={max_disp}", f"trainer.accelerator={accelerator}",
                    "trainer.devices=1", "trainer.deterministic=true", "trainer.benchmark=false",
                    f"trainer.max_steps={steps}", "trainer.limit_val_batches=0", "logger=none", "callbacks=default",
                    f"paths.log_dir={root / 'logs'}", f"paths.output_dir={root / run}",
                ]
                with hydra.initialize_config_dir(version_base="1.3", config_dir=CONFIG_DIR):
                    cfg = hydra.compose("train", overrides=overrides)
                train(cfg)
                checkpoint = torch.load(root / run / "checkpoints" / "last.ckpt", map_location="cpu",
                                        weights_only=True)
                weights.append(checkpoint["state_dict"])
    finally:
        torch.use_deterministic_algorithms(flags[0], warn_only=flags[1])
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = flags[2], flags[3]
        if cublas is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
        else:
            os.environ["CUBLAS_WORKSPACE_CONFIG"] = cublas
    a, b = weights
    diffs = [(a[k].double() - b[k].double()).abs().max().item() for k in a if a[k].is_floating_point()]
    identical = a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    return {"identical": identical, "max_abs_diff": max(diffs), "tensors": len(a)}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def distributed_evaluation(nproc: int = 2, workdir: str | Path | None = None, timeout: float = 300.0) -> dict[str, Any]:
    """``torchrun --nproc_per_node <nproc> -m stereo.evaluate`` with an untrained tiny checkpoint on
    ``nproc + 1`` generated pairs (so a padding sampler would score one twice); each process takes
    ``cuda:LOCAL_RANK`` when CUDA is available (NCCL), else the CPU (gloo).

    Returns {"ran", "seconds", "world_size", "samples", "count", "rows", "distinct_rows", "each_sample_once"},
    or {"ran": False, "error": <the last 8 stderr lines that are not rules>}.
    """
    from stereo.data.synthetic import generate
    from stereo.models import PSMNet

    samples = nproc + 1
    with tempfile.TemporaryDirectory() as temp:
        root = Path(workdir or temp)
        data, out = root / "data", root / "eval"
        generate(data, num_train=samples, num_test=1, height=256, width=256, max_disp=32, seed=0, progress=False)
        config = {"_target_": "stereo.models.PSMNet", "max_disp": 16, "aggregation": "basic", "attention": None}
        torch.manual_seed(0)
        network = PSMNet(max_disp=16, aggregation="basic")
        checkpoint = root / "tiny.ckpt"
        torch.save({"hyper_parameters": {"model_config": config},
                    "state_dict": {f"model.{k}": v for k, v in network.state_dict().items()}}, checkpoint)
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
                   "--master_port", str(_free_port()), "-m", "stereo.evaluate", f"ckpt_path={checkpoint}",
                   "data.generate=null", f"data.val.root={data}", f"data.train.root={data}", "data.val.split=train",
                   "num_workers=0", "export.max_images=0", f"paths.output_dir={out}", f"hydra.run.dir={out}"]
        python_path = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
        env = {**os.environ, "PYTHONPATH": python_path}
        start = time.perf_counter()
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, cwd=root)
        except subprocess.TimeoutExpired:
            return {"ran": False, "error": f"timeout after {timeout:.0f} s"}
        seconds = time.perf_counter() - start
        if done.returncode != 0:
            # torchrun ends its report with a rule of '='; the cause is in the lines above it
            lines = [line for line in done.stderr.splitlines() if line.strip().strip("=-")]
            return {"ran": False, "error": " | ".join(lines[-8:]) or f"exit status {done.returncode}"}
        record = json.loads((out / "metrics.json").read_text())
        with open(out / "per_image.csv", newline="") as handle:
            names = [row["name"] for row in csv.DictReader(handle)]
    return {"ran": True, "seconds": seconds, "world_size": record["world_size"], "samples": samples,
            "count": record["count"], "rows": len(names), "distinct_rows": len(set(names)),
            "each_sample_once": record["world_size"] == nproc
            and record["count"] == len(names) == len(set(names)) == samples}
