"""Precise BatchNorm statistics: the plain average over training batches, written into the checkpoints,
without changing a step of training."""

from __future__ import annotations

import pytest
import torch
from conftest import compose
from torch import nn

from stereo.train import train
from stereo.training.precise_bn import PreciseBatchNorm, recompute_batch_norm_statistics


def test_the_statistics_are_the_plain_average_over_the_batches_in_float64():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1), nn.BatchNorm2d(2)).eval()
    batches = [torch.randn(3, 3, 8, 9) * (i + 1) + i for i in range(5)]
    used = recompute_batch_norm_statistics(model, batches, model)
    assert used == 5 and not model.training
    assert all(m.momentum == 0.1 for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    conv = model[0].double()
    means, variances = [], []
    for batch in batches:
        x = conv(batch.double())
        means.append(x.mean(dim=(0, 2, 3)))
        variances.append(x.var(dim=(0, 2, 3), unbiased=True))
    # float32 activations, each statistic a reduction over 3x6x7 = 126 values averaged over 5 batches
    torch.testing.assert_close(model[1].running_mean.double(), torch.stack(means).mean(0), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(model[1].running_var.double(), torch.stack(variances).mean(0), rtol=1e-5, atol=1e-5)
    assert int(model[1].num_batches_tracked) == 5


def test_the_statistics_stay_as_they_were_without_batches_on_a_failure_or_a_non_finite_batch():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    model(torch.randn(2, 3, 8, 8) + 3)  # running statistics that are not the defaults
    before = {k: v.clone() for k, v in model.state_dict().items()}

    def failing(batch):
        raise RuntimeError("data error")

    assert recompute_batch_norm_statistics(model, [], model) == 0
    with pytest.raises(RuntimeError, match="data error"):
        recompute_batch_norm_statistics(model, [torch.randn(2, 3, 8, 8)], failing)
    assert recompute_batch_norm_statistics(model, [torch.randn(2, 3, 8, 8), torch.full((2, 3, 8, 8), float("nan"))],
                                           model) == 0
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)
    assert model[1].momentum == 0.1 and model.training


def test_bad_settings_are_refused_with_the_option_named():
    with pytest.raises(ValueError, match="callbacks.precise_bn.batches must be a whole number >= 1"):
        PreciseBatchNorm(batches=0)
    with pytest.raises(ValueError, match="callbacks.precise_bn.every_n_train_steps must be a whole number >= 1"):
        PreciseBatchNorm(every_n_train_steps=True)


def test_a_run_with_precise_statistics_trains_the_same_steps_and_saves_recalibrated_statistics(train_overrides,
                                                                                               tmp_path):
    """Four steps of EA-Census (colour jitter drawn in this process: num_workers=0), with and without the
    callback at steps 2 and 4: the same losses and weights (training normalises with each batch's own
    statistics; the callback's batches come from its own workers, so the training jitter after a
    recalibration are the ones a run without it draws; Lightning fetches one batch ahead, so steps 3 and 4
    are the ones that would show a disturbed stream), and statistics in last.ckpt taken from the
    callback's one batch instead of the running average of the 4 steps. The throughput log falls on
    recalibrated steps (log_every_n_steps=2), where the callback has just restarted its window."""
    def run(name, *extra):
        cfg = compose("train", train_overrides("model=ea_census", "trainer.max_steps=4", "trainer.limit_val_batches=0",
                                               "data.augment.color=true", "trainer.log_every_n_steps=2",
                                               "callbacks.last_checkpoint.every_n_train_steps=1",
                                               f"paths.output_dir={tmp_path / name}", *extra))
        results = train(cfg)
        state = torch.load(tmp_path / name / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
        return results, state

    plain, plain_state = run("plain")
    precise, precise_state = run("precise", "callbacks.precise_bn={_target_:stereo.training.precise_bn.PreciseBatchNorm,"
                                            "batches:1,every_n_train_steps:2}")
    assert precise["train/loss"] == plain["train/loss"]
    stats = [k for k in plain_state if k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert stats
    for key, value in plain_state.items():
        if key not in stats:
            torch.testing.assert_close(precise_state[key], value, rtol=0, atol=0)
    assert all(int(precise_state[k]) == 1 for k in stats if k.endswith("num_batches_tracked"))
    assert all(int(plain_state[k]) == 4 for k in stats if k.endswith("num_batches_tracked"))
    assert any(not torch.equal(precise_state[k], plain_state[k]) for k in stats if k.endswith("running_mean"))
