"""Our calibration file: OpenCV FileStorage YAML, so OpenCV (C++ and Python) reads it directly.

Keys: ``image_width``/``image_height``, ``K1 D1 K2 D2 R T`` (``stereoCalibrate``), ``R1 R2 P1 P2 Q``,
``rectified_width``/``rectified_height`` and ``alpha`` (``stereoRectify``), ``unit`` (the length unit of T).
The file is rendered in memory and written atomically. :func:`read_opencv` also reads files that
OpenCV's ``stereo_calib`` sample or other tools wrote (``M1``/``M2`` for K, ``.xml`` as well as
``.yml``, the sample's intrinsics and extrinsics files together); the rectification is recomputed
when the files have none.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np

from stereo.calibration.rig import CalibrationError, StereoRig, as_matrix, as_size
from stereo.data.io import atomic_write

MATRICES = ("K1", "D1", "K2", "D2", "R", "T", "R1", "R2", "P1", "P2", "Q")
# Other spellings of the same field in files other tools write (OpenCV's stereo_calib sample: M1, M2).
ALIASES = {"K1": ("K1", "M1", "cameraMatrix1", "camera_matrix_left"), "K2": ("K2", "M2", "cameraMatrix2", "camera_matrix_right"),
           "D1": ("D1", "distCoeffs1", "dist_coeffs_left"), "D2": ("D2", "distCoeffs2", "dist_coeffs_right")}


def render_opencv(rig: StereoRig, suffix: str = ".yaml") -> str:
    """The FileStorage text of ``rig``: XML for ``suffix`` ``.xml``, YAML otherwise."""
    name = "calibration.xml" if suffix.lower() == ".xml" else "calibration.yaml"
    storage = cv2.FileStorage(name, cv2.FILE_STORAGE_WRITE | cv2.FILE_STORAGE_MEMORY)
    storage.write("image_width", int(rig.image_size[0]))
    storage.write("image_height", int(rig.image_size[1]))
    for name in MATRICES:
        value = np.asarray(getattr(rig, name), np.float64)
        storage.write(name, value.reshape(1, -1) if name in ("D1", "D2") else value)  # 1xN, as calibrateCamera returns
    storage.write("rectified_width", int(rig.rectified_size[0]))
    storage.write("rectified_height", int(rig.rectified_size[1]))
    storage.write("alpha", float(rig.alpha))
    storage.write("unit", rig.unit)
    return storage.releaseAndGetString()


def write_opencv(path: str | Path, rig: StereoRig) -> None:
    """Write ``rig`` to ``path`` (OpenCV FileStorage: XML for a ``.xml`` path, YAML otherwise), atomically."""
    atomic_write(path, render_opencv(rig, Path(path).suffix).encode("utf-8"))


def _open(path: str | Path) -> cv2.FileStorage:
    try:
        storage = cv2.FileStorage(str(path), cv2.FILE_STORAGE_READ)
    except (cv2.error, SystemError) as error:  # a parse error (truncated, invalid YAML, unterminated XML)
        detail = _parse_error(error)
        raise CalibrationError(f"{path}: not a readable OpenCV FileStorage file{detail}: the file is truncated or "
                               "not valid YAML/XML; write it again (stereo.calibrate, cv2.FileStorage)") from None
    if not storage.isOpened():
        raise CalibrationError(f"{path}: cannot be opened as an OpenCV FileStorage file")
    return storage


def _parse_error(error: BaseException) -> str:
    """Where and why OpenCV's parser stopped (``... in function 'rig.yaml(44): Missing , between the
    elements'``) as `` (line 44: ...)``, or nothing."""
    text = " ".join(str(e) for e in (error, error.__cause__, error.__context__) if e is not None)
    match = re.search(r"in function '[^']*\((\d+)\): ([^'\n]*)'", text)
    return f" (line {match.group(1)}: {match.group(2).strip()})" if match else ""


def _matrix(found: cv2.FileNode, name: str, source: str) -> np.ndarray:
    """An ``!!opencv-matrix`` node, or a plain list of numbers (the reader checks its size)."""
    if found.isSeq():
        values = [found.at(i) for i in range(found.size())]
        if not all(v.isReal() or v.isInt() for v in values):
            raise CalibrationError(f"{source}: field {name} is not a list of numbers")
        return np.array([v.real() for v in values])
    try:
        value = found.mat() if found.isMap() else None
    except cv2.error:  # rows x cols does not match the data, an unknown dt
        value = None
    if value is None:
        raise CalibrationError(f"{source}: field {name} is not an OpenCV matrix (!!opencv-matrix with rows, cols, "
                               "dt: d and rows x cols values in data)")
    return value


def _real(found: cv2.FileNode, name: str, source: str) -> float:
    if not (found.isReal() or found.isInt()):
        raise CalibrationError(f"{source}: field {name} is not a number")
    return found.real()


def read_opencv(path: str | Path | Sequence[str | Path]) -> StereoRig:
    """A stereo calibration from an OpenCV FileStorage file (YAML or XML), or from several whose fields
    together make one (OpenCV's ``stereo_calib`` sample writes intrinsics.yml and extrinsics.yml)."""
    paths = [path] if isinstance(path, (str, Path)) else list(path)
    source = ",".join(str(p) for p in paths)
    storages: list[cv2.FileStorage] = []
    try:
        for one in paths:
            storages.append(_open(one))

        def node(name: str):
            for storage in storages:
                for key in ALIASES.get(name, (name,)):
                    found = storage.getNode(key)
                    if not found.empty():
                        return found
            return None

        def matrix(name: str) -> np.ndarray | None:
            found = node(name)
            return None if found is None else _matrix(found, name, source)

        def number(name: str) -> float | None:
            found = node(name)
            return None if found is None else _real(found, name, source)

        missing = [name for name in ("K1", "D1", "K2", "D2", "R", "T") if node(name) is None]
        if missing:
            raise CalibrationError(f"{source}: no field {missing[0]} (a stereo calibration needs K1 D1 K2 D2 R T "
                                   "and image_width/image_height)")
        size = _stored_size(node, source)
        unit_node = node("unit")
        unit = unit_node.string() if unit_node is not None and unit_node.isString() else "unit"
        pose = {name: matrix(name) for name in ("K1", "D1", "K2", "D2", "R", "T")}
        rectification = {name: matrix(name) for name in ("R1", "R2", "P1", "P2", "Q")}
        rectified_width, rectified_height = number("rectified_width"), number("rectified_height")
        rectified_size = (rectified_width, rectified_height) if rectified_width and rectified_height else None
        alpha = number("alpha") or 0.0
    finally:
        for storage in storages:
            storage.release()
    rig = StereoRig.from_pose(pose["K1"], pose["D1"], pose["K2"], pose["D2"], pose["R"], pose["T"], size,
                              unit=unit, source=source, alpha=alpha, rectified_size=rectified_size)
    if all(value is not None for value in rectification.values()):
        shapes = {"R1": (3, 3), "R2": (3, 3), "P1": (3, 4), "P2": (3, 4), "Q": (4, 4)}
        stored = {name: as_matrix(value, shapes[name], name, source) for name, value in rectification.items()}
        rig = replace(rig, **stored, needs_remap=not _is_identity_rectification(rig.K1, rig.D1, rig.K2, rig.D2, stored))
    return rig


def _stored_size(node, source: str) -> tuple[int, int]:
    width, height = node("image_width"), node("image_height")
    if width is not None and height is not None:
        return as_size((_real(width, "image_width", source), _real(height, "image_height", source)),
                       "image_width/image_height", source)
    for key in ("image_size", "imageSize"):
        found = node(key)
        if found is not None:
            return as_size(_matrix(found, key, source), key, source)
    raise CalibrationError(f"{source}: no field image_width/image_height (or image_size): the calibration must say "
                           "which image size it is for; add 'image_width: <w>' and 'image_height: <h>' lines")


def _is_identity_rectification(K1, D1, K2, D2, stored: dict[str, np.ndarray]) -> bool:
    """True for a file that describes an already-rectified pair (no distortion, R1 = R2 = I, P = [K | .]):
    remapping would only resample the images."""
    eye = np.eye(3)
    return (not np.any(D1) and not np.any(D2) and np.array_equal(stored["R1"], eye) and np.array_equal(stored["R2"], eye)
            and np.array_equal(stored["P1"][:, :3], K1) and np.array_equal(stored["P2"][:, :3], K2))
