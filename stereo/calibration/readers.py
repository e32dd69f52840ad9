"""Read the stereo calibrations users already have into one :class:`StereoRig`.

| format                         | recognised by                          | gives                                  |
|--------------------------------|----------------------------------------|----------------------------------------|
| OpenCV FileStorage (ours, ``stereoCalibrate`` tools) | ``.yml/.yaml/.xml`` with ``%YAML``/``<opencv_storage>`` | K, D, R, T (+ R1 R2 P1 P2 Q) |
| ROS ``camera_info`` pair       | two YAML files: ``calib=[left.yaml,right.yaml]`` | K, D, R1 R2 P1 P2 per camera |
| OpenCV ``stereo_calib`` pair   | ``calib=[intrinsics.yml,extrinsics.yml]`` | as one OpenCV file             |
| KITTI ``calib_cam_to_cam.txt`` | ``P_rect_02:`` lines                   | rectified P_rect (default) or raw K/D/R/T |
| Middlebury 2014 / ETH3D ``calib.txt`` | ``cam0=[...]`` lines            | rectified pair (mm for Middlebury)     |
| ETH3D ``cameras.txt`` (COLMAP text) | ``<id> PINHOLE w h fx fy cx cy`` lines, with ``images.txt`` beside it | rectified pair (m) |

A file that matches no format, or whose fields contradict each other, gets one line naming the file
and the field.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from stereo.calibration.rig import (CalibrationError, StereoRig, as_matrix, as_size, check_baseline, check_camera,
                                    check_distortion, check_projection, check_rotation, disparity_to_depth_matrix)
from stereo.calibration.storage import read_opencv
from stereo.data.io import Calibration

PathLike = str | Path
KITTI_CAMERAS = ("02", "03")  # the colour pair the KITTI stereo benchmarks use (image_2 = left, image_3 = right)
# Middlebury states doffs and both cameras' cx to 3 decimals: they must agree to that rounding.
DOFFS_TOLERANCE = 1e-3
# ndisp is a disparity range in pixels: no image is wider than this (a bound that keeps int() finite).
MAX_NDISP = 1 << 20


def _text(path: Path) -> str:
    try:
        data = path.read_bytes()
    except IsADirectoryError:
        raise CalibrationError(f"{path}: is a folder, expected a calibration file") from None
    if not data.strip():
        raise CalibrationError(f"{path}: calibration file is empty")
    return data.decode("utf-8", errors="replace")


def _is_opencv(text: str) -> bool:
    head = text.lstrip()[:200]
    return head.startswith("%YAML") or "<opencv_storage>" in head or "!!opencv-matrix" in text


def require_calibration_files(calib: PathLike | Sequence[PathLike], key: str = "calib") -> None:
    """FileNotFoundError naming the option for a calibration file that does not exist."""
    for path in [calib] if isinstance(calib, (str, Path)) else list(calib):
        if not Path(str(path)).is_file():
            raise FileNotFoundError(f"{key}={path}: file not found; give a calibration file "
                                    "(docs/rig.md#calibration-files) or focal=<px> baseline=<unit> instead")


def read_calibration(path: PathLike | Sequence[PathLike], *, kitti_cameras: tuple[str, str] = KITTI_CAMERAS,
                     kitti_raw: bool = False) -> StereoRig:
    """The stereo calibration in ``path`` (any supported format), or in two ROS camera_info files;
    ``files`` of the rig lists the file(s) read."""
    rig = _read_calibration(path, kitti_cameras, kitti_raw)
    paths = [path] if isinstance(path, (str, Path)) else list(path)
    return replace(rig, files=tuple(str(p) for p in paths))


def _read_calibration(path: PathLike | Sequence[PathLike], kitti_cameras: tuple[str, str], kitti_raw: bool) -> StereoRig:
    if not isinstance(path, (str, Path)):
        paths = [Path(str(p)) for p in path]
        if len(paths) == 1:
            return _read_calibration(paths[0], kitti_cameras, kitti_raw)
        if len(paths) != 2:
            raise CalibrationError(f"calib={[str(p) for p in paths]}: give one calibration file, two ROS "
                                   "camera_info files (left, right) or OpenCV's intrinsics and extrinsics files")
        for one in paths:
            if not one.is_file():
                raise FileNotFoundError(f"{one}: calibration file not found")
        if all(_is_opencv(_text(p)) for p in paths):
            return read_opencv(paths)
        return read_ros_pair(*paths)
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: calibration file not found")
    text = _text(path)
    if _is_opencv(text):
        return read_opencv(path)
    if re.search(r"^\s*P_rect_\d\d\s*:", text, re.M):
        return read_kitti(path, text, kitti_cameras, kitti_raw)
    if re.search(r"^\s*cam0\s*=", text, re.M):
        return read_middlebury(path, text)
    if re.search(r"^\s*camera_matrix\s*:", text, re.M) and re.search(r"^\s*projection_matrix\s*:", text, re.M):
        raise CalibrationError(f"{path}: a ROS camera_info file describes one camera; give both: "
                               "calib=[left.yaml,right.yaml]")
    if re.search(r"^\s*\d+\s+[A-Z_]+\s+\d+\s+\d+(\s+\S+)+\s*$", text, re.M):
        return read_eth3d_cameras(path, text)
    raise CalibrationError(f"{path}: unknown calibration format (supported: OpenCV YAML/XML, ROS camera_info pair, "
                           "KITTI calib_cam_to_cam.txt, Middlebury/ETH3D calib.txt, ETH3D cameras.txt)")


def read_depth_geometry(path: PathLike) -> Calibration:
    """Focal, principal point, baseline and doffs (for depth from disparity) of any supported file."""
    return read_calibration(path).depth_geometry()


# ---- KITTI -----------------------------------------------------------------------------------
def _kitti_fields(path: Path, text: str) -> dict[str, np.ndarray]:
    fields: dict[str, np.ndarray] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        key = key.strip()
        if not sep or not re.fullmatch(r"[A-Za-z_]+_\d\d", key):
            continue  # calib_time, corner_dist, blank lines
        try:
            fields[key] = np.array([float(v) for v in value.split()])
        except ValueError:
            raise CalibrationError(f"{path}: field {key} is not a list of numbers") from None
    return fields


def read_kitti(path: Path, text: str | None = None, cameras: tuple[str, str] = KITTI_CAMERAS,
               raw: bool = False) -> StereoRig:
    """KITTI ``calib_cam_to_cam.txt``: the rectified pair (``P_rect``, ``S_rect``: KITTI's rectified
    images), or with ``raw`` the unrectified cameras (K, D, each camera's pose R, T relative to camera
    00) with KITTI's rectification of them (``R_rect``, ``P_rect``), in metres."""
    fields = _kitti_fields(path, _text(path) if text is None else text)
    left, right = cameras

    def get(name: str, shape: tuple[int, ...]) -> np.ndarray:
        if name not in fields:
            raise CalibrationError(f"{path}: no field {name} (cameras {left} and {right} of a KITTI calib_cam_to_cam.txt)")
        return as_matrix(fields[name], shape, name, str(path))

    if not raw:
        return StereoRig.from_rectified(get(f"P_rect_{left}", (3, 4)), get(f"P_rect_{right}", (3, 4)),
                                        get(f"S_rect_{left}", (2,)), unit="m", source=str(path))
    R_left, R_right = get(f"R_{left}", (3, 3)), get(f"R_{right}", (3, 3))
    T_left, T_right = get(f"T_{left}", (3, 1)), get(f"T_{right}", (3, 1))
    R = R_right @ R_left.T  # x_right = R_right (R_left^T (x_left - T_left)) + T_right
    # KITTI's own rectification (R_rect_0i = R_rect_00 R_0i^T), so raw frames rectify to KITTI's rectified images
    rectified = StereoRig.from_rectified(get(f"P_rect_{left}", (3, 4)), get(f"P_rect_{right}", (3, 4)),
                                         get(f"S_rect_{left}", (2,)), unit="m", source=str(path))
    return StereoRig(get(f"K_{left}", (3, 3)), get(f"D_{left}", (5,)), get(f"K_{right}", (3, 3)), get(f"D_{right}", (5,)),
                     R, T_right - R @ T_left, as_size(get(f"S_{left}", (2,)), f"S_{left}", str(path)),
                     get(f"R_rect_{left}", (3, 3)), get(f"R_rect_{right}", (3, 3)), rectified.P1, rectified.P2,
                     rectified.Q, rectified.rectified_size, "m", None, str(path))


# ---- Middlebury 2014 / ETH3D calib.txt -----------------------------------------------------------
def _camera_matrix(path: Path, key: str, text: str) -> np.ndarray:
    try:
        values = [float(v) for v in text.strip().strip("[]").replace(";", " ").split()]
    except ValueError:
        values = []
    if len(values) != 9:
        raise CalibrationError(f"{path}: camera matrix {key}={text!r} is not 3x3 '[f 0 cx; 0 f cy; 0 0 1]'")
    return np.asarray(values).reshape(3, 3)


def read_middlebury(path: PathLike, text: str | None = None) -> StereoRig:
    """Middlebury 2014 / ETH3D ``calib.txt`` (``key=value`` lines; cam0, cam1 = [f 0 cx; 0 f cy; 0 0 1],
    doffs = cam1's cx - cam0's cx, baseline in mm for Middlebury)."""
    path = Path(path)
    entries: dict[str, str] = {}
    for line in (_text(path) if text is None else text).splitlines():
        if "=" in line:
            key, value = line.split("=", 1)
            entries[key.strip()] = value.strip()

    def required(key: str) -> str:
        if key not in entries:
            raise CalibrationError(f"{path}: calib.txt has no '{key}=' line")
        return entries[key]

    def number(key: str) -> float:
        text = required(key)
        try:
            value = float(text)
        except ValueError:
            value = np.nan
        if not np.isfinite(value):
            raise CalibrationError(f"{path}: '{key}={text}' is not a finite number")
        return value

    cam0 = _camera_matrix(path, "cam0", required("cam0"))
    if "cam1" in entries:
        cam1 = _camera_matrix(path, "cam1", entries["cam1"])
        if "doffs" in entries and abs(number("doffs") - (cam1[0, 2] - cam0[0, 2])) > DOFFS_TOLERANCE:
            raise CalibrationError(f"{path}: doffs={entries['doffs']} contradicts cam1's cx - cam0's cx = "
                                   f"{cam1[0, 2] - cam0[0, 2]:.3f}")
    else:
        cam1 = cam0.copy()
        cam1[0, 2] += number("doffs")
    baseline = number("baseline")
    if baseline <= 0:
        raise CalibrationError(f"{path}: baseline={entries['baseline']} is not positive")
    P1, P2 = np.hstack([cam0, np.zeros((3, 1))]), np.hstack([cam1, np.zeros((3, 1))])
    P2[0, 3] = -cam1[0, 0] * baseline
    ndisp = number("ndisp") if "ndisp" in entries else None
    if ndisp is not None and not (ndisp == int(ndisp) and 0 < ndisp <= MAX_NDISP):
        raise CalibrationError(f"{path}: ndisp={entries['ndisp']} is not a whole number from 1 to {MAX_NDISP} "
                               "(the disparity search range in pixels)")
    ndisp = None if ndisp is None else int(ndisp)
    return StereoRig.from_rectified(P1, P2, (number("width"), number("height")), unit="mm", source=str(path),
                                    ndisp=ndisp)


# ---- ETH3D cameras.txt + images.txt (COLMAP text format) ------------------------------------------
def _data_lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def _quaternion_matrix(qw: float, qx: float, qy: float, qz: float, source: Path) -> np.ndarray:
    norm = np.linalg.norm([qw, qx, qy, qz])
    if not 0 < norm < np.inf:
        raise CalibrationError(f"{source}: quaternion {[qw, qx, qy, qz]} is not a rotation (its length must be above 0)")
    q = np.array([qw, qx, qy, qz]) / norm
    w, x, y, z = q
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def read_eth3d_cameras(path: PathLike, text: str | None = None) -> StereoRig:
    """ETH3D two-view ``cameras.txt`` (PINHOLE fx fy cx cy per camera) with the ``images.txt`` beside
    it (the world-to-camera pose of im0 and im1, which gives the baseline), in metres."""
    path = Path(path)
    cameras: dict[str, tuple[np.ndarray, tuple[float, float]]] = {}
    for line in _data_lines(_text(path) if text is None else text):
        parts = line.split()
        if len(parts) < 4:
            raise CalibrationError(f"{path}: line {line!r} is not 'CAMERA_ID MODEL WIDTH HEIGHT PARAMS'")
        if parts[1] != "PINHOLE" or len(parts) != 8:
            raise CalibrationError(f"{path}: camera {parts[0]} field MODEL={parts[1]} with {len(parts) - 4} "
                                   "parameters: a rectified pair has PINHOLE fx fy cx cy cameras")
        try:
            fx, fy, cx, cy = (float(v) for v in parts[4:])
        except ValueError:
            raise CalibrationError(f"{path}: camera {parts[0]}: PINHOLE parameters {parts[4:]} are not numbers") from None
        cameras[parts[0]] = (np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]]), (float(parts[2]), float(parts[3])))
    images_file = path.with_name("images.txt")
    if not images_file.is_file():
        raise CalibrationError(f"{path}: no images.txt beside it: the baseline is in the images' poses "
                               "(or give the scene's calib.txt)")
    poses = []
    lines = _data_lines(_text(images_file))
    for line in lines:
        parts = line.split()
        if len(parts) >= 10 and parts[8] in cameras and re.fullmatch(r"\d+", parts[0]):
            try:
                qw, qx, qy, qz, tx, ty, tz = (float(v) for v in parts[1:8])
            except ValueError:
                continue  # a POINTS2D line
            poses.append((parts[9], parts[8], _quaternion_matrix(qw, qx, qy, qz, images_file), np.array([[tx], [ty], [tz]])))
    if len(poses) != 2:
        raise CalibrationError(f"{images_file}: {len(poses)} image poses, expected 2 (im0 and im1)")
    (_, cam_left, R_left, t_left), (_, cam_right, R_right, t_right) = sorted(poses, key=lambda p: p[0])
    R = R_right @ R_left.T
    T = t_right - R @ t_left
    if np.abs(R - np.eye(3)).max() > 1e-6 or np.abs(T[1:]).max() > 1e-6 * max(1.0, abs(T[0, 0])):
        raise CalibrationError(f"{images_file}: the two poses are not a rectified pair (R != I or T not along x)")
    K1, size = cameras[cam_left]
    K2, _ = cameras[cam_right]
    P1, P2 = np.hstack([K1, np.zeros((3, 1))]), np.hstack([K2, np.zeros((3, 1))])
    P2[0, 3] = K2[0, 0] * T[0, 0]
    return StereoRig.from_rectified(P1, P2, size, unit="m", source=str(path))


# ---- ROS camera_info pair --------------------------------------------------------------------------
ROS_DISTORTION_MODELS = ("plumb_bob", "rational_polynomial")


def _ros_camera(path: Path) -> dict[str, np.ndarray | tuple[int, int]]:
    import yaml  # PyYAML: safe_load builds plain dicts/lists/numbers only

    try:
        info = yaml.safe_load(_text(path))
    except yaml.YAMLError as error:
        raise CalibrationError(f"{path}: not valid YAML ({str(error).splitlines()[0]})") from None
    if not isinstance(info, dict):
        raise CalibrationError(f"{path}: not a ROS camera_info file (no key: value mapping)")

    def field(name: str, check) -> np.ndarray:
        node = info.get(name)
        data = node.get("data") if isinstance(node, dict) else None
        if name == "distortion_coefficients" and not data:
            return np.zeros(5)  # no distortion (camera_calibration writes an empty list for a rectified camera)
        if data is None:
            raise CalibrationError(f"{path}: no field {name}.data (a ROS camera_info file)")
        if not isinstance(data, list):
            raise CalibrationError(f"{path}: field {name}.data is not a list of numbers")
        return check(data, f"{name}.data", str(path))

    model = info.get("distortion_model", "plumb_bob")
    if model not in ROS_DISTORTION_MODELS:
        raise CalibrationError(f"{path}: field distortion_model={model!r}: supported {', '.join(ROS_DISTORTION_MODELS)}")
    if "image_width" not in info or "image_height" not in info:
        raise CalibrationError(f"{path}: no field image_width/image_height")
    return {"K": field("camera_matrix", check_camera), "D": field("distortion_coefficients", check_distortion),
            "R": field("rectification_matrix", check_rotation), "P": field("projection_matrix", check_projection),
            "size": as_size((info["image_width"], info["image_height"]), "image_width/image_height", str(path))}


def read_ros_pair(left: PathLike, right: PathLike) -> StereoRig:
    """Two ROS ``camera_info`` YAML files (left, right) as ``camera_calibration`` writes them: the
    rectification is the one stored (R, P per camera); the pose follows from it."""
    left, right = Path(left), Path(right)
    for path in (left, right):
        if not path.is_file():
            raise FileNotFoundError(f"{path}: ROS camera_info file not found")
    a, b = _ros_camera(left), _ros_camera(right)
    if a["size"] != b["size"]:
        raise CalibrationError(f"{right}: field image_width/image_height {b['size']} differs from {left}'s {a['size']}")
    source = f"{left},{right}"
    P1, P2 = a["P"].copy(), b["P"].copy()
    baseline = P1[0, 3] / P1[0, 0] - P2[0, 3] / P2[0, 0]
    check_baseline(baseline, "projection_matrix", "m", source)
    P1[:, 3] = 0.0
    P2[:, 3] = [-P2[0, 0] * baseline, 0.0, 0.0]
    R1, R2 = a["R"], b["R"]
    R = R2.T @ R1  # x_rect_right = x_rect_left + (-B, 0, 0) and x_rect = R_i x_i
    T = R2.T @ np.array([[-baseline], [0.0], [0.0]])
    return StereoRig(a["K"], a["D"], b["K"], b["D"], R, T, a["size"], R1, R2, P1, P2,
                     disparity_to_depth_matrix(P1, P2), a["size"], "m", None, source)
