"""Evaluation protocols: which data, which pixels, which padding/crop and which averaging.

Published Scene Flow numbers are not comparable unless these match (docs/evaluation.md#protocols), so a protocol is a
small frozen dataclass that is written verbatim into every metrics file, and the same code applies it
in validation (during training) and in ``stereo.evaluate``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from stereo.models import DEFAULT_MAX_DISP, SIZE_DIVISOR, check_max_disp
from stereo.models.padding import run_padded
from stereo.evaluation import metrics


MAX_DISP_RULES = ("fixed", "per_sample")


def round_max_disp(value: float, multiple: int = SIZE_DIVISOR, cap: int | None = None) -> int:
    """Smallest multiple of ``multiple`` strictly above ``value`` (so ``gt < max_disp`` holds), at most ``cap``.

    Strictly above because evaluation scores ``gt < max_disp`` and a search range of ``n`` levels
    can only return disparities ``< n``.
    """
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"max disparity must be a finite value >= 0, got {value}")
    rounded = (math.floor(value / multiple) + 1) * multiple
    if cap is not None:
        rounded = min(rounded, check_max_disp(cap, multiple, name="cap"))
    return int(rounded)


@dataclasses.dataclass(frozen=True)
class Protocol:
    """How a benchmark is scored. ``dataset``/``split``/``files``/``passes`` describe the data the
    protocol expects (``dataset`` is checked against the data config by :func:`check_data`, the Scene
    Flow files and pass are applied to it by ``runner.apply_protocol_to_data``, all are recorded); the
    rest is applied here."""

    name: str
    description: str
    dataset: str
    split: str = "TEST"
    files: str = "all"  # "standard" = the 4,370-frame list (13 sequences removed), "all" = every file on disk
    passes: str = "clean"
    min_disp: float | None = 0.0  # scored pixels: min_disp < gt < max_disp (None = unbounded)
    max_disp: float | None = float(DEFAULT_MAX_DISP)
    # "fixed": max_disp as given; "per_sample": each sample's search range (and mask bound) is its largest
    # valid GT disparity rounded up past a multiple of 16, capped at max_disp (sample_max_disp)
    max_disp_rule: str = "fixed"
    noc: bool = False  # also report every metric over non-occluded pixels (keys "noc_*")
    resize: str = "pad"  # "pad" to a multiple of 16, or "crop" the bottom-right crop_size window
    pad_mode: str = "top_right"
    crop_size: tuple[int, int] | None = None  # (height, width)
    averaging: str = "per_image"  # see stereo.evaluation.metrics.summarize
    batch_size: int = 8  # only for averaging == "per_batch"
    primary: tuple[str, ...] = ("epe",)
    reference: str = ""

    def __post_init__(self) -> None:
        if self.resize not in ("pad", "crop"):
            raise ValueError(f"protocol {self.name}: resize must be 'pad' or 'crop', got {self.resize!r}")
        if self.resize == "crop" and not self.crop_size:
            raise ValueError(f"protocol {self.name}: resize='crop' needs crop_size")
        if self.max_disp_rule not in MAX_DISP_RULES:
            raise ValueError(f"protocol {self.name}: max_disp_rule must be one of {MAX_DISP_RULES}")
        if self.max_disp_rule == "per_sample":  # the cap is a search range (192.0 reads as 192)
            cap = int(self.max_disp) if isinstance(self.max_disp, float) and self.max_disp.is_integer() else self.max_disp
            check_max_disp(cap, name=f"protocol {self.name}: a per-sample search range's cap max_disp")
        if self.averaging not in metrics.AVERAGING_MODES:
            raise ValueError(f"protocol {self.name}: averaging must be one of {metrics.AVERAGING_MODES}")

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-ready record of the protocol."""
        record = dataclasses.asdict(self)
        record["crop_size"] = list(self.crop_size) if self.crop_size else None
        record["primary"] = list(self.primary)
        return record

    def sample_max_disp(self, disparity: np.ndarray, valid: np.ndarray) -> int:
        """One sample's search range under ``max_disp_rule="per_sample"``: its largest valid, finite GT
        disparity rounded up strictly past a multiple of 16, at most ``max_disp``."""
        gt = np.asarray(disparity)[np.asarray(valid, dtype=bool) & np.isfinite(disparity)]
        return round_max_disp(float(gt.max()) if gt.size else 0.0, cap=int(self.max_disp))

    def with_cap(self, cap: int) -> Protocol:
        """The same protocol with another ``max_disp`` (a per-sample rule's cap)."""
        return dataclasses.replace(self, max_disp=float(cap))

    def summarize(self, rows: list[Mapping[str, float]]) -> dict[str, float]:
        """Dataset-level metrics from per-image rows, averaged the protocol's way."""
        summary = metrics.summarize(rows, self.averaging, self.batch_size)
        if self.noc and rows and "noc_pixels" in rows[0]:
            noc_rows = [{k[4:]: v for k, v in r.items() if k.startswith("noc_")} for r in rows]
            noc = metrics.summarize(noc_rows, self.averaging, self.batch_size)
            summary.update({f"noc_{k}": noc[k] for k in metrics.METRIC_NAMES})
        return summary


PROTOCOLS: dict[str, Protocol] = {
    p.name: p
    for p in (
        Protocol(
            name="sceneflow",
            description="Scene Flow FlyingThings3D TEST, standard 4,370-frame list, finalpass, top-padded to 544, 0<gt<192, mean of per-image EPE (OpenStereo convention; our default)",
            dataset="sceneflow", files="standard", passes="final", reference="OpenStereo / GwcNet masking",
        ),
        Protocol(
            name="sceneflow_psmnet",
            description="PSMNet authors' test loop: every FT3D TEST file on disk, cleanpass, top-padded to 544, gt<192 (no lower bound), EPE pooled per batch of 8 then averaged over batches",
            dataset="sceneflow", files="all", passes="clean", min_disp=None, averaging="per_batch", batch_size=8,
            reference="Chang & Chen 2018, public code Test()",
        ),
        Protocol(
            name="sceneflow_gwcnet",
            description="GwcNet/ACVNet: standard 4,370-frame list, finalpass, bottom-right 512x960 crop, 0<gt<192, per image",
            dataset="sceneflow", files="standard", passes="final", resize="crop", crop_size=(512, 960),
            reference="Guo et al. 2019, public code",
        ),
        Protocol(
            name="kitti2015",
            description="KITTI 2015 training set (GT public): D1 over all valid pixels and non-occluded pixels, top-right padded",
            dataset="kitti2015", split="training", passes="-", min_disp=0.0, max_disp=None, noc=True,
            primary=("d1", "noc_d1"), reference="KITTI devkit D1 (>3 px and >5 %)",
        ),
        Protocol(
            name="kitti2012",
            description="KITTI 2012 training set (GT public): D1 over all and non-occluded pixels, top-right padded",
            dataset="kitti2012", split="training", passes="-", min_disp=0.0, max_disp=None, noc=True,
            primary=("d1", "noc_d1"), reference="KITTI devkit",
        ),
        Protocol(
            name="middlebury",
            description="Middlebury 2014 / MiddEval3: bad-2.0 over non-occluded pixels (also all), finite GT only",
            dataset="middlebury", split="training", passes="-", min_disp=0.0, max_disp=None, noc=True,
            primary=("noc_bad2",), reference="MiddEval3 bad 2.0 nonocc",
        ),
        Protocol(
            name="eth3d",
            description="ETH3D two-view: bad-1.0 over non-occluded pixels (also all), finite GT only",
            dataset="eth3d", split="training", passes="-", min_disp=0.0, max_disp=None, noc=True,
            primary=("noc_bad1",), reference="ETH3D bad 1.0 nonocc",
        ),
        Protocol(
            name="pairs",
            description="Any method (networks, StereoSGBM) on raw pairs at full resolution: per-sample search range = largest valid GT disparity rounded up past the next multiple of 16, capped at max_disp; dataset valid AND 0<gt<max_disp (occluded included); methods scored on dense maps (SGBM holes filled with the row background, KITTI devkit rule); mean of per-image values",
            dataset="raw samples", split="-", files="-", passes="-", max_disp_rule="per_sample",
            reference="stereo.evaluation.methods (the ablation, compare_real, tune_sgbm)",
        ),
        Protocol(
            name="synthetic",
            description="Embedded synthetic Scene Flow-format data, TEST split, cleanpass, top-right padded, 0<gt<192, per image",
            dataset="synthetic", files="all", passes="clean",
        ),
    )
}


def get_protocol(name: str | Protocol) -> Protocol:
    """Look a protocol up by name (a Protocol passes through)."""
    if isinstance(name, Protocol):
        return name
    if name not in PROTOCOLS:
        raise ValueError(f"unknown evaluation protocol {name!r}; choose one of {sorted(PROTOCOLS)}")
    return PROTOCOLS[name]


def check_data(protocol: str | Protocol, data_protocol: str | None, key: str = "protocol") -> Protocol:
    """The protocol ``key`` names, refused unless it scores the dataset the data config holds.

    Each data option names its own protocol (``data.protocol``, conf/data/<name>.yaml); another protocol
    is accepted only for the same dataset (``data=sceneflow protocol=sceneflow_psmnet``), so KITTI data
    is never scored under Scene Flow's 0 < gt < 192 mask by a forgotten override.
    """
    chosen = get_protocol(protocol)
    if data_protocol is None:
        return chosen
    expected = get_protocol(data_protocol)
    if chosen.dataset != expected.dataset:
        same = sorted(p.name for p in PROTOCOLS.values() if p.dataset == expected.dataset)
        raise ValueError(f"{key}={chosen.name} scores {chosen.dataset} data, but the data config holds "
                         f"{expected.dataset} (data.protocol={expected.name}): use one of {same}, "
                         f"or the data option for {chosen.dataset}")
    return chosen


def _crop_bottom_right(t: torch.Tensor, height: int, width: int) -> torch.Tensor:
    h, w = t.shape[-2:]
    if h < height or w < width:
        raise ValueError(f"image {h}x{w} is smaller than the protocol crop {height}x{width}")
    return t[..., h - height:, w - width:]


def route(model: torch.nn.Module, protocol: Protocol) -> dict[str, Any]:
    """How :func:`predict` runs ``model``, recorded next to its scores: always the full image (after the
    protocol's crop, if any), zero-padded the protocol's way up to the network's ``input_spec``."""
    record: dict[str, Any] = {"route": "full image", "padding": {"mode": protocol.pad_mode, **model.input_spec.to_dict()}}
    if protocol.resize == "crop":
        record["crop"] = list(protocol.crop_size)
    return record


@torch.no_grad()
def predict(model: torch.nn.Module, batch: Mapping[str, Any], protocol: Protocol) -> dict[str, torch.Tensor]:
    """Run ``model`` (eval mode) on a collated batch the protocol's way.

    Returns ``prediction``, ``disparity`` (gt), ``mask`` (and ``noc_mask``), ``left`` — all at the
    scored resolution (after crop, or with the padding removed).
    """
    left, right = batch["left"], batch["right"]
    gt, valid = batch["disparity"], batch["valid"]
    noc = batch.get("noc") if protocol.noc else None
    if protocol.resize == "crop":
        ch, cw = protocol.crop_size
        left, right, gt, valid = (_crop_bottom_right(t, ch, cw) for t in (left, right, gt, valid))
        noc = _crop_bottom_right(noc, ch, cw) if noc is not None else None
    # zero-padded (the protocol's pad mode) to what the network accepts (its input_spec)
    output = run_padded(model, left, right, protocol.pad_mode)
    prediction = (output[-1] if isinstance(output, tuple) else output).float()
    result = {
        "prediction": prediction,
        "disparity": gt,
        "mask": metrics.evaluation_mask(gt, valid, protocol.min_disp, protocol.max_disp),
        "left": left,
    }
    if "nonfinite_gt" in batch:  # NaN/inf pixels the reader already masked (and set to 0)
        result["nonfinite_gt"] = torch.as_tensor(batch["nonfinite_gt"]).reshape(-1)
    if noc is not None:
        result["noc_mask"] = metrics.evaluation_mask(gt, valid & noc.bool(), protocol.min_disp, protocol.max_disp)
    return result


def score(prediction: Mapping[str, torch.Tensor], protocol: Protocol) -> list[dict[str, float]]:
    """Per-image metric rows (epe, bad1..3, d1, pixels; plus noc_* when the protocol asks and the data has it)."""
    pred, gt = prediction["prediction"], prediction["disparity"]
    per_image = metrics.all_metrics(pred, gt, prediction["mask"])
    rows = [{k: float(v[i]) for k, v in per_image.items()} for i in range(pred.shape[0])]
    for row, masked in zip(rows, prediction.get("nonfinite_gt", [])):
        row["nonfinite_gt"] += float(masked)
    if "noc_mask" in prediction:
        noc = metrics.all_metrics(pred, gt, prediction["noc_mask"])
        for i, row in enumerate(rows):
            row.update({f"noc_{k}": float(v[i]) for k, v in noc.items()})
    return rows
