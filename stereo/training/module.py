"""LightningModule that trains any of the PSMNet-family networks with PSMNet's loss.

The network lives in ``self.model`` so that checkpoints hold ``model.<param>`` keys and
``stereo.models.load_model`` can rebuild it from ``hyper_parameters["model_config"]`` (docs/training.md#checkpoints).
Hyper-parameters are plain Python containers so checkpoints load with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.loggers import TensorBoardLogger
import numpy as np
import torch

from stereo.data.normalize import denormalize_image
from stereo.evaluation import metrics, protocols
from stereo.training.losses import PSMNetLoss, disparity_mask
from stereo.visualize import colorize_disparity, colorize_error

# Buffers a training forward updates in place (BatchNorm and SyncBatchNorm).
RUNNING_STATS = ("running_mean", "running_var", "num_batches_tracked")


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> dict[str, Any]:
    """Nested dict -> {"a/b": scalar} with lists stringified (TensorBoard's hparams take scalars only)."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            _flatten(f"{prefix}/{key}" if prefix else str(key), item, out)
    else:
        out[prefix] = value if isinstance(value, (int, float, str, bool)) else str(value)
    return out


def error_panel(left: torch.Tensor, gt: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor, max_disp: float) -> np.ndarray:
    """left | GT | prediction | error map, side by side (H×4W×3 uint8), colours over the fixed 0..max_disp."""
    gt_np, pred_np, mask_np = (t.detach().float().cpu().numpy() for t in (gt, pred, mask))
    return np.concatenate(
        [
            denormalize_image(left),
            colorize_disparity(gt_np, 0.0, max_disp, valid=mask_np),
            colorize_disparity(pred_np, 0.0, max_disp),
            colorize_error(pred_np, gt_np, mask_np),
        ],
        axis=1,
    )


class StereoModule(pl.LightningModule):
    """Train/validate a stereo network. ``optimizer``/``scheduler`` are partials (``_partial_: true``)."""

    def __init__(
        self,
        model: torch.nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        scheduler_interval: str = "epoch",
        loss: Mapping[str, Any] | None = None,
        val_protocol: str = "synthetic",
        image_log_every_n_steps: int = 200,
        max_logged_images: int = 2,
        model_config: Mapping[str, Any] | None = None,
        run_config: Mapping[str, Any] | None = None,
        seed: int = 1,
    ) -> None:
        super().__init__()
        if scheduler_interval not in ("epoch", "step"):
            raise ValueError(f"scheduler_interval must be 'epoch' or 'step', got {scheduler_interval!r}")
        self.model = model
        loss = dict(loss or {})
        self.loss_fn = PSMNetLoss(float(model.max_disp), **loss)
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.scheduler_interval = scheduler_interval
        self.val_protocol = protocols.get_protocol(val_protocol)
        self.image_log_every_n_steps = int(image_log_every_n_steps)
        self.max_logged_images = int(max_logged_images)
        # Plain containers only (weights_only loading); logger=False: hparams are logged once, with a metric.
        self.save_hyperparameters(
            {
                "model_config": dict(model_config) if model_config is not None else None,
                "loss": loss,
                "scheduler_interval": scheduler_interval,
                "val_protocol": self.val_protocol.name,
                "run_config": dict(run_config) if run_config is not None else None,
            },
            logger=False,
        )
        self.seed = int(seed)
        self._resumed_epoch = 0
        self.skipped_steps = 0
        self._stats_snapshot: list[torch.Tensor] = []  # reused every step: allocated once per device
        self._stats_saved = False
        self._nonfinite: torch.Tensor | None = None
        self._window_started: float | None = None
        self._window_samples = 0
        self._window_batches = 0
        self.initial_val_epe = math.nan

    # --- training -------------------------------------------------------------------------------
    def forward(self, left: torch.Tensor, right: torch.Tensor) -> Any:
        return self.model(left, right)

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> torch.Tensor:
        """Forward + loss + logging without reading any value on the host (no device synchronisation).

        The loss is returned even when it is not finite: every rank must join DDP's gradient all-reduce.
        Whether the optimizer may step is decided once per step, on all ranks together, in
        :meth:`optimizer_step`; the running statistics are saved here so a skipped step can undo the
        forward's update of them.
        """
        if not self._stats_saved:  # first micro-batch since the last optimizer step
            self._save_running_stats()
        outputs = self.model(batch["left"], batch["right"])
        outputs = [outputs] if isinstance(outputs, torch.Tensor) else list(outputs)
        total, per_head = self.loss_fn(outputs, batch["disparity"], batch["valid"])
        nonfinite = ~torch.isfinite(total.detach())
        self._nonfinite = nonfinite if self._nonfinite is None else self._nonfinite | nonfinite
        # Tensors, not numbers, and not in the progress bar: Lightning converts progress-bar values with
        # .item() after every batch, which would block the host on the device each step. The loggers
        # read these at log_every_n_steps.
        batch_size = batch["left"].shape[0]
        self.log("train/loss", total.detach(), batch_size=batch_size)
        for index, head_loss in enumerate(per_head, start=1):
            self.log(f"train/loss_head{index}", head_loss.detach(), batch_size=batch_size)
        with torch.no_grad():
            mask = disparity_mask(batch["disparity"], batch["valid"], self.loss_fn.max_disp, self.loss_fn.mask_rule)
            # Mean over the images with valid pixels (per-image NaN excluded); NaN when there is none.
            epe = torch.nanmean(metrics.epe(outputs[-1].detach(), batch["disparity"], mask))
        self.log("train/epe", epe, batch_size=batch_size)
        if self._should_log_images():
            self._log_panel("train/panel", batch["left"], batch["disparity"], outputs[-1], mask)
        return total

    def optimizer_step(self, epoch: int, batch_idx: int, optimizer: Any, optimizer_closure: Callable[[], Any] | None = None) -> None:
        """Step only when the loss was finite on every rank; otherwise leave everything as it was.

        A skipped step leaves the weights, the optimizer state (and a GradScaler's scale) and the
        BatchNorm running statistics exactly as before the forward, identically on every rank: the
        forward and backward still run everywhere (DDP's all-reduce needs every rank), then one
        all-reduced flag decides for all. The step still counts (global_step and step-interval
        schedulers advance), as with a GradScaler's skipped steps. Cost: one tiny all-reduce and one
        host read per optimizer step.
        """
        loss = optimizer_closure() if optimizer_closure is not None else None
        if self._all_ranks_finite():
            optimizer.step(closure=lambda: loss)  # the precision plugin still clips / unscales here
        else:
            self._restore_running_stats()
            optimizer.zero_grad(set_to_none=True)
            self.skipped_steps += 1
            self.log("train/skipped_nonfinite", float(self.skipped_steps), batch_size=1)
        self._stats_saved = False
        self._nonfinite = None

    def _running_stats(self) -> list[torch.Tensor]:
        """Buffers the training forward updates (BatchNorm running_mean/var, num_batches_tracked)."""
        return [buffer for name, buffer in self.model.named_buffers() if name.rsplit(".", 1)[-1] in RUNNING_STATS]

    def _save_running_stats(self) -> None:
        """Copy the running statistics into a snapshot kept between steps.

        A skipped step is rare, but which step will be skipped is only known after the forward has
        updated the statistics, and that update (an exponential average) cannot be inverted exactly
        in floating point; so every step keeps a copy. It is made into buffers allocated once (again
        only when the model moves to another device or dtype) with one fused copy per step, so a step
        pays no allocation and a single batched copy (~10^4 numbers for PSMNet) for it.
        """
        buffers = self._running_stats()
        snapshot = self._stats_snapshot
        if len(snapshot) != len(buffers) or any(s.shape != b.shape or s.dtype != b.dtype or s.device != b.device
                                                 for s, b in zip(snapshot, buffers)):
            self._stats_snapshot = snapshot = [torch.empty_like(b) for b in buffers]
        if buffers:
            with torch.no_grad():
                torch._foreach_copy_(snapshot, buffers)
        self._stats_saved = True

    def _restore_running_stats(self) -> None:
        buffers = self._running_stats()
        if self._stats_saved and buffers:
            with torch.no_grad():
                torch._foreach_copy_(buffers, self._stats_snapshot)

    def _all_ranks_finite(self) -> bool:
        """The step's one host read: was every micro-batch's loss finite on every rank?"""
        nonfinite = self._nonfinite if self._nonfinite is not None else torch.zeros((), dtype=torch.bool, device=self.device)
        flag = nonfinite.to(torch.float32)
        if self._trainer is not None:
            flag = self.trainer.strategy.reduce(flag, reduce_op="sum")
        return not bool(flag)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        if self._window_started is None:
            self._window_started, self._window_samples, self._window_batches = self._device_time(), 0, 0

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        """train/samples_per_sec over each log_every_n_steps window, all ranks together.

        The device is synchronised only at the window's ends, so the figure is what the device really
        processed, without stalling every step. A step whose window a callback restarted at its end (a
        BatchNorm recalibration; callbacks' hooks run before the module's) is not counted.
        """
        if self._window_started is None:
            return
        self._window_samples += batch["left"].shape[0] * self.trainer.world_size
        self._window_batches += 1
        interval = self.trainer.log_every_n_steps
        if interval > 0 and self._window_batches >= interval:
            now = self._device_time()
            self.log("train/samples_per_sec", self._window_samples / (now - self._window_started), batch_size=1)
            self._window_started, self._window_samples, self._window_batches = now, 0, 0

    def on_validation_start(self) -> None:
        self.restart_throughput_window()

    def restart_throughput_window(self) -> None:
        """Start the next train/samples_per_sec window at the next batch: time spent outside training
        steps (validation, a BatchNorm recalibration) is not training throughput."""
        self._window_started = None

    def _device_time(self) -> float:
        """perf_counter once the device has finished the work queued so far."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    # --- validation -----------------------------------------------------------------------------
    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        prediction = protocols.predict(self.model, batch, self.val_protocol)
        rows = protocols.score(prediction, self.val_protocol)
        for name in metrics.METRIC_NAMES:
            value, images = metrics.mean_over_images([row[name] for row in rows])
            # Images without valid pixels are excluded (weight 0), never averaged in as 0. Every rank logs
            # every key in every step: the epoch-end all-reduce needs the same keys on all ranks.
            self.log(f"val/{name}", value if images else 0.0, batch_size=images, sync_dist=True,
                     prog_bar=name == "epe")
        self.log("val/frames", float(len(rows)), reduce_fx="sum", batch_size=1, sync_dist=True)
        if batch_idx == 0 and self.image_log_every_n_steps > 0:
            self._log_panel("val/panel", prediction["left"], prediction["disparity"], prediction["prediction"], prediction["mask"])

    def on_validation_epoch_end(self) -> None:
        epe = self.trainer.callback_metrics.get("val/epe")
        if epe is not None and not self.trainer.sanity_checking:
            self.log("hp/val_epe", float(epe), sync_dist=False)

    # --- logging helpers ------------------------------------------------------------------------
    def _should_log_images(self) -> bool:
        n = self.image_log_every_n_steps
        return n > 0 and self.global_step % n == 0

    def _tensorboard(self) -> Any | None:
        for logger in self.loggers:
            if hasattr(logger.experiment, "add_image"):
                return logger.experiment
        return None

    def _log_panel(self, tag: str, left: torch.Tensor, gt: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor) -> None:
        writer = self._tensorboard()
        if writer is None or self.global_rank != 0:
            return
        for i in range(min(self.max_logged_images, left.shape[0])):
            panel = error_panel(left[i], gt[i], pred[i], mask[i], float(self.model.max_disp))
            writer.add_image(f"{tag}/{i}", panel, self.global_step, dataformats="HWC")

    def _reseed_data_order(self, epoch: int) -> None:
        # Without DDP the train loader's RandomSampler (and worker seeds) draw from torch's global RNG
        # when the epoch's iterator is created: seeding it with seed + epoch makes each epoch's order a
        # function of (seed, epoch) only, so a resumed run replays the same permutation.
        torch.manual_seed(self.seed + epoch)

    def on_train_epoch_start(self) -> None:
        self._reseed_data_order(self.current_epoch)  # epochs ≥ 1: the iterator is created after this hook

    def on_fit_start(self) -> None:
        self._reseed_data_order(self._resumed_epoch)  # the first iterator is created before on_train_epoch_start
        for logger in self.loggers:
            params = _flatten("", {k: v for k, v in self.hparams.items() if k != "run_config"}, {})
            run = self.hparams.get("run_config") or {}
            params.update(_flatten("", {k: run[k] for k in ("data", "optim", "trainer", "seed") if k in run}, {}))
            if isinstance(logger, TensorBoardLogger):  # HParams tab: settings against the validation EPE
                logger.log_hyperparams(params, {"hp/val_epe": self.initial_val_epe})
            else:
                logger.log_hyperparams(params)

    # --- optimisation ---------------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(params=[p for p in self.model.parameters() if p.requires_grad])
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer=optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": self.scheduler_interval}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["skipped_nonfinite_steps"] = self.skipped_steps

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.skipped_steps = int(checkpoint.get("skipped_nonfinite_steps", 0))
        # The epoch the resumed run starts in: epochs whose training part finished count as done.
        try:
            self._resumed_epoch = int(checkpoint["loops"]["fit_loop"]["epoch_progress"]["current"]["processed"])
        except (KeyError, TypeError):
            self._resumed_epoch = int(checkpoint.get("epoch", 0))
