"""Writers for everything inference can produce from one prediction, with documented file names.

| format       | file                        | content                                                       |
|--------------|-----------------------------|---------------------------------------------------------------|
| ``pfm``      | ``<stem>_disp.pfm``         | float32 disparity in pixels (lossless)                        |
| ``png16``    | ``<stem>_disp.png``         | KITTI uint16 PNG, value = round(d·256), 0 = invalid           |
| ``npy``      | ``<stem>_disp.npy``         | float32 H×W NumPy array (lossless)                            |
| ``color``    | ``<stem>_disp_color.png``   | turbo colour map over a fixed or per-sequence range           |
| ``depth``    | ``<stem>_depth.pfm``        | float32 depth Z = f·B/(d + doffs) in the baseline's unit, inf = unknown |
| ``depth_original`` | ``<stem>_depth_original.pfm`` | the same depth on the original (unrectified) reference image (docs/rig.md) |
| ``ply``      | ``<stem>.ply``              | binary little-endian coloured point cloud, same unit as depth |
| ``confidence`` | ``<stem>_conf.png`` / ``<stem>_conf.pfm`` | confidence in [0, 1] (PNG16: value/65535) |

Every file is written to a temporary name in the output folder and renamed into place, so an
interrupted run never leaves a truncated file that looks complete.
"""

from __future__ import annotations

import io as _bytes_io
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from stereo.calibration.readers import read_depth_geometry, require_calibration_files
from stereo.data.io import Calibration, atomic_write, write_disparity_png16, write_image, write_pfm, write_png16
from stereo.visualize import colorize_disparity

FORMATS = ("pfm", "png16", "npy", "color", "depth", "depth_original", "ply", "confidence")
FILE_NAMES = {
    "pfm": "{stem}_disp.pfm",
    "png16": "{stem}_disp.png",
    "npy": "{stem}_disp.npy",
    "color": "{stem}_disp_color.png",
    "depth": "{stem}_depth.pfm",
    "depth_original": "{stem}_depth_original.pfm",
    "ply": "{stem}.ply",
    "confidence": "{stem}_conf.{ext}",
}
CONFIDENCE_PNG_SCALE = 65535.0


def make_calibration(
    calib: str | Path | Sequence[str | Path] | None = None,
    focal: float | None = None,
    baseline: float | None = None,
    doffs: float | None = None,
    cx: float | None = None,
    cy: float | None = None,
) -> Calibration | None:
    """The depth geometry from a calibration file (any format of ``stereo.calibration.readers``; a
    list of two ROS camera_info files) or from focal length (px) and baseline.

    Explicit values override the file's. Without cx/cy the image centre is used (per image, see
    ``for_image``). Returns None when neither a file nor focal+baseline is given.
    """
    if calib is None and focal is None and baseline is None:
        return None
    for key, value in (("focal", focal), ("baseline", baseline)):
        if value is not None and not (np.isfinite(float(value)) and float(value) > 0):
            raise ValueError(f"{key}={value}: must be a positive number ({'pixels' if key == 'focal' else 'the unit of depth'}); "
                             "depth = focal * baseline / (disparity + doffs)")
    for key, value in (("doffs", doffs), ("cx", cx), ("cy", cy)):
        if value is not None and not np.isfinite(float(value)):
            raise ValueError(f"{key}={value}: must be a finite number of pixels, or null")
    if calib is not None:
        require_calibration_files(calib)
    base = read_depth_geometry(calib) if calib is not None else None
    if base is None and (focal is None or baseline is None):
        raise ValueError("depth and point clouds need calib=<calibration file> or both focal=... and baseline=...")
    return Calibration(
        focal=float(focal if focal is not None else base.focal),
        cx=float(cx if cx is not None else (base.cx if base else np.nan)),
        cy=float(cy if cy is not None else (base.cy if base else np.nan)),
        baseline=float(baseline if baseline is not None else base.baseline),
        doffs=float(doffs if doffs is not None else (base.doffs if base else 0.0)),
        ndisp=base.ndisp if base else None,
        width=base.width if base else 0,
        height=base.height if base else 0,
    )


def for_image(calibration: Calibration, height: int, width: int) -> Calibration:
    """Fill in a missing principal point with the image centre ((W-1)/2, (H-1)/2)."""
    cx = calibration.cx if np.isfinite(calibration.cx) else (width - 1) / 2.0
    cy = calibration.cy if np.isfinite(calibration.cy) else (height - 1) / 2.0
    return Calibration(calibration.focal, cx, cy, calibration.baseline, calibration.doffs,
                       calibration.ndisp, width, height)


def depth_map(disparity: np.ndarray, calibration: Calibration, max_depth: float | None = None) -> np.ndarray:
    """Z = f·B/(d + doffs) in the baseline's unit; inf where d <= 0, non-finite or beyond max_depth."""
    disparity = np.asarray(disparity, np.float32)
    depth = calibration.depth(np.where(np.isfinite(disparity) & (disparity > 0), disparity, -np.inf))
    if max_depth is not None:
        depth[depth > max_depth] = np.inf
    return depth


def point_cloud(
    disparity: np.ndarray, image: np.ndarray, calibration: Calibration, max_depth: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(N×3 float32 XYZ, N×3 uint8 RGB) for pixels with finite depth: X=(x−cx)·Z/f, Y=(y−cy)·Z/f."""
    height, width = disparity.shape
    calibration = for_image(calibration, height, width)
    depth = depth_map(disparity, calibration, max_depth)
    ys, xs = np.nonzero(np.isfinite(depth))
    z = depth[ys, xs].astype(np.float64)
    x = (xs - calibration.cx) * z / calibration.focal
    y = (ys - calibration.cy) * z / calibration.focal
    return np.stack([x, y, z], axis=1).astype(np.float32), np.asarray(image)[ys, xs].astype(np.uint8)


def write_ply(path: str | Path, points: np.ndarray, colors: np.ndarray) -> None:
    """Binary little-endian PLY with float x, y, z and uchar red, green, blue per vertex."""
    header = (
        "ply\nformat binary_little_endian 1.0\ncomment written by stereo.inference\n"
        f"element vertex {len(points)}\n"
        "property float x\nproperty float y\nproperty float z\n"
        "property uchar red\nproperty uchar green\nproperty uchar blue\nend_header\n"
    ).encode("ascii")
    vertex = np.empty(len(points), dtype=[("xyz", "<f4", 3), ("rgb", "u1", 3)])
    vertex["xyz"], vertex["rgb"] = points, colors
    atomic_write(path, header + vertex.tobytes())


def _write_npy(path: Path, array: np.ndarray) -> None:
    buffer = _bytes_io.BytesIO()
    np.save(buffer, np.asarray(array, np.float32))
    atomic_write(path, buffer.getvalue())


def default_color_range(disparity: np.ndarray) -> tuple[float, float]:
    """0 .. 1.1 × the 99th percentile of the finite disparities (at least 1 px): the colour scale a
    sequence keeps from its first frame, so colours mean the same disparity in every frame."""
    finite = disparity[np.isfinite(disparity)]
    top = float(np.percentile(finite, 99)) * 1.1 if finite.size else 1.0
    return 0.0, max(top, 1.0)


@dataclass
class OutputWriter:
    """Writes the requested formats for each prediction into ``output_dir``.

    ``color_range``: ``(vmin, vmax)`` fixed, or None for a per-sequence range taken once from the
    first prediction written (0 .. its 99th percentile × 1.1) and kept for every later frame, so
    colours mean the same disparity across a sequence (per-frame min/max makes video flicker).
    ``calibration`` (or one passed to ``write``) is required for ``depth`` and ``ply``; ``max_depth`` (baseline's unit) drops far
    points; ``confidence_format`` is ``png16`` or ``pfm``. ``to_original`` maps a rectified depth map onto
    the original reference image (``Rectifier.to_original``) for ``depth_original``; None = the input was
    not rectified here, so the original is the rectified image.
    """

    output_dir: Path
    formats: Sequence[str]
    color_range: tuple[float, float] | None = None
    calibration: Calibration | None = None
    max_depth: float | None = None
    confidence_format: str = "png16"
    to_original: Callable[[np.ndarray], np.ndarray] | None = None

    def __post_init__(self) -> None:
        self.output_dir = Path(self.output_dir)
        unknown = sorted(set(self.formats) - set(FORMATS))
        if unknown:
            raise ValueError(f"unknown output format(s) {unknown}; choose from {list(FORMATS)}")
        if self.max_depth is not None and (isinstance(self.max_depth, bool) or not isinstance(self.max_depth, (int, float))
                                           or not 0 < self.max_depth < np.inf):
            raise ValueError(f"max_depth={self.max_depth}: must be a positive number (depth beyond it, in the baseline's "
                             "unit, is dropped) or null to keep all")
        if self.confidence_format not in ("png16", "pfm"):
            raise ValueError(f"confidence_format must be 'png16' or 'pfm', got {self.confidence_format!r}")
        if self.color_range is not None:
            vmin, vmax = (float(v) for v in self.color_range)
            if not vmin < vmax or not np.isfinite([vmin, vmax]).all():
                raise ValueError(f"color_range must be [vmin, vmax], finite numbers with vmax > vmin, got {self.color_range}")
            self.color_range = (vmin, vmax)

    def path(self, fmt: str, stem: str) -> Path:
        ext = "png" if self.confidence_format == "png16" else "pfm"
        return self.output_dir / FILE_NAMES[fmt].format(stem=stem, ext=ext)

    def write(
        self,
        stem: str,
        disparity: np.ndarray,
        confidence: np.ndarray,
        image: np.ndarray,
        calibration: Calibration | None = None,
    ) -> dict[str, Path]:
        """Write every requested format for one prediction; returns {format: path written}.

        ``calibration`` overrides the writer's own for this image (e.g. a scene's calib.txt).
        """
        calibration = calibration or self.calibration
        if {"depth", "depth_original", "ply"} & set(self.formats) and calibration is None:
            raise ValueError(
                f"{stem}: formats 'depth' and 'ply' need a calibration: calib=<calibration file> "
                "or focal=<px> baseline=<unit of depth> [doffs=<px>]"
            )
        written = {}
        for fmt in self.formats:
            path = self.path(fmt, stem)
            path.parent.mkdir(parents=True, exist_ok=True)
            getattr(self, f"_write_{fmt}")(path, disparity, confidence, image, calibration)
            written[fmt] = path
        return written

    def _write_pfm(self, path, disparity, confidence, image, calibration) -> None:
        write_pfm(path, np.asarray(disparity, np.float32))

    def _write_png16(self, path, disparity, confidence, image, calibration) -> None:
        write_disparity_png16(path, disparity)

    def _write_npy(self, path, disparity, confidence, image, calibration) -> None:
        _write_npy(path, disparity)

    def colorized(self, disparity: np.ndarray) -> np.ndarray:
        """``disparity`` in the run's colour scale (fixed from the first frame when not given)."""
        if self.color_range is None:
            self.color_range = default_color_range(disparity)
        return colorize_disparity(disparity, *self.color_range)

    def _write_color(self, path, disparity, confidence, image, calibration) -> None:
        write_image(path, self.colorized(disparity))

    def _write_depth(self, path, disparity, confidence, image, calibration) -> None:
        calibration = for_image(calibration, *disparity.shape)
        write_pfm(path, depth_map(disparity, calibration, self.max_depth))

    def _write_depth_original(self, path, disparity, confidence, image, calibration) -> None:
        depth = depth_map(disparity, for_image(calibration, *disparity.shape), self.max_depth)
        write_pfm(path, self.to_original(depth) if self.to_original is not None else depth)

    def _write_ply(self, path, disparity, confidence, image, calibration) -> None:
        write_ply(path, *point_cloud(disparity, image, calibration, self.max_depth))

    def _write_confidence(self, path, disparity, confidence, image, calibration) -> None:
        confidence = np.clip(np.asarray(confidence, np.float32), 0.0, 1.0)
        if self.confidence_format == "pfm":
            write_pfm(path, confidence)
        else:
            write_png16(path, np.rint(confidence * CONFIDENCE_PNG_SCALE))
