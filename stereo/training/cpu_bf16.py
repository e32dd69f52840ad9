"""Mixed bf16 training on a CPU: a refusal where torch computes wrong gradients.

torch 2.13's oneDNN returns a wrong weight gradient (NaN, or values near 1e34) for a bf16 3-D
convolution over a volume of depth 2 with a batch larger than 1; measured against float64 for depths
1-8, 12, 16, 24 and 48, only depth 2 fails (input gradients are right). A network meets such a volume
at small ``max_disp``: a 1/8 volume at 16, the bottom of PSMNet's hourglasses (its 1/4 volume halved
twice) at 32. Training on would diverge or learn garbage without saying why, so under
``trainer.precision=bf16-mixed`` on a CPU every 3-D convolution checks its input before a training step
runs it, and the run stops with one line naming the layer.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle


def refuse_depth2_bf16_convolutions(model: nn.Module, option: str) -> list[RemovableHandle]:
    """Forward pre-hooks on every ``nn.Conv3d`` of ``model`` that raise ``ValueError`` when a training
    forward (gradients on, CPU autocast on) would run it in bf16 over a depth-2 volume with batch > 1.
    ``option``: the precision setting as the user wrote it, for the message."""

    def check(name: str):
        def hook(module: nn.Conv3d, args: tuple) -> None:
            volume = args[0]
            if (volume.shape[0] > 1 and volume.shape[2] == 2 and torch.is_grad_enabled()
                    and torch.is_autocast_enabled("cpu") and module.weight.requires_grad):
                raise ValueError(
                    f"{option} on a CPU: the 3-D convolution {name} runs over a volume of depth 2 "
                    f"({tuple(volume.shape)}), whose bf16 weight gradient torch 2.13 computes wrongly on CPUs; "
                    "use trainer.precision=32-true, or a model.max_disp that gives no volume a depth of 2")
        return hook

    return [module.register_forward_pre_hook(check(name)) for name, module in model.named_modules()
            if isinstance(module, nn.Conv3d)]
