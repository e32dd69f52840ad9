"""BatchNorm statistics over many training batches before a checkpoint is written (precise BN).

A network in eval mode normalises with the running statistics, an exponential average (momentum 0.1)
that the last twenty-odd training batches dominate. For a light network trained on small batches
those drift from batch to batch, and the evaluation follows them: the 500-step snapshots of one
3,000-step stage of the shipped weights ranged over 1.62-1.78 px on the ten real pairs, and
recomputing the statistics of the last one over 100 training batches took it from 1.70 to 1.65 px
(docs/model_card.md). The remedy is Detectron2's PreciseBN (Wu & Johnson, "Rethinking 'Batch' in
BatchNorm", 2021): with the weights fixed, the statistics are recomputed as the plain average over
``batches`` training batches (train-mode forwards without gradients, in the training precision).

Training itself is unchanged: a train-mode forward normalises with the batch's own statistics; the
batches come from a loader of the callback's own whose workers draw the augmentation (the training
loader's random streams, in its workers or in this process, are not touched) and torch's stream is
forked. The callback runs before Lightning's checkpoint callbacks (which Lightning always runs last),
so every snapshot, ``last.ckpt`` and the validation after that step hold the recalibrated statistics.
Under DDP each rank averages its own batches and the ranks' statistics are then averaged, so every
rank validates and saves the same ones.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from typing import Any

import lightning.pytorch as pl
import torch
from torch import nn
from torch.utils.data import DataLoader

STATISTICS = ("running_mean", "running_var", "num_batches_tracked")


def _norms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


def recompute_batch_norm_statistics(model: nn.Module, batches: Iterable[Any], forward: Callable[[Any], Any]) -> int:
    """Replace every BatchNorm's running statistics in ``model`` by their plain average over ``batches``
    (each passed to ``forward``, in train mode, without gradients); the number of batches used. The
    statistics are left as they were when no batch comes, when a forward raises, or when the average
    is not finite (a batch with a non-finite value)."""
    norms = _norms(model)
    if not norms:
        return 0
    saved = [(m.momentum, [getattr(m, name).clone() for name in STATISTICS]) for m in norms]
    was_training = model.training
    count = 0
    try:
        model.train()
        for norm in norms:
            norm.reset_running_stats()
            norm.momentum = None  # cumulative average: every batch weighs the same
        with torch.no_grad():
            for batch in batches:
                forward(batch)
                count += 1
        finite = all(bool(torch.isfinite(getattr(m, name)).all()) for m in norms for name in STATISTICS[:2])
        if not count or not finite:
            count = 0
            _restore(norms, saved)
    except BaseException:
        _restore(norms, saved)
        raise
    finally:
        for norm, (momentum, _) in zip(norms, saved):
            norm.momentum = momentum
        model.train(was_training)
    return count


def _restore(norms: list[nn.modules.batchnorm._BatchNorm], saved: list[tuple[Any, list[torch.Tensor]]]) -> None:
    with torch.no_grad():
        for norm, (_, buffers) in zip(norms, saved):
            for name, buffer in zip(STATISTICS, buffers):
                getattr(norm, name).copy_(buffer)


class PreciseBatchNorm(pl.Callback):
    """Every ``every_n_train_steps`` optimizer steps, and at ``trainer.max_steps`` when it is set,
    recompute the BatchNorm statistics over ``batches`` batches of the training data. Set it to the
    snapshots' interval."""

    def __init__(self, batches: int = 100, every_n_train_steps: int = 500) -> None:
        if isinstance(batches, bool) or not isinstance(batches, int) or batches < 1:
            raise ValueError(f"callbacks.precise_bn.batches must be a whole number >= 1, got {batches!r}")
        if isinstance(every_n_train_steps, bool) or not isinstance(every_n_train_steps, int) or every_n_train_steps < 1:
            raise ValueError(f"callbacks.precise_bn.every_n_train_steps must be a whole number >= 1, "
                             f"got {every_n_train_steps!r}")
        self.batches, self.every_n_train_steps = batches, every_n_train_steps
        self._done_at: int | None = None

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        step = trainer.global_step
        last = trainer.max_steps is not None and trainer.max_steps > 0 and step == trainer.max_steps
        if step == 0 or step == self._done_at or (step % self.every_n_train_steps and not last):
            return  # (gradient accumulation ends several batches at one step: once per step)
        self._done_at = step
        model = pl_module.model

        def forward(sample: dict[str, Any]) -> None:
            sample = pl_module.transfer_batch_to_device(sample, pl_module.device, 0)
            with trainer.precision_plugin.forward_context():
                model(sample["left"], sample["right"])

        with torch.random.fork_rng(devices=[]):
            seed = step * max(trainer.world_size, 1) + trainer.global_rank
            used = recompute_batch_norm_statistics(model, self._batches(trainer.train_dataloader, seed), forward)
        if trainer.world_size > 1:  # one set of statistics on every rank: the mean of the ranks' averages
            for norm in _norms(model):
                for name in STATISTICS[:2]:
                    buffer = getattr(norm, name)
                    buffer.copy_(trainer.strategy.reduce(buffer.clone(), reduce_op="mean"))
        pl_module.log("train/precise_bn_batches", float(used), batch_size=1)
        if hasattr(pl_module, "restart_throughput_window"):
            pl_module.restart_throughput_window()

    def _batches(self, loader: Any, seed: int) -> Iterable[Any]:
        """``batches`` fresh training batches from a loader of the callback's own (a second ``iter`` of the
        training loader would reset its persistent workers), in worker processes (the augmentation's
        generators there, not the training loader's), in an order seeded by the step and rank."""
        if not isinstance(loader, DataLoader):
            raise TypeError(f"PreciseBatchNorm needs the training DataLoader, got {type(loader).__name__}")
        own = DataLoader(loader.dataset, batch_size=loader.batch_size, shuffle=True, drop_last=loader.drop_last,
                         num_workers=max(loader.num_workers, 1), worker_init_fn=loader.worker_init_fn,
                         collate_fn=loader.collate_fn, generator=torch.Generator().manual_seed(seed))
        return itertools.islice(own, self.batches)
