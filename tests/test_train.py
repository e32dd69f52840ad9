"""The real train() on the real composed config, on the tiny synthetic tree (CPU, 256×256)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import MODEL_CONFIGS, compose

from stereo.train import train, validate_resume_checkpoint


def _training_cases() -> list:
    """Every model config (conf/model, globbed in conftest). A network whose features need 256-pixel inputs
    (PSMNet's SPP) takes ~5 s per training step on 2 cores: those cases are in the full tier; the light
    ones give the quick tier its real training run."""
    from hydra.utils import get_class

    from stereo.models.build import model_config

    return [pytest.param(name, marks=[pytest.mark.slow] if get_class(
        model_config(name)["features"]["_target_"]).min_input_size >= 256 else []) for name in MODEL_CONFIGS]


@pytest.mark.parametrize("model", _training_cases())
def test_fast_dev_run_trains_and_validates_each_model_config(model, train_overrides):
    """The one test that trains every model config through the real path (compose, train(), Lightning,
    the loss over every head, validation) at a tiny size; the per-config tests elsewhere build only
    (tests/test_psmnet.py, tests/test_build.py) or run on the meta device (tests/test_components.py)."""
    from stereo.models.build import build_network

    cfg = compose("train", train_overrides(f"model={model}", "model.max_disp=16", "debug=fast_dev_run"))
    results = train(cfg)
    assert results["global_step"] == 1
    for key in ("train/loss", "val/epe", "val/bad3", "val/d1"):
        assert math.isfinite(results[key]), key
    # one logged loss per training output of the network (3 for the stacked hourglass, 1 for basic)
    network = build_network(cfg.model).train().to("meta")
    left = torch.empty(2, 3, 256, 256, device="meta")
    heads = sorted(k for k in results if k.startswith("train/loss_head"))
    assert heads == [f"train/loss_head{i}" for i in range(1, len(network(left, left)) + 1)], heads
    assert all(math.isfinite(results[k]) for k in heads)


@pytest.mark.parametrize("native", [True, False])
def test_bf16_mixed_training_runs_on_cpu_and_warns_only_where_bf16_is_emulated(train_overrides, monkeypatch, native):
    """trainer.precision=bf16-mixed on a CPU (the fast CPU setting on AVX512-BF16/AMX machines,
    docs/performance.md) trains the census network through the real path; where the CPU has no native
    bf16 (oneDNN's probe, faked here both ways), autocast emulates it far slower than fp32, and the run
    says so. (max_disp 32: a 4-level volume at 1/8; depth 2 is refused, next test.)"""
    import warnings

    from stereo.inference import checks

    monkeypatch.setattr(checks, "cpu_has_native", lambda precision: native)
    cfg = compose("train", train_overrides("model=ea_census", "model.max_disp=32", "debug=fast_dev_run",
                                           "trainer.precision=bf16-mixed"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results = train(cfg)
    assert results["global_step"] == 1 and math.isfinite(results["train/loss"]) and math.isfinite(results["val/epe"])
    warned = any("trainer.precision=bf16-mixed on this CPU has no native bf16" in str(w.message) for w in caught)
    assert warned == (not native)


def test_bf16_mixed_training_on_cpu_refuses_a_depth_2_volume_naming_the_layer(train_overrides):
    """torch 2.13's CPU bf16 weight gradient of a 3-D convolution over a depth-2 volume is wrong (NaN or
    ~1e34): max_disp 16 gives EA-Census a 2-level 1/8 volume, and the run stops before a step learns
    from it. The same network at max_disp 32 trains (previous test)."""
    cfg = compose("train", train_overrides("model=ea_census", "model.max_disp=16", "debug=fast_dev_run",
                                           "trainer.precision=bf16-mixed"))
    with pytest.raises(ValueError, match=r"trainer.precision=bf16-mixed on a CPU: the 3-D convolution "
                                         r"aggregation\.dres0\.0\.0 runs over a volume of depth 2"):
        train(cfg)
    # a block through 1/16 halves max_disp 32's 4-level volume to 2 levels: refused at its middle layer
    cfg = compose("train", train_overrides("model=ea_census", "model.max_disp=32", "model.aggregation.context_blocks=1",
                                           "debug=fast_dev_run", "trainer.precision=bf16-mixed"))
    with pytest.raises(ValueError, match=r"the 3-D convolution aggregation\.context\.0\.2\.0 runs over a volume of depth 2"):
        train(cfg)


def best_constant_epe(samples, max_disp: float) -> float:
    """The training EPE (mean over images of each image's mean |gt - c| over 0 < gt < max_disp) of the
    best constant prediction c: a weighted median of the pooled ground truth, each image's pixels
    weighing 1 / (its pixel count)."""
    values = [s["disparity"][s["valid"] & (s["disparity"] > 0) & (s["disparity"] < max_disp)] for s in samples]
    pooled = np.concatenate(values)
    weights = np.concatenate([np.full(v.size, 1.0 / v.size) for v in values])
    order = np.argsort(pooled)
    best = pooled[order][np.searchsorted(np.cumsum(weights[order]), weights.sum() / 2)]
    return float(np.mean([np.abs(v - best).mean() for v in values]))


@pytest.mark.slow
def test_training_on_one_batch_beats_the_best_constant_prediction_of_that_batch(train_overrides, tmp_path):
    """The same two training pairs seen again and again: after 10 steps the training EPE must be below
    what any constant disparity map scores on them (pipeline sanity: the network uses its input). The
    bound follows from the batch itself (7.9 px on the session tree); it is not a measured figure."""
    import csv

    import hydra

    cfg = compose(
        "train",
        train_overrides(
            "model=psmnet_basic", "debug=overfit", "trainer.overfit_batches=1", "trainer.max_epochs=10",
            "trainer.limit_val_batches=0", "optim.optimizer.lr=3e-3", "logger=csv", "trainer.log_every_n_steps=1",
            "callbacks=none",
        ),
    )
    results = train(cfg)
    rows = list(csv.DictReader(open(Path(cfg.paths.output_dir) / "csv" / "metrics.csv")))
    epe = [float(r["train/epe"]) for r in rows if r.get("train/epe")]
    assert len(epe) == 10 and results["global_step"] == 10
    # overfit_batches=1: Lightning feeds the first batch (samples 0 and 1, unshuffled; the 256x256 crop
    # of a 256x256 image is the whole image and colour augmentation is off) at every step
    dataset = hydra.utils.instantiate(cfg.data.train)()
    bound = best_constant_epe([dataset[0], dataset[1]], float(cfg.model.max_disp))
    assert epe[-1] < bound, f"training EPE went {epe[0]:.2f} -> {epe[-1]:.2f}; best constant: {bound:.2f}"


def test_truncated_and_foreign_checkpoints_give_a_clear_error_naming_the_file(tmp_path, train_overrides):
    truncated = tmp_path / "truncated.ckpt"
    torch.save({"state_dict": {"model.w": torch.zeros(1000)}}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:200])
    with pytest.raises(ValueError, match=f"{truncated}: not a PyTorch checkpoint"):
        validate_resume_checkpoint(truncated)
    foreign = tmp_path / "authors.tar"
    torch.save({"epoch": 10, "state_dict": {"module.w": torch.zeros(1)}, "train_loss": 0.5}, foreign)
    with pytest.raises(ValueError, match=f"{foreign}.*not a Lightning training checkpoint"):
        validate_resume_checkpoint(foreign)
    with pytest.raises(FileNotFoundError, match="missing.ckpt"):
        train(compose("train", train_overrides(f"ckpt_path={tmp_path / 'missing.ckpt'}")))
    # The check runs before any data or network is built: the train() call fails fast, with the path.
    with pytest.raises(ValueError, match="truncated.ckpt"):
        train(compose("train", train_overrides(f"ckpt_path={truncated}")))


@pytest.mark.slow  # 2-2.5 s on 2 cores (the quick tier's budget is 2 minutes)
def test_report_prints_an_inference_command_that_runs(train_overrides, tiny_checkpoint, tmp_path):
    """The end-of-run report shows how to run the trained model on a pair; that exact command must work."""
    import shlex
    import subprocess
    import sys
    from types import SimpleNamespace

    from stereo.train import report

    cfg = compose("train", train_overrides())
    text = report(cfg, {"global_step": 1, "train/seconds": 1.0, "checkpoint": str(tiny_checkpoint)},
                  SimpleNamespace(loggers=[]))
    command = next(line for line in text.splitlines() if "infer with:" in line).split("infer with:")[1]
    args = shlex.split(command)
    assert args[:3] == ["python", "-m", "stereo.infer"] and "left=left.png" not in args  # a real test pair
    done = subprocess.run([sys.executable, *args[1:], "swap_check=false"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    written = sorted(p.suffix for p in (tmp_path / "run" / "infer").rglob("*.*") if p.is_file())
    assert ".pfm" in written and ".png" in written, written


@pytest.mark.slow
def test_evaluate_before_and_after_run_and_get_the_trainers_device(train_overrides, monkeypatch):
    """Both evaluations run and are handed the trainer's root device (on a CPU-only machine that is the
    CPU, like the weights' device; on a GPU run it is the GPU, the weights being on the CPU then)."""
    import stereo.train as train_module

    devices = []
    real = train_module.evaluate_model

    def recording(*args, device, **kwargs):
        devices.append(device)
        return real(*args, device=device, **kwargs)

    monkeypatch.setattr(train_module, "evaluate_model", recording)
    roots = []
    original_fit = train_module.pl.Trainer.fit

    def fit(self, *args, **kwargs):
        roots.append(self.strategy.root_device)
        return original_fit(self, *args, **kwargs)

    monkeypatch.setattr(train_module.pl.Trainer, "fit", fit)
    cfg = compose("train", train_overrides("model=psmnet_basic", "model.max_disp=16", "trainer.max_steps=1",
                                           "trainer.limit_val_batches=0", "logger=none", "evaluate_before=true",
                                           "evaluate_after=true", "eval.export.max_images=0"))
    results = train(cfg)
    assert devices == [roots[0], roots[0]] and math.isfinite(results["eval/epe"])
