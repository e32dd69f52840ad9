"""A callback for the non-finite guard tests: poisons one step's batch on one rank and records the
training state around that step (loaded by the DDP child processes too, so it lives in a module)."""

from __future__ import annotations

import copy
from pathlib import Path

import lightning.pytorch as pl
import torch


def training_state(trainer: pl.Trainer, module: pl.LightningModule) -> dict:
    """Weights, buffers (BatchNorm statistics) and the optimizer state, copied."""
    return {"weights": {k: v.detach().clone() for k, v in module.model.named_parameters()},
            "buffers": {k: v.detach().clone() for k, v in module.model.named_buffers()},
            "optimizer": copy.deepcopy(trainer.optimizers[0].state_dict())}


class NonFiniteInjector(pl.Callback):
    """At optimizer step ``step`` fills rank ``rank``'s left images with NaN; writes
    ``out/guard_rank{R}.pt`` = {before, after (the poisoned step), final, skipped}."""

    def __init__(self, out: str, step: int = 1, rank: int = 0) -> None:
        self.out, self.step, self.rank = Path(out), int(step), int(rank)
        self.record: dict = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            self.record["before"] = training_state(trainer, pl_module)
            if trainer.global_rank == self.rank:
                batch["left"].fill_(float("nan"))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if "before" in self.record and "after" not in self.record:
            self.record["after"] = training_state(trainer, pl_module)

    def on_train_end(self, trainer, pl_module):
        self.record.update(final=training_state(trainer, pl_module), skipped=pl_module.skipped_steps,
                           global_step=trainer.global_step)
        self.out.mkdir(parents=True, exist_ok=True)
        torch.save(self.record, self.out / f"guard_rank{trainer.global_rank}.pt")
