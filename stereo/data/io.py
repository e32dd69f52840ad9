"""Readers and writers for every file format stereo datasets use, one function per job.

Why our own code instead of ``cv2.imread``/``imageio`` directly: real files have quirks that the
generic readers get wrong or hide. Scene Flow PFM headers carry trailing spaces (OpenCV's PFM reader
rejects them) and store rows bottom-to-top; KITTI disparities are uint16 PNGs scaled by 256 with 0
meaning "no ground truth"; older Middlebury sets store 8-bit disparities with a per-set scale; some
PNGs are RGBA or grey. And a truncated or corrupt file must fail with an error naming the file, not
with ``None`` flowing into numpy three calls later.

Every reader takes the file's bytes itself and decodes from memory, so a short read is detected and
reported. Every writer writes a temporary file in the destination folder and renames it into place,
so a crash never leaves half a file behind.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

PathLike = str | os.PathLike

# Scale of KITTI's uint16 disparity PNGs: disparity = value / 256, value 0 = no ground truth.
KITTI_DISPARITY_SCALE = 256.0

# `P[fF]`, width, height, scale, each on its own line; trailing blanks allowed (real Scene Flow
# headers read "Pf \n960 540 \n-1.0\n"). Data starts right after the newline ending the scale line.
_PFM_HEADER = re.compile(rb"\A(P[fF])\s+(\d+)\s+(\d+)\s+(\S+)[ \t\r]*\n")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# The most pixels an image may have: 16384 x 16384 (805 MB as RGB). Far beyond what the networks can
# match (their cost volume grows with the pixel count), and a bound on what a hostile header costs.
MAX_IMAGE_PIXELS = 1 << 28


class DataError(ValueError):
    """A data file exists but its content is unusable (corrupt, truncated, wrong kind)."""


def _read_bytes(path: PathLike) -> bytes:
    try:
        data = Path(path).read_bytes()
    except IsADirectoryError:
        raise DataError(f"{path}: is a folder, expected a file") from None
    if not data:
        raise DataError(f"{path}: file is empty")
    return data


def _header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG's IHDR or a JPEG's start-of-frame marker, without decoding; None
    for other formats or an unreadable header (the decoder then judges)."""
    if data.startswith(_PNG_SIGNATURE) and data[12:16] == b"IHDR":
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if data.startswith(b"\xff\xd8"):
        at = 2
        while at + 9 <= len(data) and data[at] == 0xFF:
            marker, length = data[at + 1], int.from_bytes(data[at + 2:at + 4], "big")
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # a start of frame: its size
                return int.from_bytes(data[at + 7:at + 9], "big"), int.from_bytes(data[at + 5:at + 7], "big")
            at += 2 + length
    return None


def _decode_with_opencv(path: PathLike, data: bytes) -> np.ndarray:
    """Decode PNG/JPEG/WebP/PPM/PGM bytes as stored (bit depth and channel count kept).

    A file whose header announces more than ``MAX_IMAGE_PIXELS`` is refused before decoding: a few
    hundred kilobytes of PNG can decompress to gigabytes (a decompression bomb)."""
    size = _header_size(data)
    if size is not None and size[0] * size[1] > MAX_IMAGE_PIXELS:
        raise DataError(f"{path}: the image header says {size[0]}x{size[1]} pixels, more than the {MAX_IMAGE_PIXELS:,} "
                        "this program decodes (a corrupt or hostile file?); use a smaller image")
    if data.startswith(_PNG_SIGNATURE) and b"IEND" not in data[-12:]:
        # Some libpng/OpenCV builds return a partially decoded image for a cut-off PNG.
        raise DataError(f"{path}: PNG file is truncated (no IEND chunk at the end, {len(data)} bytes)")
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error:  # OpenCV's own size limit, for the formats whose header is not read above
        image = None
    if image is None:
        raise DataError(f"{path}: cannot decode image ({len(data)} bytes): corrupt, truncated or unsupported format")
    return image


def read_image(path: PathLike) -> np.ndarray:
    """Read an image as uint8 H×W×3 RGB: RGBA drops alpha, grey becomes 3 channels, 16 bit is scaled."""
    image = _decode_with_opencv(path, _read_bytes(path))
    if image.dtype == np.uint16:
        image = ((image.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise DataError(f"{path}: unsupported image sample type {image.dtype} (expected 8 or 16 bit)")
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    channels = image.shape[2]
    if channels == 1:
        return cv2.cvtColor(image[:, :, 0], cv2.COLOR_GRAY2RGB)
    if channels == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    if channels == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    raise DataError(f"{path}: unsupported channel count {channels}")


def read_mask(path: PathLike) -> np.ndarray:
    """Read a single-channel 8-bit mask (e.g. Middlebury ``mask0nocc.png``) as stored, uint8 H×W."""
    mask = _decode_with_opencv(path, _read_bytes(path))
    if mask.ndim != 2 or mask.dtype != np.uint8:
        raise DataError(f"{path}: expected a single-channel 8-bit mask, got {mask.dtype} {mask.shape}")
    return mask


def read_pfm(path: PathLike) -> np.ndarray:
    """Read a PFM file as float32 H×W (``Pf``) or H×W×3 (``PF``), top row first, native byte order."""
    return _decode_pfm(path, _read_bytes(path))


def _decode_pfm(path: PathLike, data: bytes) -> np.ndarray:
    header = _PFM_HEADER.match(data[:256])
    if header is None:
        raise DataError(f"{path}: not a PFM file (expected a 'Pf'/'PF', 'width height', 'scale' header)")
    kind, width, height, scale_text = header.groups()
    width, height = int(width), int(height)
    try:
        scale = float(scale_text)
    except ValueError:
        raise DataError(f"{path}: PFM scale {scale_text!r} is not a number") from None
    if scale == 0.0 or not math.isfinite(scale):
        raise DataError(f"{path}: PFM scale {scale_text.decode(errors='replace')} gives no byte order")
    channels = 3 if kind == b"PF" else 1
    expected = width * height * channels * 4
    available = len(data) - header.end()
    if width == 0 or height == 0 or available != expected:
        raise DataError(
            f"{path}: PFM header says {width}x{height}x{channels} float32 ({expected} bytes) "
            f"but the file holds {available} bytes of data"
        )
    dtype = np.dtype("<f4") if scale < 0 else np.dtype(">f4")
    shape = (height, width) if channels == 1 else (height, width, 3)
    stored = np.frombuffer(data, dtype, count=width * height * channels, offset=header.end()).reshape(shape)
    # Rows are stored bottom-to-top: one copy both flips them and converts to native float32.
    return np.array(stored[::-1], dtype=np.float32, order="C")


def read_disparity(path: PathLike, scale: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read a ground-truth disparity map as (float32 H×W disparity, bool H×W valid) (see
    :func:`read_disparity_counted`)."""
    disparity, valid, _ = read_disparity_counted(path, scale)
    return disparity, valid


def read_disparity_counted(path: PathLike, scale: float | None = None) -> tuple[np.ndarray, np.ndarray, int]:
    """Read a ground-truth disparity map as (float32 H×W disparity, bool H×W valid, number of NaN/inf
    pixels): the count lets evaluation report the non-finite pixels this reader masks.

    The decoder follows the file's content, not its name: PFM (disparity = value / scale, scale 1 by
    default; inf/NaN mark unknown pixels), 16-bit PNG (KITTI: value / 256 unless ``scale`` says
    otherwise; 0 = unknown) or 8-bit PNG/PGM (older Middlebury: value / ``scale``, which is required
    because each set uses its own; 0 = unknown). Negative disparities cannot come from a rectified
    pair (Scene Flow has a few corrupt ones) and are marked invalid too. Invalid pixels are set to 0.
    """
    if scale is not None and not (scale > 0 and math.isfinite(scale)):
        raise ValueError(f"{path}: disparity scale must be a positive number, got {scale}")
    data = _read_bytes(path)
    if data[:2] in (b"Pf", b"PF"):
        stored = _decode_pfm(path, data)
        if stored.ndim != 2:
            raise DataError(f"{path}: disparity PFM must have one channel ('Pf'), this one has 3 ('PF')")
        disparity = stored if scale is None else stored / np.float32(scale)
        valid = np.isfinite(disparity) & (disparity >= 0)
        nonfinite = int(np.count_nonzero(~np.isfinite(stored)))
    else:
        raw = _decode_with_opencv(path, data)
        if raw.ndim != 2:
            raise DataError(f"{path}: disparity image must have one channel, this one has {raw.shape[2]}")
        if raw.dtype == np.uint16:
            divisor = KITTI_DISPARITY_SCALE if scale is None else scale
        elif raw.dtype == np.uint8:
            if scale is None and re.search(r"disp_(occ|noc)|kitti", str(path), re.IGNORECASE):
                raise DataError(
                    f"{path}: an 8-bit PNG, but KITTI ground truth is 16-bit (disparity = value / 256, 0 = unknown): "
                    "the file was converted or re-saved and lost its precision; use the original "
                    "disp_occ_0/disp_noc_0 PNGs of the KITTI download"
                )
            if scale is None:
                raise ValueError(
                    f"{path}: 8-bit disparity needs an explicit scale (disparity = value / scale), "
                    "e.g. 16 Tsukuba, 8 Venus, 4 Cones/Teddy, 2 half-size Middlebury 2005/2006"
                )
            divisor = scale
        else:
            raise DataError(f"{path}: unsupported disparity sample type {raw.dtype}")
        disparity = raw.astype(np.float32) / np.float32(divisor)
        valid = raw > 0
        nonfinite = 0
    disparity[~valid] = 0.0
    return disparity, valid, nonfinite


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def json_bytes(value: Any) -> bytes:
    """``value`` as indented JSON text that every JSON reader accepts: NaN and infinities, which
    Python would write as the bare words ``NaN``/``Infinity`` (not JSON), become null; what JSON has
    no type for (a path) becomes its text."""
    return (json.dumps(_json_safe(value), indent=2, allow_nan=False, default=str) + "\n").encode("utf-8")


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def atomic_write(path: PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # the pid in the name lets a later run recognise (and remove) a killed writer's leftover
    fd, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp creates 0600; give the file what open() would
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def write_pfm(path: PathLike, array: np.ndarray) -> None:
    """Write float H×W (``Pf``) or H×W×3 (``PF``) data as little-endian PFM, rows bottom-to-top."""
    array = np.asarray(array)
    if array.ndim == 2:
        kind = "Pf"
    elif array.ndim == 3 and array.shape[2] == 3:
        kind = "PF"
    else:
        raise ValueError(f"{path}: PFM holds H×W or H×W×3 data, got shape {array.shape}")
    height, width = array.shape[:2]
    header = f"{kind}\n{width} {height}\n-1.0\n".encode("ascii")
    atomic_write(path, header + np.ascontiguousarray(array[::-1], dtype="<f4").tobytes())


def _encode(path: PathLike, image: np.ndarray) -> bytes:
    extension = Path(path).suffix or ".png"
    ok, encoded = cv2.imencode(extension, image)
    if not ok:
        raise ValueError(f"{path}: OpenCV cannot encode a {image.dtype} {image.shape} image as {extension}")
    return encoded.tobytes()


def write_image(path: PathLike, image: np.ndarray) -> None:
    """Write a uint8 H×W×3 RGB (or H×W grey) image; the format follows the file extension."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
        raise ValueError(f"{path}: expected uint8 H×W×3 RGB or H×W grey, got {image.dtype} {image.shape}")
    atomic_write(path, _encode(path, image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2BGR)))


def write_png16(path: PathLike, values: np.ndarray) -> None:
    """Write H×W whole numbers in [0, 65535] as a 16-bit grey PNG (values outside are refused, not wrapped)."""
    values = np.asarray(values)
    if values.ndim != 2 or not np.isfinite(values).all() or values.min(initial=0) < 0 or values.max(initial=0) > 65535:
        raise ValueError(f"{path}: a 16-bit PNG holds H×W values in [0, 65535], got {values.dtype} {values.shape}")
    atomic_write(path, _encode(Path(path).with_suffix(".png"), values.astype(np.uint16)))


def write_disparity_png16(path: PathLike, disparity: np.ndarray, valid: np.ndarray | None = None) -> None:
    """Write disparity as a KITTI uint16 PNG (value = round(d·256), 0 = invalid).

    Without ``valid``, finite positive pixels are valid (the readers store unknown pixels as 0). A
    valid pixel never becomes 0 (it is stored as 1, i.e. 1/256 px) and large values clip at 65535
    (255.996 px), the format's range.
    """
    disparity = np.asarray(disparity, dtype=np.float64)
    if disparity.ndim != 2:
        raise ValueError(f"{path}: disparity must be H×W, got shape {disparity.shape}")
    finite = np.isfinite(disparity)
    if valid is None:
        valid = finite & (disparity > 0)
    else:
        valid = np.asarray(valid, dtype=bool) & finite & (disparity >= 0)
    stored = np.zeros(disparity.shape, np.uint16)
    stored[valid] = np.clip(np.rint(disparity[valid] * KITTI_DISPARITY_SCALE), 1, 65535).astype(np.uint16)
    write_png16(path, stored)


@dataclass(frozen=True)
class Calibration:
    """The depth geometry of a rectified pair: the reference view's intrinsics, baseline and doffs.

    Read from any calibration file by ``stereo.calibration`` (``StereoRig.depth_geometry``). Depth from disparity: Z = baseline · focal / (d + doffs), in the unit of ``baseline``
    (millimetres for Middlebury).
    """

    focal: float
    cx: float
    cy: float
    baseline: float
    doffs: float
    ndisp: int | None
    width: int
    height: int

    def depth(self, disparity: np.ndarray) -> np.ndarray:
        """Depth map for a disparity map (inf where d + doffs <= 0)."""
        denominator = np.asarray(disparity, np.float64) + self.doffs
        with np.errstate(divide="ignore"):
            depth = np.where(denominator > 0, self.baseline * self.focal / denominator, np.inf)
        return depth.astype(np.float32)
