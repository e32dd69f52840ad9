"""Train a stereo network: python -m stereo.train [experiment=demo_cpu] [key=value ...].

Thin on purpose: composes data, model, module, callbacks, loggers and trainer from the Hydra config
(conf/train.yaml), fits, optionally evaluates before/after, and says where everything went.
"""

from __future__ import annotations

import math
import shlex
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import hydra
import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only
from omegaconf import DictConfig, OmegaConf

from stereo import output_dirs
from stereo.cli import OutputDirError, command
from stereo.evaluation import protocols
from stereo.evaluation.runner import build_eval_dataset, evaluate_model
from stereo.inference.checks import warn_if_precision_is_emulated
from stereo.models.build import architecture, build_training_network
from stereo.models.checkpoints import model_arguments, model_config_of, read_checkpoint
from stereo.models.pretrained import resolve_checkpoint
from stereo.training.checkpoint_io import AtomicCheckpointIO
from stereo.training.cpu_bf16 import refuse_depth2_bf16_convolutions
from stereo.training.init_from import init_from_weights
from stereo.training.module import StereoModule

# Sub-folders a training run fills through Lightning (checkpoints, loggers) and its evaluations: a run
# that creates one records it (stereo.output_dirs.Run.own_folders) and removes it with its files once
# empty; a file in it counts as the run's only when recorded (checkpoints as written, the rest at the end).
TRAINING_FOLDERS = ("checkpoints", "tensorboard", "csv", "eval", "eval_untrained")
RESUME_KEYS = ("state_dict", "loops", "optimizer_states", "global_step", "epoch")


def validate_resume_checkpoint(path: str | Path) -> Path:
    """Check a checkpoint is a complete Lightning training checkpoint before handing it to Lightning.

    A truncated file (killed writer, partial copy) or a foreign file (an authors' or inference-only
    checkpoint) would otherwise fail deep inside Lightning with an unreadable stack trace.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint to resume from does not exist (ckpt_path)")
    checkpoint = read_checkpoint(path)
    missing = [key for key in RESUME_KEYS if not isinstance(checkpoint, dict) or key not in checkpoint]
    if missing:
        raise ValueError(
            f"{path}: not a Lightning training checkpoint of this project (missing {missing}); "
            "to start a new run from its weights use init_from=PATH instead of ckpt_path"
        )
    _check_resume_types(checkpoint, path)
    if not any(key.startswith("model.") for key in checkpoint["state_dict"]):
        raise ValueError(f"{path}: state_dict has no 'model.*' keys, it was not written by StereoModule")
    config = model_config_of(checkpoint, path)
    if config is not None:  # the network is built from cfg.model; the recorded one must still be plain data
        model_arguments(config, path)
    return path


def _check_resume_types(checkpoint: dict[str, Any], path: Path) -> None:
    """The training state Lightning restores has the types Lightning expects: anything else would fail
    deep inside it with a stack trace (a checkpoint is data, written by anyone)."""
    def wrong(key: str, expected: str) -> ValueError:
        value = checkpoint.get(key)
        found = repr(value)[:40] if isinstance(value, (int, float, str)) else f"a {type(value).__name__}"
        return ValueError(f"{path}: {key} is not {expected} (found {found}): not a training checkpoint of this "
                          "project (edited or corrupt); resume from another checkpoint")

    state = checkpoint["state_dict"]
    if not isinstance(state, Mapping) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise wrong("state_dict", "a mapping of names to tensors")
    for key in ("global_step", "epoch"):
        if not isinstance(checkpoint[key], int) or isinstance(checkpoint[key], bool) or checkpoint[key] < 0:
            raise wrong(key, "a whole number >= 0")
    if not isinstance(checkpoint["loops"], Mapping):
        raise wrong("loops", "a mapping")
    for key, required in (("optimizer_states", True), ("lr_schedulers", False)):
        value = checkpoint.get(key)
        if (value is not None or required) and (not isinstance(value, list) or not all(isinstance(v, Mapping) for v in value)):
            raise wrong(key, "a list of mappings")
    for index, optimizer in enumerate(checkpoint["optimizer_states"]):
        if not isinstance(optimizer.get("state"), Mapping) or not isinstance(optimizer.get("param_groups"), list):
            raise ValueError(f"{path}: optimizer_states[{index}] lacks its 'state' mapping or 'param_groups' list: not "
                             "a training checkpoint of this project (edited or corrupt); resume from another checkpoint")


def check_run_dir(output_dir: Path, ckpt_path: Path | None) -> None:
    """A run directory holding checkpoints is only reused to resume from one of them.

    Otherwise a new run would write ``last-v1.ckpt`` beside the earlier run's ``last.ckpt`` and mix
    two runs' logs and evaluations in one folder.
    """
    output_dirs.check_is_folder(output_dir, "paths.output_dir")
    earlier = sorted((output_dir / "checkpoints").glob("*.ckpt"))
    resuming_here = ckpt_path is not None and ckpt_path.resolve().parent == (output_dir / "checkpoints").resolve()
    if earlier and not resuming_here:
        last = output_dir / "checkpoints" / "last.ckpt"
        hint = f"resume it with ckpt_path={last if last.is_file() else earlier[-1]}"
        raise OutputDirError(f"paths.output_dir={output_dir} already holds an earlier run's checkpoints: {hint}, "
                             "choose another paths.output_dir (the default is a new folder per run), or pass "
                             "overwrite=true to replace the files its manifest.json lists")


def resolve_ckpt_path(ckpt_path: str | None, cfg: DictConfig) -> Path | None:
    """None, an explicit path, or "last" = the newest checkpoints/last.ckpt among this task's runs."""
    if ckpt_path in (None, "", "null"):
        return None
    if ckpt_path == "last":
        runs = Path(cfg.paths.log_dir) / cfg.task_name / "runs"
        candidates = sorted(runs.glob("*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
        if not candidates:
            raise FileNotFoundError(f"ckpt_path=last: no checkpoints/last.ckpt under {runs}")
        return validate_resume_checkpoint(candidates[-1])
    return validate_resume_checkpoint(ckpt_path)


def _instantiate_group(group: DictConfig | None) -> dict[str, Any]:
    """Instantiate every entry of a callbacks/logger group that has a _target_, by its key."""
    if not group:
        return {}
    return {name: hydra.utils.instantiate(item) for name, item in group.items()
            if isinstance(item, DictConfig) and "_target_" in item}


def _refuse_twin_checkpoint_callbacks(callbacks: dict[str, Any]) -> None:
    """Lightning keys a ModelCheckpoint's saved state by its monitor, mode and intervals, not by its folder,
    and stops with a RuntimeError when two share them (``callbacks.snapshots.every_n_train_steps`` equal to
    ``callbacks.last_checkpoint``'s): refused here, in one line naming both."""
    seen: dict[str, str] = {}
    for name, callback in callbacks.items():
        if isinstance(callback, ModelCheckpoint):
            if callback.state_key in seen:
                raise ValueError(f"callbacks.{seen[callback.state_key]} and callbacks.{name} are checkpoint callbacks "
                                 "with the same monitor and saving interval: Lightning cannot tell their states apart "
                                 f"when it resumes; give callbacks.{name}.every_n_train_steps another value")
            seen[callback.state_key] = name


def _pick_checkpoint(trainer: pl.Trainer, which: str = "last") -> str | None:
    """The final weights ("last") or the best-by-val/epe ones ("best"), falling back to the other."""
    best = [cb.best_model_path for cb in trainer.checkpoint_callbacks if cb.best_model_path]
    last = [cb.last_model_path for cb in trainer.checkpoint_callbacks if cb.last_model_path]
    paths = best + last if which == "best" else last + best
    return next((p for p in paths if Path(p).is_file()), None)


def _run_evaluation(model: torch.nn.Module, cfg: DictConfig, out_dir: Path, export: Any, record: dict,
                    trainer: pl.Trainer) -> dict:
    """Evaluate on the trainer's device (this process's GPU), not where the weights happen to lie:
    before fit and after teardown the network is on the CPU."""
    dataset = build_eval_dataset(cfg.data, str(cfg.eval.split))
    return evaluate_model(model, dataset, str(cfg.eval.protocol), out_dir, export=export,
                          device=trainer.strategy.root_device, extra_record=record, desc=out_dir.name)


def training_producer(cfg: DictConfig, resumed_from: Path | None = None) -> dict[str, Any]:
    """What a run folder's checkpoints come from: the weights started from (init_from) and the settings
    that define the training problem. Trainer settings (steps, devices) may change when resuming.

    A run resumed from a checkpoint (``resumed_from``) without init_from continues the weights that the
    checkpoint's run started from (the resume line of a run started from weights sets init_from=null):
    it takes that run folder's record of them (the nearest manifest.json above the checkpoint), not "none"."""
    settings = {key: OmegaConf.to_container(cfg[key], resolve=True) if isinstance(cfg.get(key), DictConfig) else cfg.get(key)
                for key in ("data", "optim", "loss", "seed")}
    settings["model"] = architecture(cfg.model)  # as checkpoints record it (Hydra's instantiate keys dropped)
    init_from = cfg.get("init_from")
    produced = output_dirs.producer("stereo.train", resolve_checkpoint(init_from) if init_from else None, settings)
    if not init_from and resumed_from is not None:
        folders = [folder for folder in Path(resumed_from).resolve().parents[:3]
                   if (folder / output_dirs.MANIFEST_NAME).is_file()]
        earlier = output_dirs.read_manifest(folders[0] / output_dirs.MANIFEST_NAME) if folders else None
        for key in ("checkpoint", "checkpoint_sha256"):
            if isinstance(earlier, dict) and isinstance(earlier.get(key), str):
                produced[key] = earlier[key]
    return produced


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit according to ``cfg``; return the final callback metrics (+ evaluation results when enabled).

    The run folder (``paths.output_dir``) is claimed and checked before anything is written into it:
    a folder holding an earlier run is only reused to resume that run (same producer, ``ckpt_path``
    one of its checkpoints); ``overwrite=true`` deletes the files the earlier run recorded."""
    output_dir = Path(cfg.paths.output_dir)
    if cfg.get("init_from") and cfg.get("ckpt_path") not in (None, ""):
        raise ValueError("init_from=... and ckpt_path=... together: ckpt_path resumes a run (its weights win); "
                         "init_from starts a new run from weights. Give one of them.")
    for key in ("module.val_protocol", "eval.protocol"):
        protocols.check_data(str(OmegaConf.select(cfg, key)), cfg.data.get("protocol"), key)
    ckpt_path = resolve_ckpt_path(cfg.get("ckpt_path"), cfg)
    overwrite = bool(cfg.get("overwrite", False))
    output_dirs.check_is_folder(output_dir, "paths.output_dir")
    if overwrite and ckpt_path is not None and output_dir.resolve() in ckpt_path.resolve().parents:
        raise OutputDirError(f"overwrite=true would delete ckpt_path={ckpt_path}, the checkpoint this run resumes from; "
                             "resume without overwrite, or start a new run in another paths.output_dir")
    if not overwrite:
        check_run_dir(output_dir, ckpt_path)
    callbacks = _instantiate_group(cfg.get("callbacks"))  # builds no file: refused before the run folder is claimed
    _refuse_twin_checkpoint_callbacks(callbacks)
    if rank_zero_only.rank != 0:
        return _fit(cfg, output_dir, ckpt_path, list(callbacks.values()))
    with output_dirs.open_run(output_dir, "paths.output_dir", training_producer(cfg, ckpt_path), overwrite=overwrite,
                              resumable=ckpt_path is not None, extra=output_dirs.config_record(cfg),
                              check=lambda: check_run_dir(output_dir, ckpt_path)) as record:
        output_dirs.write_hydra_record(record, cfg)
        record.own_folders(output_dir / name for name in TRAINING_FOLDERS)
        try:
            return _fit(cfg, output_dir, ckpt_path, list(callbacks.values()), record)
        finally:
            record.adopt_new_files()


def _fit(cfg: DictConfig, output_dir: Path, ckpt_path: Path | None, callbacks: list[Any],
         record: output_dirs.Run | None = None) -> dict[str, Any]:
    """Build and fit with ``callbacks`` (the config's, built and checked by :func:`train`). ``record``: the
    run folder's record (rank 0), through which Lightning's checkpoints are recorded as written and
    deleted only when they are the run's (AtomicCheckpointIO)."""
    pl.seed_everything(int(cfg.seed), workers=True)
    datamodule = hydra.utils.instantiate(cfg.data)
    model = build_training_network(cfg)
    if cfg.get("init_from"):
        rank_zero_info(init_from_weights(model, cfg.init_from, strict=bool(cfg.get("init_strict", True))).describe())
    scheduler_cfg = cfg.optim.get("scheduler")
    module = StereoModule(
        model=model,
        optimizer=hydra.utils.instantiate(cfg.optim.optimizer),
        scheduler=hydra.utils.instantiate(scheduler_cfg) if scheduler_cfg else None,
        scheduler_interval=str(cfg.optim.get("interval", "epoch")),
        loss=OmegaConf.to_container(cfg.loss, resolve=True),
        model_config=architecture(cfg.model),
        run_config=OmegaConf.to_container(cfg, resolve=True),
        seed=int(cfg.seed),
        **OmegaConf.to_container(cfg.module, resolve=True),
    )
    loggers = list(_instantiate_group(cfg.get("logger")).values())
    if not loggers:  # logger=none: the LR monitor has nowhere to write (Lightning would refuse to start)
        callbacks = [cb for cb in callbacks if not isinstance(cb, LearningRateMonitor)]
    trainer: pl.Trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False,
                                                  plugins=[AtomicCheckpointIO(record)])
    if str(trainer.precision).startswith("bf16") and trainer.strategy.root_device.type == "cpu":
        option = f"trainer.precision={trainer.precision}"
        warn_if_precision_is_emulated(trainer.strategy.root_device, "bf16", option)
        refuse_depth2_bf16_convolutions(model, option)

    results: dict[str, Any] = {}
    no_export = {"max_images": 0}
    if cfg.get("evaluate_before") and rank_zero_only.rank == 0 and ckpt_path is None:
        before = _run_evaluation(module.model, cfg, output_dir / "eval_untrained", no_export,
                                 {"checkpoint": "untrained (initial weights, seed %d)" % cfg.seed}, trainer)
        module.initial_val_epe = float(before["epe"])
        results["untrained/epe"] = before["epe"]

    started = time.perf_counter()
    trainer.fit(module, datamodule=datamodule, ckpt_path=str(ckpt_path) if ckpt_path else None)
    results["train/seconds"] = time.perf_counter() - started
    results.update({k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1})
    results["global_step"] = trainer.global_step
    checkpoint = _pick_checkpoint(trainer, str(cfg.eval.get("checkpoint", "last")))
    results["checkpoint"] = checkpoint
    results["resume_checkpoint"] = _pick_checkpoint(trainer, "last")

    if cfg.get("evaluate_after") and not trainer.fast_dev_run:
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        if distributed or trainer.global_rank == 0:
            from stereo.models import load_model

            network = load_model(checkpoint) if checkpoint else module.model
            export = OmegaConf.to_container(cfg.eval.export, resolve=True)
            after = _run_evaluation(network, cfg, output_dir / "eval", export,
                                    {"checkpoint": checkpoint or "in-memory final weights",
                                     "untrained_epe": results.get("untrained/epe")}, trainer)
            results.update({f"eval/{k}": after[k] for k in ("epe", "bad1", "bad2", "bad3", "d1", "count")})
    if trainer.global_rank == 0:
        print(report(cfg, results, trainer))
    return results


def report(cfg: DictConfig, results: dict[str, Any], trainer: pl.Trainer) -> str:
    """What the user needs after a run: the numbers and where every output lives."""
    output_dir = Path(cfg.paths.output_dir).resolve()
    lines = ["", "=" * 72, f"Run directory: {output_dir}",
             f"  steps: {results['global_step']}, training time: {results['train/seconds']:.0f} s"]
    if "untrained/epe" in results:
        lines.append(f"  test EPE untrained: {results['untrained/epe']:.3f} px")
    if "eval/epe" in results:
        lines.append(f"  test EPE trained:   {results['eval/epe']:.3f} px   (bad-3 {results['eval/bad3']:.2f} %, D1 {results['eval/d1']:.2f} %, "
                     f"{results['eval/count']} images, protocol {cfg.eval.protocol})")
        lines += [f"  metrics:           {output_dir / 'eval' / 'metrics.json'}",
                  f"  per-image CSV:     {output_dir / 'eval' / 'per_image.csv'}",
                  f"  disparity exports: {output_dir / 'eval' / 'disparity'} (PFM + colour PNG + error PNG)"]
    if results.get("checkpoint"):
        lines.append(f"  checkpoints:       {output_dir / 'checkpoints'} (evaluated: {Path(results['checkpoint']).name})")
        left, right = _example_pair(cfg)
        lines.append(f"  infer with:        python -m stereo.infer ckpt_path={results['checkpoint']} left={left} "
                     f"right={right} output_dir={output_dir / 'infer'} formats=[pfm,color]")
    if any(hasattr(lg, "log_dir") and "tensorboard" in type(lg).__name__.lower() for lg in trainer.loggers):
        lines.append(f"  TensorBoard logs:  {output_dir / 'tensorboard'}")
        lines.append(f"  open with:         tensorboard --logdir {output_dir / 'tensorboard'}   (then http://localhost:6006)")
    if results.get("resume_checkpoint"):  # the file this run actually wrote (last.ckpt, or last-v1.ckpt ...)
        arguments = [*_overrides(), f"hydra.run.dir={output_dir}", f"ckpt_path={Path(results['resume_checkpoint']).resolve()}"]
        if cfg.get("init_from"):  # set by the command or its recipe: a resumed run takes its weights from ckpt_path
            arguments.append("init_from=null")
        lines.append(f"  resume with:       python -m stereo.train {shlex.join(arguments)}")
    lines.append("=" * 72)
    return "\n".join(lines)


def _example_pair(cfg: DictConfig) -> tuple[str, str]:
    """A test pair of the run's data to show the inference command on (placeholders when none is found)."""
    root = OmegaConf.select(cfg, "data.val.root")
    left = next(Path(root).glob("**/TEST/**/left/*.png"), None) if root and Path(root).is_dir() else None
    if left is not None and (left.parent.parent / "right" / left.name).is_file():
        return str(left.resolve()), str((left.parent.parent / "right" / left.name).resolve())
    return "left.png", "right.png"


def _overrides() -> list[str]:
    """The command line to repeat when resuming: the config search path (the user's own config folders,
    e.g. docs/models.md's ``hydra.searchpath=[file://my_conf]``) and every override but the ones the
    resume command sets itself (``ckpt_path``, the run folder, ``init_from``)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        given = HydraConfig.get().overrides
    except ValueError:  # called outside @hydra.main (tests)
        return []
    search = [o for o in given.hydra if o.lstrip("+~").startswith("hydra.searchpath=")]
    return search + [o for o in given.task if not o.startswith(("ckpt_path=", "paths.output_dir=", "init_from="))]


@command("train")
def main(cfg: DictConfig) -> float | None:
    metrics = train(cfg)
    value = metrics.get("eval/epe", metrics.get("val/epe"))
    return float(value) if value is not None and math.isfinite(float(value)) else None


if __name__ == "__main__":
    main()
