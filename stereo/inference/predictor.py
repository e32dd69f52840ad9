"""Disparity prediction on users' rectified pairs: device/precision handling, padding, batching,
input checks, a swapped-pair warning and a memory-bounded mode for multi-megapixel images.

Why a class: loading a checkpoint and moving it to a device is the slow part, so one ``Predictor``
serves every pair of a sequence. The network only ever sees ImageNet-normalised tensors padded to what
it accepts (``network.input_spec``: multiples of 16, at least its features' minimum;
docs/inference.md#network-input); everything users hand in is brought to that here. The pieces live
beside it: input checks (``checks``), the memory model (``memory``), strip planning (``strips``) and
stitching (``stitching``), other resolutions (``resolution``: ``mode=downscale``, ``min_width``);
padding is the network's (``stereo.models.padding``).
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from stereo.data.normalize import normalize_image
from stereo.devices import resolve_device
from stereo.inference.checks import (InputError, check_finite_weights, check_pair, warn_if_precision_is_emulated,
                                     warn_if_swapped)
from stereo.inference.resolution import downscaled_size, enlarge_image, enlarged_size, shrink, to_input_size
from stereo.inference.memory import device_memory_gb, estimate_memory_gb
from stereo.inference.stitching import run_in_strips
from stereo.inference.strips import strip_height, strip_starts
from stereo.models import SIZE_DIVISOR, check_max_disp, optimize_for_inference
from stereo.models.padding import run_padded

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
MODES = ("auto", "full", "tiled", "downscale")


@dataclass
class Prediction:
    """Left-view disparity in pixels (H×W float32) and a [0, 1] confidence map (H×W float32)."""

    disparity: np.ndarray
    confidence: np.ndarray


class Predictor:
    """Runs a stereo network on uint8 RGB pairs of any size and returns disparity + confidence.

    ``mode``: ``full`` runs the whole image at once; ``tiled`` runs full-width horizontal strips
    (with ``tile_overlap`` rows of overlap, linearly blended) so peak memory follows the strip, not the
    image; ``downscale`` runs at 1/``downscale`` resolution and multiplies the disparity back;
    ``auto`` is ``full`` when the estimated peak fits in ``max_memory_gb`` and ``tiled`` otherwise.
    ``min_width``: a pair narrower than this runs enlarged to it (bicubic, at most 2x; not in
    ``downscale`` mode) and its result is brought back to the input's size (``resolution.py``); 0 = off.
    A range given (here or per call) is in the input's pixels and scales with the enlargement; the
    network's own range (no ``max_disp`` given) is searched at the size the network runs: it is the
    range the network was trained for, where searching the scaled one measured worse
    (docs/evaluation.md#narrow-pairs).
    ``max_disp``: the search range when a call names none (default: the network's own); the caller's
    network is never changed (``network.with_max_disp`` gives one over another range).
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
        min_width: int = 0,
    ) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if isinstance(downscale, bool) or not isinstance(downscale, (int, float)) or not 1.0 <= downscale < float("inf"):
            raise ValueError(f"downscale must be >= 1 (a reduction factor), got {downscale}")
        if isinstance(max_memory_gb, bool) or not isinstance(max_memory_gb, (int, float)) or not max_memory_gb > 0:
            raise ValueError(f"max_memory_gb={max_memory_gb}: must be a positive number of GB (inf: no budget)")
        if isinstance(min_width, bool) or not isinstance(min_width, int) or min_width < 0:
            raise ValueError(f"min_width must be a whole number of pixels >= 0 (0: off), got {min_width!r}")
        if tile_overlap % SIZE_DIVISOR or tile_overlap < 0:
            raise ValueError(f"tile_overlap must be a non-negative multiple of {SIZE_DIVISOR}, got {tile_overlap}")
        self.device = resolve_device(device)
        self.precision = precision
        warn_if_precision_is_emulated(self.device, precision)
        model = model.to(self.device).eval()
        # BN folding + channels-last + banded regression: ~1.4× faster at 544×960 on CPU, same
        # function to ≤ 1e-3 px (tests/test_performance_paths.py); the caller's model is untouched.
        self.model = optimize_for_inference(model) if optimize else model
        self.optimized = bool(optimize)
        self._networks = {int(self.model.max_disp): self.model}  # search range -> network (shared weights)
        self.max_disp = int(self.model.max_disp) if max_disp is None else check_max_disp(max_disp)
        self._own_range = max_disp is None  # searched at the size the network runs, not scaled
        self.network(self.max_disp)  # refuses a range the network cannot search (not a multiple of its stride)
        self.mode, self.max_memory_gb, self.downscale = mode, max_memory_gb, downscale
        self.tile_overlap, self.swap_check, self.min_width = tile_overlap, swap_check, min_width
        self._announced: set[tuple[int, int, int, int]] = set()  # sizes whose switch to strips was announced
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

    def network(self, max_disp: int | None = None) -> torch.nn.Module:
        """The (optimised) network searching ``max_disp`` levels (default: the predictor's range)."""
        max_disp = self.max_disp if max_disp is None else check_max_disp(max_disp)
        if max_disp not in self._networks:
            self._networks[max_disp] = self.model.with_max_disp(max_disp)
        return self._networks[max_disp]

    # ------------------------------------------------------------------ public API

    def predict(self, left: np.ndarray, right: np.ndarray, names: tuple[str, str] = ("left", "right"),
                max_disp: int | None = None) -> Prediction:
        """One pair of H×W×3 uint8 RGB arrays -> Prediction at the input's resolution, searched over
        ``max_disp`` levels (default: the predictor's range)."""
        return self.predict_batch([left], [right], [names], max_disp)[0]

    def predict_batch(
        self,
        lefts: Sequence[np.ndarray],
        rights: Sequence[np.ndarray],
        names: Sequence[tuple[str, str]] | None = None,
        max_disp: int | None = None,
    ) -> list[Prediction]:
        """Several pairs; equal-sized consecutive pairs run as one network batch (full mode)."""
        if len(lefts) != len(rights):
            raise InputError(f"{len(lefts)} left images but {len(rights)} right images")
        names = list(names) if names is not None else [(f"left[{i}]", f"right[{i}]") for i in range(len(lefts))]
        pairs = [check_pair(l, r, *n) for l, r, n in zip(lefts, rights, names)]
        network = self.network(max_disp)
        results: list[Prediction] = []
        for group in _groups_of_equal_size(pairs):
            results.extend(self._predict_same_size(max_disp, group, names[len(results)][0]))
        if self.swap_check:
            for (left, right), result, (left_name, _) in zip(pairs, results, names):
                warn_if_swapped(left, right, result.disparity, network.max_disp, left_name)
        return results

    def plan(self, height: int, width: int, batch: int = 1, max_disp: int | None = None) -> str:
        """The mode that will run for this image size (``auto`` resolved)."""
        if self.mode != "auto":
            return self.mode
        return "full" if self._fits(self.network(max_disp), height, width, batch) else "tiled"

    def route(self, height: int, width: int, max_disp: int | None = None) -> dict:
        """How one ``height`` x ``width`` pair will run (``auto`` resolved), as evaluations record it:
        ``full image``, ``strips`` (with their rows, count and overlap) or ``downscale``, and the padding
        (top-right zeros up to the network's ``input_spec``) with the estimated peak of the full image;
        ``enlarged`` (the size it runs at) for a pair narrower than ``min_width``."""
        record: dict = {}
        runs_at = self._runs_at(width, height)
        if runs_at != (width, height):
            record["enlarged"] = {"to": list(runs_at), "from": [width, height], "min_width": self.min_width}
            (width, height), max_disp = runs_at, self._range_at(max_disp, width, runs_at[0])
        network = self.network(max_disp)
        record = {"route": "full image", "padding": {"mode": "top_right", **network.input_spec.to_dict()},
                  "full_image_gb": round(self._full_image_gb(network, height, width), 3), **record}
        mode = self.plan(height, width, 1, network.max_disp)
        rows = self._strip_height(network, width, 1)
        if mode == "tiled" and rows < height:
            record.update(route="strips", strip_rows=rows, overlap=self.tile_overlap,
                          strips=len(strip_starts(height, rows, self.tile_overlap)))
        elif mode == "downscale":
            record.update(route="downscale", downscale=self.downscale)
        return record

    def check_memory(self, height: int, width: int, batch: int = 1, name: str = "input",
                     max_disp: int | None = None) -> str:
        """The mode that will run; refuses, before any allocation, a size and ``max_disp`` whose cost
        volume cannot fit in the device's memory even in the smallest strips (estimate: the network's
        own, :func:`stereo.inference.memory.estimate_memory_gb`). A switch to strips is announced with a
        time estimate."""
        network = self.network(max_disp)
        max_disp = network.max_disp
        mode = self.plan(height, width, batch, max_disp)
        if mode == "downscale":
            width, height = downscaled_size(width, height, self.downscale)
        padded_height, padded_width = network.input_spec.padded_size(height, width)
        rows = padded_height if mode == "full" else min(padded_height, self._strip_height(network, width, batch))
        need = estimate_memory_gb(network, rows, padded_width, max_disp, batch, self.optimized)
        available = device_memory_gb(self.device)
        if available is not None and need > available:
            how = "at full size" if mode == "full" else f"in the smallest strips ({rows} rows)"
            raise InputError(f"{name}: a {width}x{height} pair with max_disp {max_disp} needs about {need:.3g} GB "
                             f"{how}, more than the {available:.3g} GB of {self.device}; lower max_disp, use "
                             "mode=downscale, or a smaller image")
        if mode == "tiled" and rows < padded_height and (height, width, batch, max_disp) not in self._announced:
            self._announced.add((height, width, batch, max_disp))
            strips = len(strip_starts(height, rows, self.tile_overlap))
            full = self._full_image_gb(network, height, width, batch)
            print(f"{name}: {width}x{height} runs in {strips} strips of {rows} rows (mode={self.mode}: the full image "
                  f"would need about {full:.3g} GB, max_memory_gb={self.max_memory_gb:g}); about {strips}x the time "
                  "of one strip, timed on the first", file=sys.stderr, flush=True)
        return mode

    def covered_range(self, width: int) -> int:
        """The disparities, in the input's pixels, that the predictor's range covers on a pair this wide
        (less than ``max_disp`` when the pair runs enlarged and the range is the network's own)."""
        runs_at = self._runs_at(width, 1)[0]
        return self.max_disp if runs_at == width or not self._own_range else self.max_disp * width // runs_at

    # ------------------------------------------------------------------ internals

    def _predict_same_size(self, max_disp: int | None, pairs: list[tuple[np.ndarray, np.ndarray]],
                           name: str) -> list[Prediction]:
        """Equal-sized pairs, enlarged first when narrower than ``min_width``."""
        height, width = pairs[0][0].shape[:2]
        runs_at = self._runs_at(width, height)
        if runs_at != (width, height):
            enlarged = [(enlarge_image(l, runs_at), enlarge_image(r, runs_at)) for l, r in pairs]
            results = self._predict_as_given(self._range_at(max_disp, width, runs_at[0]), enlarged, name)
            return [Prediction(*to_input_size(p.disparity, p.confidence, width, height)) for p in results]
        return self._predict_as_given(max_disp, pairs, name)

    def _predict_as_given(self, max_disp: int | None, pairs: list[tuple[np.ndarray, np.ndarray]],
                          name: str) -> list[Prediction]:
        height, width = pairs[0][0].shape[:2]
        network = self.network(max_disp)
        mode = self.check_memory(height, width, len(pairs), name, network.max_disp)
        if mode == "downscale":
            return [self._predict_downscaled(network, l, r) for l, r in pairs]
        left = torch.stack([normalize_image(l) for l, _ in pairs])
        right = torch.stack([normalize_image(r) for _, r in pairs])
        run = self._run_padded if mode == "full" else self._run_tiled
        disparity, confidence = run(network, left, right)
        return [Prediction(d.numpy(), c.numpy()) for d, c in zip(disparity, confidence)]

    def _runs_at(self, width: int, height: int) -> tuple[int, int]:
        """The (width, height) a pair runs at: enlarged when narrower than ``min_width``, except in
        ``mode=downscale``, which asks for a smaller run."""
        return (width, height) if self.mode == "downscale" else enlarged_size(width, height, self.min_width)

    def _range_at(self, max_disp: int | None, width: int, enlarged_width: int) -> int:
        """The search range at the enlarged size: the network's own as it is, a range given scaled so that
        it covers ``max_disp`` of the input's pixels."""
        if max_disp is None and self._own_range:
            return self.max_disp
        given = self.max_disp if max_disp is None else max_disp
        return SIZE_DIVISOR * math.ceil(given * enlarged_width / width / SIZE_DIVISOR)

    def _full_image_gb(self, network: torch.nn.Module, height: int, width: int, batch: int = 1) -> float:
        """Estimated peak of ``batch`` ``height`` x ``width`` pairs as one image (padded as the network runs them)."""
        padded = network.input_spec.padded_size(height, width)
        return estimate_memory_gb(network, *padded, network.max_disp, batch, self.optimized)

    def _fits(self, network: torch.nn.Module, height: int, width: int, batch: int = 1) -> bool:
        return self._full_image_gb(network, height, width, batch) <= self.max_memory_gb

    def _strip_height(self, network: torch.nn.Module, width: int, batch: int) -> int:
        return strip_height(network, width, network.max_disp, batch, self.max_memory_gb, self.tile_overlap,
                            self.optimized)

    def _predict_downscaled(self, network: torch.nn.Module, left: np.ndarray, right: np.ndarray) -> Prediction:
        height, width = left.shape[:2]
        small = downscaled_size(width, height, self.downscale)
        tensors = normalize_image(shrink(left, small))[None], normalize_image(shrink(right, small))[None]
        run = self._run_padded if self._fits(network, small[1], small[0]) else self._run_tiled
        disparity, confidence = (t[0].numpy() for t in run(network, *tensors))
        return Prediction(*to_input_size(disparity, confidence, width, height))

    def _run_padded(self, network: torch.nn.Module, left: torch.Tensor,
                    right: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """N×3×H×W normalised -> (N×H×W disparity, N×H×W confidence) float32 on CPU."""
        with torch.inference_mode(), self._autocast():
            disparity, confidence = run_padded(network, left.to(self.device), right.to(self.device),
                                               return_confidence=True)
        return disparity.float().cpu(), confidence.float().cpu()

    def _run_tiled(self, network: torch.nn.Module, left: torch.Tensor,
                   right: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Full-width strips with overlap (``stitching.run_in_strips``): an approximation of the
        full-image result; the first strip of a new size is timed and the estimate printed."""
        batch, _, height, width = left.shape
        strip = self._strip_height(network, width, batch)
        if strip >= height:
            return self._run_padded(network, left, right)
        started = time.perf_counter()

        def announce(count: int) -> None:
            if count > 1 and (height, width) not in self._timed:
                self._timed.add((height, width))
                seconds = time.perf_counter() - started
                print(f"  first of {count} strips: {seconds:.1f} s, about {seconds * count:.0f} s per pair",
                      file=sys.stderr, flush=True)

        return run_in_strips(lambda l, r: self._run_padded(network, l, r), left, right, strip, self.tile_overlap,
                             announce)

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=PRECISIONS[self.precision])


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
