"""PSMNet's training loss: weighted smooth-L1 over the network's disparity outputs.

The mask rule is configurable because the literature disagrees: PSMNet's code masks ``gt < max_disp``,
later work ``0 < gt < max_disp``; KITTI fine-tuning masks ``gt > 0``. The dataset's own ``valid`` mask
is always applied on top.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

MASK_RULES = ("positive_below_max", "below_max", "positive")
PSMNET_WEIGHTS = (0.5, 0.7, 1.0)


def disparity_mask(
    target: torch.Tensor, valid: torch.Tensor | None, max_disp: float, rule: str = "positive_below_max"
) -> torch.Tensor:
    """Pixels that count: the dataset's ``valid`` mask AND the ground-truth range rule (finite gt only)."""
    if rule == "positive_below_max":
        mask = (target > 0) & (target < max_disp)
    elif rule == "below_max":
        mask = target < max_disp
    elif rule == "positive":
        mask = target > 0
    else:
        raise ValueError(f"unknown mask rule {rule!r}; expected one of {MASK_RULES}")
    mask &= torch.isfinite(target)
    if valid is not None:
        mask &= valid.bool()
    return mask


class PSMNetLoss(torch.nn.Module):
    """Σ_i w_i · SmoothL1(out_i, gt) (mean over masked pixels, beta 1).

    With fewer outputs than weights (e.g. the "basic" head's single output), the *last* weights are
    used, so the final prediction always gets the final weight (1.0).
    """

    def __init__(
        self,
        max_disp: float,
        weights: Sequence[float] = PSMNET_WEIGHTS,
        mask_rule: str = "positive_below_max",
        beta: float = 1.0,
    ) -> None:
        super().__init__()
        if mask_rule not in MASK_RULES:
            raise ValueError(f"unknown mask rule {mask_rule!r}; expected one of {MASK_RULES}")
        self.max_disp = float(max_disp)
        self.weights = tuple(float(w) for w in weights)
        self.mask_rule = mask_rule
        self.beta = float(beta)

    def forward(
        self,
        outputs: torch.Tensor | Sequence[torch.Tensor],
        target: torch.Tensor,
        valid: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Return (total loss, per-output losses).

        Each head's loss is the mean of the smooth-L1 over the masked pixels (PSMNet's
        ``smooth_l1_loss(out[mask], gt[mask])``), computed as a masked sum divided by the pixel count so
        that no value has to be read on the host: no ``mask.any()``, no boolean indexing, one graph for
        ``torch.compile``. A batch without any valid pixel gives NaN (0 / 0) with finite (zero)
        gradients; the training step's non-finite guard then skips it on every rank.
        """
        outputs = [outputs] if isinstance(outputs, torch.Tensor) else list(outputs)
        if len(outputs) > len(self.weights):
            raise ValueError(f"{len(outputs)} outputs but only {len(self.weights)} loss weights")
        mask = disparity_mask(target, valid, self.max_disp, self.mask_rule)
        pixels = mask.sum(dtype=torch.float32)
        # Outside the mask both sides are 0: the loss there is exactly 0 and so is the gradient (a select,
        # not a product), even where the ground truth is inf/NaN or the prediction is not finite.
        target = torch.where(mask, target.float(), 0.0)
        weights = self.weights[len(self.weights) - len(outputs):]
        per_head = []
        for output in outputs:
            if output.shape != target.shape:
                raise ValueError(f"prediction shape {tuple(output.shape)} != target shape {tuple(target.shape)}")
            prediction = torch.where(mask, output.float(), 0.0)
            per_head.append(F.smooth_l1_loss(prediction, target, reduction="sum", beta=self.beta) / pixels)
        total = sum(w * loss for w, loss in zip(weights, per_head))
        return total, per_head
