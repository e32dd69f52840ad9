"""Faster evaluations of the same network for inference: BatchNorm folding, each component's
inference form, and the 3-D convolutions' CPU routes (``stereo/accel/cpu.py``: the same convolution
with depth and width swapped, around PyTorch's slow native kernel for small batch-1 volumes; they act
only on CPU fp32 input, and for training they stay the opt-in ``model_backend=cpu``).
Memory layouts live in ``layout.py``, activation checkpointing for training in
``activation_checkpointing.py``.

None of these changes the model's function. Folding BatchNorm into the preceding convolution, the
channels-last convolution kernels and the swapped 3-D convolutions change float rounding only (≈1e-6
relative); the banded regression is exact. ``tests/test_performance_paths.py`` checks each against the plain path.
"""

from __future__ import annotations

import copy

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .components import HasInferenceForm

_CONVS = (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def fold_batchnorm(module: nn.Module) -> int:
    """Fold every eval-mode BatchNorm that directly follows a convolution inside an
    ``nn.Sequential`` into that convolution (in place; the BN becomes ``nn.Identity``).

    Returns the number of folded pairs. Inference only: the folded network no longer has BN
    buffers, so do not train it or save its state dict as a checkpoint.
    """
    if module.training:
        raise ValueError("fold_batchnorm needs an eval-mode module (BatchNorm must use running statistics)")
    folded = 0
    for seq in [m for m in module.modules() if isinstance(m, nn.Sequential)]:
        for i in range(len(seq) - 1):
            conv, bn = seq[i], seq[i + 1]
            if isinstance(conv, _CONVS) and isinstance(bn, _BatchNorm) and bn.track_running_stats:
                transpose = isinstance(conv, (nn.ConvTranspose2d, nn.ConvTranspose3d))
                seq[i] = fuse_conv_bn_eval(conv, bn, transpose=transpose)
                seq[i + 1] = nn.Identity()
                folded += 1
    return folded


def inference_form(module: nn.Module) -> nn.Module:
    """``module`` with every ``HasInferenceForm`` in it replaced by its ``for_inference()``, children
    before their parent (in place: the caller passes a copy)."""
    for name, child in module.named_children():
        form = inference_form(child)
        if form is not child:
            setattr(module, name, form)
    return module.for_inference() if isinstance(module, HasInferenceForm) else module


def optimize_for_inference(model: nn.Module) -> nn.Module:
    """An eval-mode copy of a ``StereoNetwork`` with BatchNorm folded and every component, attention
    block and the network itself in its inference form (``HasInferenceForm.for_inference``): the
    network's channels-last layout and cost volume handed over to an aggregation that takes it, the
    concatenation volume built in place, streaming efficient attention, banded regression; its 3-D
    convolutions take the CPU small-volume route where PyTorch would pick its slow kernel.

    The original model is left untouched (it stays the one to train, save or export). Run the copy
    under ``torch.inference_mode()`` (the streaming and in-place paths refuse to record gradients).
    """
    from stereo.accel import use_cpu_volume_convolutions  # accel reads models.layout: imported when used

    fast = copy.deepcopy(model).eval()
    fold_batchnorm(fast)
    use_cpu_volume_convolutions(fast)  # also turns a model_backend=cpu network's 2-D route off
    return inference_form(fast)
