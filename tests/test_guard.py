"""The non-finite-loss guard: a skipped step leaves weights, BatchNorm statistics and optimizer state
exactly as they were, on every rank (real Trainer, real config, psmnet_basic 256×256, max_disp 16)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import compose

from stereo.train import train

TESTS = Path(__file__).parent


def assert_same(a, b, what: str) -> None:
    """Exactly equal nested state (tensors bitwise, NaN == NaN)."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), what
        for key in a:
            assert_same(a[key], b[key], f"{what}/{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), what
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{what}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b) or (a.is_floating_point() and torch.allclose(a, b, rtol=0, atol=0, equal_nan=True)), what
    else:
        assert a == b, what


class NaNNetwork(torch.nn.Module):
    """Stands in for a network whose forward overflowed: one parameter, NaN output."""

    max_disp = 32

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(1))

    def forward(self, left, right):
        return (left[:, 0] * self.weight * float("nan"),)


def test_non_finite_loss_is_backpropagated_but_not_stepped_and_counted():
    from functools import partial

    from stereo.training.module import StereoModule

    module = StereoModule(NaNNetwork(), optimizer=partial(torch.optim.Adam, lr=1e-3))
    optimizer = module.configure_optimizers()
    batch = {"left": torch.zeros(1, 3, 4, 4), "right": torch.zeros(1, 3, 4, 4),
             "disparity": torch.full((1, 4, 4), 3.0), "valid": torch.ones(1, 4, 4, dtype=torch.bool)}

    def closure():
        loss = module.training_step(batch, 0)
        loss.backward()  # every DDP rank must join the gradient all-reduce, NaN or not
        return loss

    for step in range(2):
        module.optimizer_step(0, step, optimizer, closure)
    assert module.skipped_steps == 2
    assert module.model.weight.item() == 1.0 and not optimizer.state  # Adam never stepped
    assert module.model.weight.grad is None  # the NaN gradient does not linger
    checkpoint = {}
    module.on_save_checkpoint(checkpoint)
    assert checkpoint["skipped_nonfinite_steps"] == 2  # the count survives a resume


def guard_overrides(*extra: str) -> list[str]:
    return ["model=psmnet_basic", "model.max_disp=16", "trainer.max_steps=3", "trainer.limit_val_batches=0",
            "logger=none", "callbacks=none", "+callbacks.guard._target_=nonfinite_injector.NonFiniteInjector",
            "+callbacks.guard.step=1", *extra]


def check_record(record: dict, buffers_before: dict) -> None:
    """``buffers_before``: the statistics the poisoned step's forward started from (under DDP rank 0's:
    DDP broadcasts them at the start of every training forward)."""
    before, after, final = record["before"], record["after"], record["final"]
    assert record["skipped"] == 1 and record["global_step"] == 3  # the skipped step still counts
    assert_same(before["weights"], after["weights"], "weights changed by a skipped step")
    assert_same(before["optimizer"], after["optimizer"], "optimizer state changed by a skipped step")
    assert_same(buffers_before, after["buffers"], "BatchNorm statistics changed by a skipped step")
    assert before["optimizer"]["state"], "the optimizer had stepped before (its state exists)"
    # Training goes on afterwards: the next step changes the weights.
    assert any(not torch.equal(before["weights"][k], final["weights"][k]) for k in before["weights"])


@pytest.mark.slow
def test_single_process_skipped_step_changes_nothing(train_overrides, tmp_path):
    out = tmp_path / "guard"
    train(compose("train", train_overrides(*guard_overrides(f"+callbacks.guard.out={out}"))))
    record = torch.load(out / "guard_rank0.pt", weights_only=False)
    check_record(record, record["before"]["buffers"])


@pytest.mark.slow
def test_two_process_ddp_nan_on_one_rank_leaves_every_rank_as_it_was(train_overrides, tmp_path):
    out, run_dir = tmp_path / "guard", tmp_path / "ddp"
    overrides = train_overrides(*guard_overrides(
        f"+callbacks.guard.out={out}", "+callbacks.guard.rank=1", "trainer=ddp_cpu", f"paths.output_dir={run_dir}"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-m", "stereo.train", *overrides, f"hydra.run.dir={run_dir}"],
                          capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-4000:]
    records = [torch.load(out / f"guard_rank{rank}.pt", weights_only=False) for rank in (0, 1)]
    for record in records:
        check_record(record, records[0]["before"]["buffers"])
    for moment in ("before", "after", "final"):
        for part in ("weights", "optimizer"):
            assert_same(records[0][moment][part], records[1][moment][part], f"ranks' {part} differ {moment}")
    assert_same(records[0]["after"]["buffers"], records[1]["after"]["buffers"], "ranks' statistics differ")
