"""Disparity prediction on users' rectified pairs: device/precision handling, padding, batching,
input checks, a swapped-pair warning and a memory-bounded mode for multi-megapixel images.

Why a class: loading a checkpoint and moving it to a device is the slow part, so one ``Predictor``
serves every pair of a sequence. The network only ever sees ImageNet-normalised tensors whose height
and width are multiples of 16 (docs/inference.md#network-input); everything users hand in is brought to that here.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from stereo.data.normalize import normalize_image
from stereo.devices import resolve_device
from stereo.models import MIN_INPUT_SIZE, SIZE_DIVISOR, Padder, check_max_disp, optimize_for_inference

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
MODES = ("auto", "full", "tiled", "downscale")
# Below this a 1/4-resolution feature map has fewer than 8 cells: nothing meaningful can be matched.
MIN_SIDE = 32
DIVISOR = SIZE_DIVISOR
# Smaller inputs are zero-padded up to this (the SPP's 64-cell pooling at 1/4 resolution).
PAD_TO = (MIN_INPUT_SIZE, MIN_INPUT_SIZE)
# Peak inference memory per (padded pixel × disparity level), CPU fp32, stacked-hourglass network,
# with confidence, measured as ru_maxrss above the process baseline (interpreter, torch, weights):
# ``optimize_for_inference`` path 9.8 B at 544×960 and 9.2 B at 768×1536 (ea_psmnet, max_disp 192);
# the plain model under inference_mode 13.1 B at 768×1536 when it released the cost volume early, and
# it now keeps it through the aggregation (``release_volume`` is an optimize_for_inference setting):
# + 64 channels × 4 B / 4³ = 4 B; baseline ~0.3 GB. Planning adds headroom (~1.2x).
BYTES_PER_PIXEL_DISPARITY = {True: 12.0, False: 21.0}  # keyed by ``optimize``
FIXED_OVERHEAD_BYTES = 0.5e9


class InputError(ValueError):
    """A stereo pair that cannot be processed (wrong size, type or shape); names the files."""


@dataclass
class Prediction:
    """Left-view disparity in pixels (H×W float32) and a [0, 1] confidence map (H×W float32)."""

    disparity: np.ndarray
    confidence: np.ndarray


def as_rgb_uint8(image: np.ndarray, name: str = "image") -> np.ndarray:
    """Bring grey (H×W or H×W×1) and RGBA images to H×W×3 uint8 RGB; reject anything else clearly."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise InputError(f"{name}: expected 8-bit pixels (uint8), got {image.dtype}")
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise InputError(f"{name}: expected an H×W, H×W×3 or H×W×4 image, got shape {image.shape}")
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    return np.ascontiguousarray(image[..., :3])


def check_pair(
    left: np.ndarray, right: np.ndarray, left_name: str = "left", right_name: str = "right"
) -> tuple[np.ndarray, np.ndarray]:
    """Validate one pair (same size, large enough) and return both as H×W×3 uint8."""
    left, right = as_rgb_uint8(left, left_name), as_rgb_uint8(right, right_name)
    if left.shape != right.shape:
        raise InputError(
            f"{left_name} is {left.shape[1]}x{left.shape[0]} but {right_name} is "
            f"{right.shape[1]}x{right.shape[0]} (width x height): a rectified pair must have equal sizes"
        )
    height, width = left.shape[:2]
    if min(height, width) < MIN_SIDE:
        raise InputError(
            f"{left_name}: image is {width}x{height}, too small for stereo matching "
            f"(need at least {MIN_SIDE}x{MIN_SIDE} pixels)"
        )
    return left, right


def swap_score(left: np.ndarray, right: np.ndarray, max_disp: int, work_width: int = 320) -> float:
    """How much better the pair matches with the *wrong* shift direction (> 1 suggests swapped views).

    For a correct rectified pair, ``left(x) ≈ right(x - d)`` with d ≥ 0. This cheap, network-free
    check block-matches a small grey copy in both directions (best of 1..max_disp shifts per pixel,
    5×5 box-filtered absolute differences) and returns cost(correct direction) / cost(opposite).
    Independent of the network, so it also works with an untrained or wrong model.
    """
    import cv2

    height, width = left.shape[:2]
    scale = min(1.0, work_width / width)
    size = (max(8, round(width * scale)), max(8, round(height * scale)))
    grey_l = cv2.resize(cv2.cvtColor(left, cv2.COLOR_RGB2GRAY), size, interpolation=cv2.INTER_AREA)
    grey_r = cv2.resize(cv2.cvtColor(right, cv2.COLOR_RGB2GRAY), size, interpolation=cv2.INTER_AREA)
    grey_l, grey_r = grey_l.astype(np.float32), grey_r.astype(np.float32)
    # at most a quarter of the width, so the columns a shift wraps around (excluded) leave half
    shifts = range(1, max(2, min(size[0] // 4, math.ceil(max_disp * scale))) + 1)
    margin = shifts[-1]
    costs = {}
    for direction in (1, -1):
        best = np.full(grey_l.shape, np.inf, np.float32)
        for s in shifts:
            shifted = np.roll(grey_r, direction * s, axis=1)  # right(x - direction*s)
            best = np.minimum(best, cv2.blur(np.abs(grey_l - shifted), (5, 5)))
        costs[direction] = float(best[:, margin:-margin].mean()) + 1e-6
    return costs[1] / costs[-1]


class Predictor:
    """Runs a stereo network on uint8 RGB pairs of any size and returns disparity + confidence.

    ``mode``: ``full`` runs the whole image at once; ``tiled`` runs full-width horizontal strips
    (with ``tile_overlap`` rows of overlap, linearly blended) so peak memory follows the strip, not the
    image; ``downscale`` runs at 1/``downscale`` resolution and multiplies the disparity back;
    ``auto`` is ``full`` when the estimated peak fits in ``max_memory_gb`` and ``tiled`` otherwise.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        device: str | torch.device = "auto",
        precision: str = "fp32",
        max_disp: int | None = None,
        mode: str = "auto",
        max_memory_gb: float = 8.0,
        downscale: float = 2.0,
        tile_overlap: int = 64,
        swap_check: bool = True,
        optimize: bool = True,
    ) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if isinstance(downscale, bool) or not isinstance(downscale, (int, float)) or not 1.0 <= downscale < float("inf"):
            raise ValueError(f"downscale must be >= 1 (a reduction factor), got {downscale}")
        if isinstance(max_memory_gb, bool) or not isinstance(max_memory_gb, (int, float)) or not max_memory_gb > 0:
            raise ValueError(f"max_memory_gb={max_memory_gb}: must be a positive number of GB (inf: no budget)")
        if tile_overlap % DIVISOR or tile_overlap < 0:
            raise ValueError(f"tile_overlap must be a non-negative multiple of {DIVISOR}, got {tile_overlap}")
        self.device = resolve_device(device)
        self.precision = precision
        _warn_if_precision_is_emulated(self.device, precision)
        model = model.to(self.device).eval()
        # BN folding + channels-last + banded regression: ~1.4× faster at 544×960 on CPU, same
        # function to ≤ 1e-3 px (tests/test_performance_paths.py); the caller's model is untouched.
        self.model = optimize_for_inference(model) if optimize else model
        self.optimized = bool(optimize)
        if max_disp is not None:
            self.set_max_disp(max_disp)
        self.mode, self.max_memory_gb, self.downscale = mode, max_memory_gb, downscale
        self.tile_overlap, self.swap_check = tile_overlap, swap_check
        self._announced: set[tuple[int, int, int]] = set()  # sizes whose switch to strips was announced
        self._timed: set[tuple[int, int]] = set()

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        device: str | torch.device = "auto",
        precision: str = "fp32",
        max_disp: int | None = None,
        **options,
    ) -> "Predictor":
        """Load one of our Lightning checkpoints or an authors' PSMNet checkpoint (weights_only)."""
        from stereo.models import load_model

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: checkpoint not found")
        model = load_model(path, map_location="cpu")
        check_finite_weights(model, path)
        return cls(model, device, precision, max_disp, **options)

    @property
    def max_disp(self) -> int:
        return int(self.model.max_disp)

    def set_max_disp(self, max_disp: int) -> None:
        """Change the disparity search range; the weights do not depend on it (3-D convolutions)."""
        self.model.max_disp = check_max_disp(max_disp)

    # ------------------------------------------------------------------ public API

    def predict(
        self, left: np.ndarray, right: np.ndarray, names: tuple[str, str] = ("left", "right")
    ) -> Prediction:
        """One pair of H×W×3 uint8 RGB arrays -> Prediction at the input's resolution."""
        return self.predict_batch([left], [right], [names])[0]

    def predict_batch(
        self,
        lefts: Sequence[np.ndarray],
        rights: Sequence[np.ndarray],
        names: Sequence[tuple[str, str]] | None = None,
    ) -> list[Prediction]:
        """Several pairs; equal-sized consecutive pairs run as one network batch (full mode)."""
        if len(lefts) != len(rights):
            raise InputError(f"{len(lefts)} left images but {len(rights)} right images")
        names = list(names) if names is not None else [(f"left[{i}]", f"right[{i}]") for i in range(len(lefts))]
        pairs = [check_pair(l, r, *n) for l, r, n in zip(lefts, rights, names)]
        results: list[Prediction] = []
        for group in _groups_of_equal_size(pairs):
            results.extend(self._predict_same_size(group, names[len(results)][0]))
        if self.swap_check:
            for (left, right), result, (left_name, _) in zip(pairs, results, names):
                self._warn_if_swapped(left, right, result, left_name)
        return results

    def plan(self, height: int, width: int, batch: int = 1) -> str:
        """The mode that will run for this image size (``auto`` resolved)."""
        if self.mode != "auto":
            return self.mode
        return "full" if self._fits(height, width, batch) else "tiled"

    def _fits(self, height: int, width: int, batch: int = 1) -> bool:
        padded = Padder(height, width, DIVISOR, min_size=PAD_TO).padded_size
        return estimate_memory_gb(*padded, self.max_disp, batch, self.optimized) <= self.max_memory_gb

    # ------------------------------------------------------------------ internals

    def check_memory(self, height: int, width: int, batch: int = 1, name: str = "input") -> str:
        """The mode that will run; refuses, before any allocation, a size and ``max_disp`` whose cost
        volume cannot fit in the device's memory even in the smallest strips (estimate: the network's
        memory model, :func:`estimate_memory_gb`). A switch to strips is announced with a time estimate."""
        mode = self.plan(height, width, batch)
        if mode == "downscale":
            width, height = self._downscaled_size(width, height)
        padded_height, padded_width = Padder(height, width, DIVISOR, min_size=PAD_TO).padded_size
        rows = padded_height if mode == "full" else min(padded_height, self._strip_height(width, batch))
        need = estimate_memory_gb(rows, padded_width, self.max_disp, batch, self.optimized)
        available = device_memory_gb(self.device)
        if available is not None and need > available:
            how = "at full size" if mode == "full" else f"in the smallest strips ({rows} rows)"
            raise InputError(f"{name}: a {width}x{height} pair with max_disp {self.max_disp} needs about {need:.3g} GB "
                             f"{how}, more than the {available:.3g} GB of {self.device}; lower max_disp, use "
                             "mode=downscale, or a smaller image")
        if mode == "tiled" and rows < padded_height and (height, width, batch) not in self._announced:
            self._announced.add((height, width, batch))
            strips = len(_strip_starts(height, rows, self.tile_overlap))
            full = estimate_memory_gb(padded_height, padded_width, self.max_disp, batch, self.optimized)
            print(f"{name}: {width}x{height} runs in {strips} strips of {rows} rows (mode={self.mode}: the full image "
                  f"would need about {full:.3g} GB, max_memory_gb={self.max_memory_gb:g}); about {strips}x the time "
                  "of one strip, timed on the first", file=sys.stderr, flush=True)
        return mode

    def _predict_same_size(self, pairs: list[tuple[np.ndarray, np.ndarray]], name: str) -> list[Prediction]:
        height, width = pairs[0][0].shape[:2]
        mode = self.check_memory(height, width, len(pairs), name)
        if mode == "downscale":
            return [self._predict_downscaled(l, r) for l, r in pairs]
        left = torch.stack([normalize_image(l) for l, _ in pairs])
        right = torch.stack([normalize_image(r) for _, r in pairs])
        if mode == "full":
            disparity, confidence = self._run_padded(left, right)
        else:
            disparity, confidence = self._run_tiled(left, right)
        return [Prediction(d.numpy(), c.numpy()) for d, c in zip(disparity, confidence)]

    def _downscaled_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) at 1/downscale; refused below the smallest image stereo matching takes (a
        silent clamp would change the factor and the aspect ratio)."""
        small = (round(width / self.downscale), round(height / self.downscale))
        if min(small) < MIN_SIDE:
            raise InputError(f"downscale={self.downscale:g}: a {width}x{height} image would become {small[0]}x{small[1]}, "
                             f"below the {MIN_SIDE}x{MIN_SIDE} minimum; use downscale <= "
                             f"{math.floor(100 * min(width, height) / MIN_SIDE) / 100:g}")
        return small

    def _predict_downscaled(self, left: np.ndarray, right: np.ndarray) -> Prediction:
        import cv2

        height, width = left.shape[:2]
        small = self._downscaled_size(width, height)
        small_l = cv2.resize(left, small, interpolation=cv2.INTER_AREA)
        small_r = cv2.resize(right, small, interpolation=cv2.INTER_AREA)
        tensors = normalize_image(small_l)[None], normalize_image(small_r)[None]
        run = self._run_padded if self._fits(small[1], small[0]) else self._run_tiled
        disparity, confidence = (t[0].numpy() for t in run(*tensors))
        factor = width / small[0]  # disparities are horizontal pixel offsets: scale by the width ratio
        disparity = cv2.resize(disparity, (width, height), interpolation=cv2.INTER_LINEAR) * factor
        confidence = cv2.resize(confidence, (width, height), interpolation=cv2.INTER_LINEAR)
        return Prediction(disparity.astype(np.float32), np.clip(confidence, 0, 1).astype(np.float32))

    def _run_padded(self, left: torch.Tensor, right: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """N×3×H×W normalised -> (N×H×W disparity, N×H×W confidence) float32 on CPU."""
        padder = Padder(left.shape[-2], left.shape[-1], DIVISOR, mode="top_right", min_size=PAD_TO)
        left, right = padder.pad(left, right)
        disparity, confidence = self._forward(left, right)
        return padder.unpad(disparity), padder.unpad(confidence)

    def _run_tiled(self, left: torch.Tensor, right: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Full-width strips with overlap; each strip is padded and run alone, then blended.

        Strips cut the vertical context of the SPP module (pools up to 64 cells = 256 px) and of the
        3-D hourglasses, so this is an approximation of the full-image result; the overlap hides
        most of the seams (docs/inference.md#high-resolution-images-within-a-memory-budget).
        """
        batch, _, height, width = left.shape
        strip = self._strip_height(width, batch)
        if strip >= height:
            return self._run_padded(left, right)
        starts = _strip_starts(height, strip, self.tile_overlap)
        disparity = torch.zeros(batch, height, width)
        confidence = torch.zeros(batch, height, width)
        weight_sum = torch.zeros(height, 1)
        started = time.perf_counter()
        for index, start in enumerate(starts):
            stop = min(start + strip, height)
            d, c = self._run_padded(left[..., start:stop, :], right[..., start:stop, :])
            if index == 0 and len(starts) > 1 and (height, width) not in self._timed:
                self._timed.add((height, width))
                seconds = time.perf_counter() - started
                print(f"  first of {len(starts)} strips: {seconds:.1f} s, about {seconds * len(starts):.0f} s per pair",
                      file=sys.stderr, flush=True)
            w = _blend_weights(stop - start, self.tile_overlap, first=start == 0, last=stop == height)
            disparity[:, start:stop] += d * w
            confidence[:, start:stop] += c * w
            weight_sum[start:stop] += w
        return disparity / weight_sum, confidence / weight_sum

    def _strip_height(self, width: int, batch: int) -> int:
        """Largest multiple-of-16 strip height whose estimated peak fits in ``max_memory_gb``."""
        padded_width = math.ceil(width / DIVISOR) * DIVISOR
        budget = self.max_memory_gb * 1e9 - FIXED_OVERHEAD_BYTES
        rows = budget / (BYTES_PER_PIXEL_DISPARITY[self.optimized] * padded_width * self.max_disp * batch)
        rows = int(rows // DIVISOR * DIVISOR)
        # the network's minimum input, and taller than both overlaps so each strip adds new rows
        return max(rows, MIN_INPUT_SIZE, 2 * self.tile_overlap + 4 * DIVISOR)

    def _forward(self, left: torch.Tensor, right: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        left, right = left.to(self.device), right.to(self.device)
        with torch.inference_mode(), self._autocast():
            disparity, confidence = self.model(left, right, return_confidence=True)
        return disparity.float().cpu(), confidence.float().cpu()

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=PRECISIONS[self.precision])

    def _warn_if_swapped(self, left: np.ndarray, right: np.ndarray, result: Prediction, name: str) -> None:
        score = swap_score(left, right, self.max_disp)
        if score > SWAP_RATIO:
            warnings.warn(
                f"{name}: the pair matches {score:.2f}x better with the views exchanged "
                f"(median predicted disparity {float(np.median(result.disparity)):.1f} px); "
                "left and right look swapped — pass the left camera's image as 'left'",
                SwappedPairWarning,
                stacklevel=3,
            )


# cost(correct direction) / cost(opposite) above this => warn. On the real samples in
# ../shared/data/real (Middlebury 2001-2006, KITTI 2012/2015, FlyingThings3D) correct pairs score
# 0.16-0.43 and the same pairs swapped 2.3-7.2, so 1.5 leaves a wide margin both ways.
SWAP_RATIO = 1.5


class SwappedPairWarning(UserWarning):
    """The right image appears to be the left camera's view and vice versa."""


def _warn_if_precision_is_emulated(device: torch.device, precision: str) -> None:
    """bf16/fp16 on a CPU without native units is emulated: measured >20× slower than fp32 here."""
    if device.type != "cpu" or precision == "fp32":
        return
    check = {"bf16": "_is_mkldnn_bf16_supported", "fp16": "_is_mkldnn_fp16_supported"}[precision]
    supported = getattr(torch.ops.mkldnn, check, None)
    if supported is not None and not supported():
        warnings.warn(
            f"precision={precision} on this CPU has no native {precision} support: autocast emulates it "
            "and runs far slower than fp32 (use fp32 on this machine, bf16/fp16 on GPUs or AMX CPUs)",
            RuntimeWarning,
            stacklevel=3,
        )


def estimate_memory_gb(height: int, width: int, max_disp: int, batch: int = 1, optimized: bool = True) -> float:
    """Rough peak memory of one full-image forward pass (CPU fp32; ``optimized``: through
    ``optimize_for_inference``), from measured figures with headroom."""
    per_level = BYTES_PER_PIXEL_DISPARITY[bool(optimized)]
    return (per_level * height * width * max_disp * batch + FIXED_OVERHEAD_BYTES) / 1e9


def device_memory_gb(device: torch.device) -> float | None:
    """Total memory of ``device`` in GB (physical RAM for the CPU); None where it cannot be read."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory / 1e9
    if device.type == "cpu":
        try:
            return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 1e9
        except (ValueError, OSError, AttributeError):
            return None
    return None


def check_finite_weights(model: torch.nn.Module, path: str | Path) -> None:
    """Refuse a network with NaN/inf weights (a diverged run's checkpoint): its every output is NaN."""
    bad = {name: int((~torch.isfinite(t)).sum()) for name, t in model.state_dict().items()
           if t.is_floating_point() and not torch.isfinite(t).all()}
    if bad:
        first = next(iter(bad))
        raise InputError(f"{path}: {sum(bad.values())} weight value(s) in {len(bad)} tensor(s) are NaN/inf (first: "
                         f"{first}); the checkpoint comes from a diverged or corrupted run: use an earlier checkpoint")


def _groups_of_equal_size(pairs: list[tuple[np.ndarray, np.ndarray]]) -> Iterator[list]:
    """Consecutive pairs of equal size, in order (order of results must match the inputs)."""
    group: list = []
    for pair in pairs:
        if group and group[0][0].shape != pair[0].shape:
            yield group
            group = []
        group.append(pair)
    if group:
        yield group


def _strip_starts(height: int, strip: int, overlap: int) -> list[int]:
    """Start rows of strips of ``strip`` rows overlapping by ``overlap``, the last flush with the bottom."""
    step = strip - overlap
    starts = list(range(0, max(height - strip, 0) + 1, step))
    if starts[-1] + strip < height:
        starts.append(height - strip)
    return starts


def _blend_weights(rows: int, overlap: int, first: bool, last: bool) -> torch.Tensor:
    """rows×1 weights: linear ramps over the overlaps so neighbouring strips cross-fade."""
    weights = torch.ones(rows, 1)
    ramp = torch.linspace(0.0, 1.0, overlap + 2)[1:-1, None] if overlap else torch.ones(0, 1)
    if not first and overlap:
        weights[:overlap] = ramp
    if not last and overlap:
        weights[-overlap:] = ramp.flip(0)
    return weights
