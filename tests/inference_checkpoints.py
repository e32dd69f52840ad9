"""Tiny checkpoints in both formats inference accepts, written from randomly-initialised networks.

Ours: Lightning layout (``hyper_parameters.model_config`` + ``model.``-prefixed keys, docs/training.md#checkpoints).
Authors': ``{'epoch', 'state_dict' (``module.``-prefixed, DataParallel names), 'train_loss'}``.

A freshly initialised PSMNet has BatchNorm running statistics 0/1, so activations grow through the
residual stages (~10⁴ after layer2) and the soft-argmax degenerates into a hard argmax whose result
flips on rounding noise. ``calibrated`` re-estimates the BN statistics on one random pair first, as
training would, so the network is numerically as well-behaved as a trained one (needed for parity).
"""

from __future__ import annotations

from pathlib import Path

import torch

from stereo.models import PSMNet
from stereo.models.build import build_network
from stereo.models.presets import psmnet_config

TINY_CONFIG = psmnet_config(max_disp=32, aggregation="basic")


def calibrate_batchnorm(model: torch.nn.Module, size: tuple[int, int] = (256, 256)) -> torch.nn.Module:
    """Set every BatchNorm's running mean/var from one forward pass on a random shifted pair."""
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # cumulative average: one pass gives that batch's statistics
    left = torch.nn.functional.avg_pool2d(torch.randn(2, 3, size[0] + 2, size[1] + 2), 3, stride=1)
    with torch.no_grad():
        model.train()(left, torch.roll(left, -3, dims=3))
    return model.eval()


def write_our_checkpoint(path: Path, config: dict = TINY_CONFIG, seed: int = 0, calibrated: bool = False) -> Path:
    torch.manual_seed(seed)
    model = build_network(config)
    if calibrated:
        calibrate_batchnorm(model)
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    torch.save({"state_dict": state, "hyper_parameters": {"model_config": dict(config)}, "epoch": 0}, path)
    return path


def write_authors_checkpoint(path: Path, aggregation: str = "basic", seed: int = 0) -> Path:
    """The authors' names: our ``aggregation.`` prefix is theirs without it, all under ``module.``."""
    torch.manual_seed(seed)
    model = PSMNet(max_disp=192, aggregation=aggregation)
    state = {
        "module." + (k if k.startswith("feature_extraction.") else k.removeprefix("aggregation.")): v
        for k, v in model.state_dict().items()
    }
    torch.save({"epoch": 10, "state_dict": state, "train_loss": 0.5}, path)
    return path
