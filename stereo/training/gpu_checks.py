"""Checks of the GPU training path that a machine with a GPU confirms in one run (scripts/bench_gpu.py).

They run on any device, so the test suite exercises the same code on the CPU:

- :func:`training_step_host_syncs` — host reads and host-to-device copies in one training step, by
  phase (expected: none; the non-finite guard's one read per step happens in ``optimizer_step``);
- :func:`deterministic_fits_match` — two short fits with ``trainer.deterministic=true`` run (no op
  without a deterministic kernel) and end with bit-identical weights.
"""

from __future__ import annotations

import tempfile
from functools import partial
from pathlib import Path
from typing import Any

import torch

from stereo.models import PSMNet
from stereo.training.module import StereoModule
from stereo.training.sync_counter import HostSyncCounter

PHASES = ("model forward", "loss and logging", "backward")


def training_step_host_syncs(
    device: str | torch.device = "cuda",
    model_config: dict[str, Any] | None = None,
    batch_size: int = 2,
    size: tuple[int, int] = (256, 512),
    autocast_dtype: torch.dtype | None = None,
) -> dict[str, dict[str, int]]:
    """Host syncs by phase of ``StereoModule.training_step`` + backward on ``device`` (after one warm-up step).

    Without a Trainer, ``self.log`` returns at once; the logging path is covered by the CPU test that
    runs the real Trainer (tests/test_host_syncs.py).
    """
    device = torch.device(device)
    config = {"max_disp": 192, "aggregation": "stackhourglass", **(model_config or {})}
    module = StereoModule(PSMNet(**config), optimizer=partial(torch.optim.Adam, lr=1e-3)).to(device).train()
    generator = torch.Generator().manual_seed(0)
    height, width = size
    batch = {
        "left": torch.randn(batch_size, 3, height, width, generator=generator),
        "right": torch.randn(batch_size, 3, height, width, generator=generator),
        "disparity": torch.rand(batch_size, height, width, generator=generator) * config["max_disp"],
        "valid": torch.ones(batch_size, height, width, dtype=torch.bool),
    }
    batch = {key: value.to(device) for key, value in batch.items()}
    counter = HostSyncCounter()
    module.model.register_forward_pre_hook(lambda *_: setattr(counter, "phase", "model forward"))
    module.model.register_forward_hook(lambda *_: setattr(counter, "phase", "loss and logging"))

    def step() -> None:
        with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
            loss = module.training_step(batch, 0)
        counter.phase = "backward"
        loss.backward()
        module.zero_grad(set_to_none=True)
        module._stats_snapshot = module._nonfinite = None  # as optimizer_step leaves them

    step()  # warm-up: one-off initialisation is not a per-step cost
    with counter:
        step()
    return {phase: dict(counter.in_phase(phase)) for phase in PHASES}


def deterministic_fits_match(accelerator: str = "gpu", model: str = "psmnet", steps: int = 2,
                             workdir: str | Path | None = None) -> dict[str, Any]:
    """Two identical short fits (tiny synthetic data, ``trainer.deterministic=true``): are the weights identical?

    Returns {"identical": bool, "max_abs_diff": float, "tensors": int}. Raises if an op of the training
    path has no deterministic implementation on this device.
    """
    import hydra

    from stereo.config import CONFIG_DIR
    from stereo.data.synthetic import generate
    from stereo.train import train

    with tempfile.TemporaryDirectory() as temp:
        root = Path(workdir or temp)
        data = root / "data"
        generate(data, num_train=4, num_test=2, height=256, width=512, max_disp=32, seed=0, progress=False)
        weights = []
        for run in ("a", "b"):
            overrides = [
                "data.generate=null", f"data.train.root={data}", f"data.val.root={data}", "data.crop_size=[256,512]",
                "data.batch_size=2", "data.num_workers=0", f"model={model}", "model.max_disp=32",
                f"trainer.accelerator={accelerator}", "trainer.devices=1", "trainer.deterministic=true",
                "trainer.benchmark=false", f"trainer.max_steps={steps}", "trainer.limit_val_batches=0",
                "logger=none", "callbacks=default",
                f"paths.log_dir={root / 'logs'}", f"paths.output_dir={root / run}",
            ]
            with hydra.initialize_config_dir(version_base="1.3", config_dir=CONFIG_DIR):
                cfg = hydra.compose("train", overrides=overrides)
            train(cfg)
            checkpoint = torch.load(root / run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
            weights.append(checkpoint["state_dict"])
    a, b = weights
    diffs = [(a[k].double() - b[k].double()).abs().max().item() for k in a if a[k].is_floating_point()]
    identical = a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    return {"identical": identical, "max_abs_diff": max(diffs), "tensors": len(a)}
