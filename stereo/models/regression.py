"""Disparity regressions (``regression._target_`` in conf/model/): from a low-resolution cost to an
N×H×W disparity by soft-argmax.

- ``SoftArgmaxRegression`` (PSMNet's): upsample the cost trilinearly to max_disp×H×W, softmax over
  disparity, expectation. The upsampling is ``upsample_trilinear`` (``interpolation.py``): three 1-D
  matrix products, whose backward is deterministic on CUDA and fast on CPU.
  ``chunk_rows`` (its inference form sets ``DEFAULT_CHUNK_ROWS``; inference only) is an explicit second evaluation
  of the same function: the plain one materialises the N×D×H×W probability volume (≈ 400 MB per image
  at 544×960, D = 192, plus the upsampled cost beside it); the banded one walks over bands of rows so
  that only a band's volume exists at a time. Trilinear upsampling by an integer factor with
  ``align_corners=False`` is shift-invariant, so a band of low-resolution rows plus a one-row halo on
  each side reproduces the plain path's values (the halo rows' outputs are discarded; only the matrix products'
  rounding order may differ).
- ``LowResolutionSoftArgmax`` (light networks): soft-argmax over the volume's own levels, then the
  disparity map (×stride) upsampled bilinearly: no full-resolution volume ever exists. Its ``window``
  (eval mode only) averages over the levels within ±window of the most probable one instead of all:
  a 1/8 cell on a depth edge holds two surfaces, and the full expectation lands between them, on
  neither (Tulyakov et al., NeurIPS 2018, "Practical Deep Stereo": sub-pixel MAP).
"""

from __future__ import annotations

import torch

from .components import InferenceShape, Regression
from .interpolation import upsample_bilinear, upsample_trilinear
from .precision import autocast_off

# 1/4-resolution rows per band of the inference form's banded regression: 8 rows = 32 output rows,
# i.e. a 192×32×960 probability band (24 MB) at 544×960 instead of the 400 MB full volume.
DEFAULT_CHUNK_ROWS = 8
# Confidence = probability mass of the bins round(d̂)-2 .. round(d̂)+2 (±2 px around the estimate):
# near 1 for a single sharp mode, low for flat or multi-modal distributions.
CONFIDENCE_RADIUS = 2


class SoftArgmaxRegression(Regression):
    """PSMNet's full-resolution soft-argmax of a cost at 1/``stride`` (``regress_disparity``)."""

    def __init__(self, max_disp: int, stride: int, align_corners: bool = False) -> None:
        super().__init__()
        self.max_disp, self.stride, self.align_corners = max_disp, stride, bool(align_corners)
        self._chunk_rows: int | None = None

    @property
    def chunk_rows(self) -> int | None:
        """Low-resolution rows per band of the inference regression (None: the whole volume at once)."""
        return self._chunk_rows

    @chunk_rows.setter
    def chunk_rows(self, rows: int | None) -> None:
        if rows is not None and (not isinstance(rows, int) or isinstance(rows, bool) or rows < 1):
            raise ValueError(f"regression_chunk_rows must be a positive integer or None, got {rows!r}")
        if rows is not None and self.align_corners:
            raise ValueError("banded regression needs align_corners=False (only then is it shift-invariant)")
        self._chunk_rows = rows

    def for_inference(self) -> SoftArgmaxRegression:
        """Banded (``DEFAULT_CHUNK_ROWS``) where that is exact, i.e. with ``align_corners=False``."""
        if not self.align_corners:
            self.chunk_rows = DEFAULT_CHUNK_ROWS
        return self

    def inference_bytes(self, shape: InferenceShape, optimized: bool) -> float:
        """The plain path's full-resolution volume: 3.5 B per pixel-level, measured as the plain network's
        peak over the optimised one's (13.1 vs 9.2-9.8 B, both with the volume released: 3.3-3.9 B);
        banded (optimised, with ``align_corners=False`` only), a band at a time: nothing that grows with the image."""
        return 0.0 if optimized and not self.align_corners else 3.5 * shape.pixel_levels

    def forward(self, cost: torch.Tensor, height: int, width: int, return_confidence: bool = False):
        return regress_disparity(cost, self.max_disp, height, width, self.align_corners, return_confidence,
                                 self.chunk_rows, self.stride)


class LowResolutionSoftArgmax(Regression):
    """Soft-argmax over the cost's levels at 1/``stride``, disparity ×stride upsampled bilinearly.

    ``window`` (None: all levels): in eval mode, the expectation over the levels within ±``window`` of
    the most probable one, renormalised. Training keeps the full expectation, whose gradient reaches
    every level; the window only decides which mode an estimate follows where the distribution has
    two (a depth edge or a thin structure inside a 1/``stride`` cell, an ambiguous match), so a
    refinement that searches a few pixels around the estimate starts on one of them, not between.
    Confidence: the probability mass of the levels within ±1 of the estimate (±``stride`` pixels).
    """

    def __init__(self, max_disp: int, stride: int, align_corners: bool = False, window: int | None = None) -> None:
        super().__init__()
        self.max_disp, self.stride, self.align_corners = max_disp, stride, bool(align_corners)
        self.window = window

    @property
    def window(self) -> int | None:
        """Levels either side of the most probable one that the eval-mode estimate averages (None: all)."""
        return self._window

    @window.setter
    def window(self, window: int | None) -> None:
        if window is not None and (not isinstance(window, int) or isinstance(window, bool) or window < 1):
            raise ValueError(f"regression window (model.regression.window, stereo.export regression_window) must "
                             f"be a whole number of levels >= 1 or null (all levels), got {window!r}")
        self._window = window

    def forward(self, cost: torch.Tensor, height: int, width: int, return_confidence: bool = False):
        levels = self.max_disp // self.stride
        if cost.shape[-3] != levels:
            raise ValueError(f"cost has {cost.shape[-3]} levels, expected max_disp/stride = {levels}")
        result = _soft_argmax(cost, levels, return_confidence, radius=1,
                              window=None if self.training else self.window)
        maps = result if return_confidence else (result,)
        upsampled = [upsample_bilinear(m.unsqueeze(1), (height, width), self.align_corners).squeeze(1)
                     for m in maps]
        upsampled[0] = upsampled[0] * self.stride
        return tuple(upsampled) if return_confidence else upsampled[0]


def regress_disparity(
    cost: torch.Tensor,
    max_disp: int,
    height: int,
    width: int,
    align_corners: bool = False,
    return_confidence: bool = False,
    chunk_rows: int | None = None,
    stride: int = 4,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """N×1×D/s×H/s×W/s cost → N×H×W disparity Σ_d d·softmax_d(cost), d = 0..max_disp-1.

    Trilinear upsampling to max_disp×H×W (``align_corners`` explicit: the authors' current weights
    expect False), softmax over the disparity axis in fp32 even under autocast. With
    ``return_confidence`` also returns an N×H×W confidence in [0, 1] (see ``CONFIDENCE_RADIUS``).
    ``chunk_rows`` (low-resolution rows per band, inference only) bounds memory: it needs
    ``align_corners=False`` and a cost of exactly max_disp/s × H/s × W/s (``stride`` s).
    """
    if chunk_rows is None:
        upsampled = upsample_trilinear(cost, (max_disp, height, width), align_corners)
        return _soft_argmax(upsampled, max_disp, return_confidence)
    if not isinstance(chunk_rows, int) or chunk_rows < 1:
        raise ValueError(f"chunk_rows must be a positive number of rows, got {chunk_rows}")
    if torch.is_grad_enabled() and cost.requires_grad:
        raise ValueError("banded regression (chunk_rows) is for inference; train with chunk_rows=None")
    if align_corners or tuple(cost.shape[-3:]) != (max_disp // stride, height // stride, width // stride) \
            or max_disp % stride or height % stride or width % stride:
        raise ValueError(f"banded regression needs align_corners=False and a cost of max_disp/{stride} × H/{stride} × "
                         f"W/{stride}, got {tuple(cost.shape[-3:])} for {max_disp}, {height}x{width}")
    rows = cost.shape[-2]
    bands = [_regress_band(cost, start, min(start + chunk_rows, rows), max_disp, return_confidence, stride)
             for start in range(0, rows, chunk_rows)]
    if not return_confidence:
        return torch.cat(bands, dim=1)
    return torch.cat([b[0] for b in bands], dim=1), torch.cat([b[1] for b in bands], dim=1)


def _regress_band(
    cost: torch.Tensor, start: int, stop: int, max_disp: int, return_confidence: bool, stride: int
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Rows start·s .. stop·s of the full-resolution result, from low-resolution rows start-1 .. stop (halo)."""
    first, last = max(start - 1, 0), min(stop + 1, cost.shape[-2])
    band = cost[..., first:last, :]
    band = upsample_trilinear(band, (max_disp, band.shape[-2] * stride, band.shape[-1] * stride), False)
    offset = (start - first) * stride
    band = band[..., offset:offset + (stop - start) * stride, :]
    return _soft_argmax(band, max_disp, return_confidence)


def _levels(prob: torch.Tensor) -> torch.Tensor:
    """The disparity of each bin: 0, 1, ..., D-1."""
    return torch.arange(prob.shape[1], dtype=prob.dtype, device=prob.device)


def _soft_argmax(
    cost: torch.Tensor, max_disp: int, return_confidence: bool, radius: int = CONFIDENCE_RADIUS,
    window: int | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """N×1×D×h×w cost → N×h×w expected level (and the mass within ±``radius`` levels of it); with
    ``window``, the expectation over the levels within ±window of the most probable one."""
    # At least fp32 even under autocast: a bf16 soft-argmax would quantise disparities to ~0.5 px
    # steps. Never lower than the input's precision: float64 references stay float64 throughout.
    with autocast_off(cost.device.type):
        logits = cost.squeeze(1).to(torch.promote_types(cost.dtype, torch.float32))  # N×D×H×W
        del cost
        prob = torch.softmax(logits, dim=1)
        if window is None:
            del logits  # a converted copy (bf16 under autocast) is not kept beside the probabilities
            disparity = torch.einsum("ndhw,d->nhw", prob, _levels(prob))
        else:
            from_mode = _levels(prob).view(1, -1, 1, 1) - logits.argmax(dim=1, keepdim=True)
            near_mode = torch.softmax(logits.masked_fill(from_mode.abs() > window, float("-inf")), dim=1)
            del logits
            disparity = torch.einsum("ndhw,d->nhw", near_mode, _levels(prob))
        if not return_confidence:
            return disparity
        offsets = torch.arange(-radius, radius + 1, device=prob.device).view(1, -1, 1, 1)
        bins = disparity.detach().round().long().unsqueeze(1) + offsets  # N×(2·radius+1)×H×W
        inside = (bins >= 0) & (bins < max_disp)
        mass = prob.gather(1, bins.clamp(0, max_disp - 1)) * inside
        confidence = mass.sum(dim=1).clamp(0.0, 1.0)
    return disparity, confidence
