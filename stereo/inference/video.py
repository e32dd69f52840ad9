"""Stereo video in, colourised disparity video out, one frame at a time (memory stays flat).

Reading and writing go through OpenCV (a declared dependency; its wheels bundle FFmpeg), because
imageio's video plugins need packages this project does not install (imageio-ffmpeg or PyAV).
Inputs: one side-by-side (``sbs``: left | right) or top-and-bottom (``tab``: left over right) video,
or two videos of equal length. The output codec follows the extension:

| extension | codec | notes |
|-----------|-------|-------|
| ``.mp4``  | MPEG-4 part 2 (``mp4v``) | lossy; plays in VLC/ffplay, not in every browser |
| ``.avi``  | Motion JPEG (``MJPG``)   | lossy, every frame a JPEG |
| ``.mkv``  | FFV1                      | lossless (frames decode to exactly the colours written) |
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

LAYOUTS = ("sbs", "tab")
CODECS = {".mp4": "mp4v", ".avi": "MJPG", ".mkv": "FFV1"}


class VideoError(ValueError):
    """A video that cannot be read or written, or inputs that do not form a stereo sequence."""


def _open(path: str | Path) -> cv2.VideoCapture:
    path = Path(path)
    if not path.is_file():
        raise VideoError(f"{path}: video file not found")
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise VideoError(f"{path}: OpenCV cannot open this video (unknown container or codec)")
    return capture


def video_info(path: str | Path) -> tuple[int | None, float | None]:
    """(frame count, frames per second) as the container states them; None where it states none."""
    capture = _open(path)
    count, fps = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)), float(capture.get(cv2.CAP_PROP_FPS))
    capture.release()
    return (count if count > 0 else None), (fps if fps > 0 else None)


def read_frames(path: str | Path) -> Iterator[np.ndarray]:
    """The video's frames as H×W×3 uint8 RGB, decoded one at a time."""
    capture = _open(path)
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                return
            yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    finally:
        capture.release()


def split_frame(frame: np.ndarray, layout: str, path: str | Path = "video") -> tuple[np.ndarray, np.ndarray]:
    """(left, right) halves of a side-by-side (``sbs``) or top-and-bottom (``tab``) stereo frame."""
    if layout not in LAYOUTS:
        raise VideoError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    axis = 1 if layout == "sbs" else 0
    if frame.shape[axis] % 2:
        side = "width" if axis else "height"
        raise VideoError(f"{path}: a {layout} frame needs an even {side}, this one is {frame.shape[1]}x{frame.shape[0]}")
    left, right = np.split(frame, 2, axis=axis)
    return np.ascontiguousarray(left), np.ascontiguousarray(right)


def stereo_frames(video: str | Path | None = None, layout: str = "sbs", left_video: str | Path | None = None,
                  right_video: str | Path | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(left, right) per frame from one packed video or from two videos (whose lengths must match)."""
    if video is not None:
        for frame in read_frames(video):
            yield split_frame(frame, layout, video)
        return
    lefts, rights = read_frames(left_video), read_frames(right_video)
    for index, left in enumerate(lefts):
        right = next(rights, None)
        if right is None:
            raise VideoError(f"{right_video}: ends after {index} frames, before {left_video}")
        yield left, right
    if next(rights, None) is not None:
        raise VideoError(f"{left_video}: ends before {right_video}; the two videos must have the same frame count")


class VideoWriter:
    """Appends H×W×3 uint8 RGB frames to ``path``; the file appears under its name only when closed
    successfully (written under a temporary name in the same folder, then renamed)."""

    def __init__(self, path: str | Path, fps: float) -> None:
        self.path = Path(path)
        if self.path.suffix.lower() not in CODECS:
            raise VideoError(f"{self.path}: video output must end in one of {sorted(CODECS)}")
        if not fps > 0:
            raise VideoError(f"{self.path}: frames per second must be positive, got {fps}")
        self.fps, self.frames = float(fps), 0
        self._writer: cv2.VideoWriter | None = None
        self._size: tuple[int, int] | None = None
        self._temporary: Path | None = None

    def write(self, frame: np.ndarray) -> None:
        frame = np.asarray(frame)
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise VideoError(f"{self.path}: frames must be H×W×3 uint8, got {frame.dtype} {frame.shape}")
        size = (frame.shape[1], frame.shape[0])
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # same folder (the rename is atomic), same extension (OpenCV picks the container by it)
            self._temporary = self.path.with_name(f".{self.path.stem}.{os.getpid()}.partial{self.path.suffix}")
            self._size = size
            self._writer = cv2.VideoWriter(str(self._temporary), cv2.VideoWriter_fourcc(*CODECS[self.path.suffix.lower()]), self.fps, size)
            if not self._writer.isOpened():
                self.abort()
                raise VideoError(f"{self.path}: OpenCV cannot write {CODECS[self.path.suffix.lower()]} video here")
        elif size != self._size:
            raise VideoError(f"{self.path}: frame {self.frames} is {size[0]}x{size[1]}, the video is "
                             f"{self._size[0]}x{self._size[1]}; every frame of a video must have one size")
        self._writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        self.frames += 1

    def close(self) -> Path | None:
        """Finish the file and move it into place; returns its path (None when no frame was written)."""
        if self._writer is None:
            return None
        self._writer.release()
        os.replace(self._temporary, self.path)
        self._writer = None
        return self.path

    def abort(self) -> None:
        """Drop the partial file (an interrupted run leaves no truncated video under the real name)."""
        if self._writer is not None:
            self._writer.release()
            self._writer = None
        if self._temporary is not None:
            self._temporary.unlink(missing_ok=True)

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, kind, value, traceback) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()
