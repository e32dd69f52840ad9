"""No host synchronisation in a training step: the real StereoModule step under the real Trainer, counted
by scripts/sync_counter.py (a dispatch mode, so the CPU run sees what would stall a GPU)."""

from __future__ import annotations

from collections import Counter

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from conftest import compose

from stereo.train import train
from sync_counter import HostSyncCounter, NondeterministicOpCounter, count_host_syncs


def test_counter_sees_each_kind_of_host_sync():
    x = torch.randn(4, 4)
    mask = x > 0
    assert count_host_syncs(lambda: x.sum().item()) == {"host read: _local_scalar_dense": 1}
    assert count_host_syncs(lambda: bool(mask.any())) == {"host read: _local_scalar_dense": 1}
    assert count_host_syncs(lambda: x[mask]) == {"host read: index with a boolean mask": 1}
    assert count_host_syncs(lambda: x.nonzero()) == {"host read: nonzero": 1}
    assert count_host_syncs(lambda: x.to("meta")) == {"host-to-device copy": 1}  # meta stands in for a GPU
    assert count_host_syncs(lambda: torch.empty(4, 4, device="meta").copy_(x)) == {"host-to-device copy": 1}
    assert count_host_syncs(lambda: torch.as_tensor(np.ones(3), device="cpu")) == {
        "host-to-device copy: torch.as_tensor of host data": 1}
    # The masked-sum form of the same computations reads nothing.
    assert count_host_syncs(lambda: torch.where(mask, x, 0.0).sum() / mask.sum()) == Counter()


def test_nondeterministic_op_counter_sees_an_op_without_a_deterministic_cuda_kernel():
    import torch.nn.functional as F

    x = torch.randn(1, 2, 4, 4, requires_grad=True)
    with NondeterministicOpCounter() as counter:
        F.interpolate(x, scale_factor=2.0, mode="bilinear").sum().backward()
    assert counter.counts == {"upsample_bilinear2d_backward": 1}
    with NondeterministicOpCounter() as counter:  # the same upsampling as a matrix product has one
        (torch.ones(8, 4) @ x @ torch.ones(4, 8)).sum().backward()
    assert counter.counts == Counter()


class SyncCountingCallback(pl.Callback):
    """Counts host syncs over the first training batch, by phase: the network's forward, the rest of
    training_step (loss + logging), backward, and the non-finite guard before the optimizer step."""

    phases: dict[str, Counter] = {}

    def setup(self, trainer, pl_module, stage):
        self.counter = HostSyncCounter()
        network = pl_module.model
        network.register_forward_pre_hook(lambda *_: setattr(self.counter, "phase", "model forward"))
        network.register_forward_hook(lambda *_: setattr(self.counter, "phase", "loss and logging"))

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == 0:
            self.counter.phase = "before forward"
            self.counter.__enter__()

    def on_before_backward(self, trainer, pl_module, loss):
        self.counter.phase = "backward"

    def on_after_backward(self, trainer, pl_module):
        self.counter.phase = "non-finite guard"

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        # torch.optim's own bookkeeping (Adam's step counters are CPU tensors by design) is not ours
        self.counter.phase = "optimizer"

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if batch_idx == 0:
            self.counter.__exit__(None, None, None)
            SyncCountingCallback.phases = {phase: self.counter.in_phase(phase) for phase in
                                           ("before forward", "model forward", "loss and logging", "backward",
                                            "non-finite guard")}


@pytest.fixture(scope="module")
def step_syncs(synthetic_root, tmp_path_factory):
    """Host syncs of one real training step (psmnet_basic, 256×256, max_disp 16), by phase."""
    out = tmp_path_factory.mktemp("syncs")
    cfg = compose("train", [
        "data.generate=null", f"data.train.root={synthetic_root}", f"data.val.root={synthetic_root}",
        "data.crop_size=[256,256]", "data.batch_size=2", "data.num_workers=0", "data.augment.color=false",
        "model=psmnet_basic", "model.max_disp=16", "trainer=cpu", "trainer.max_steps=2", "trainer.log_every_n_steps=1",
        "trainer.limit_val_batches=0", "logger=csv", "callbacks=none", "module.image_log_every_n_steps=0",
        "+callbacks.syncs._target_=test_host_syncs.SyncCountingCallback",
        f"paths.log_dir={out / 'logs'}", f"paths.output_dir={out / 'run'}"])
    train(cfg)
    return SyncCountingCallback.phases, out / "run" / "csv" / "metrics.csv"


@pytest.mark.slow
def test_loss_and_logging_of_a_training_step_do_not_synchronise(step_syncs):
    phases, _ = step_syncs
    assert phases["before forward"] == Counter()
    assert phases["loss and logging"] == Counter()


@pytest.mark.slow
def test_backward_does_not_synchronise(step_syncs):
    assert step_syncs[0]["backward"] == Counter()


@pytest.mark.slow
def test_the_non_finite_guard_reads_one_flag_per_step(step_syncs):
    assert step_syncs[0]["non-finite guard"] == {"host read: _local_scalar_dense": 1}


@pytest.mark.slow
def test_network_forward_does_not_read_on_the_host(step_syncs):
    """Host reads only: on the CPU a constant built on the host and moved to the input's device is no
    copy, so that kind shows only on an accelerator (the GPU kit's training_step_ops, tests/test_bench_gpu.py)."""
    assert step_syncs[0]["model forward"] == Counter()


@pytest.mark.slow
def test_samples_per_sec_is_logged_once_per_logging_window(step_syncs):
    import csv

    rows = list(csv.DictReader(open(step_syncs[1])))
    rates = [float(r["train/samples_per_sec"]) for r in rows if r.get("train/samples_per_sec")]
    assert len(rates) == 2 and all(rate > 0 for rate in rates)  # log_every_n_steps=1, 2 steps
