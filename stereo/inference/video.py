"""Stereo video in, colourised disparity video out, one frame at a time (memory stays flat).

Inputs are decoded with OpenCV (a declared dependency; its wheels bundle FFmpeg): one side-by-side
(``sbs``: left | right) or top-and-bottom (``tab``: left over right) video, or two videos of equal
length. Outputs are written by one :class:`VideoWriter` whose ``video_format`` picks the encoder:

| video_format | file   | written by | codec | notes |
|--------------|--------|------------|-------|-------|
| ``mp4``      | .mp4   | OpenCV     | MPEG-4 part 2 (``mp4v``) | lossy; VLC/ffplay, not every browser |
| ``avi``      | .avi   | OpenCV     | Motion JPEG (``MJPG``)   | lossy, every frame a JPEG |
| ``mkv``      | .mkv   | OpenCV     | FFV1                      | lossless |
| ``h264``     | .mp4   | imageio (ffmpeg plugin) | H.264, yuv420p | plays in browsers, PowerPoint, phones |
| ``gif``      | .gif   | imageio (ffmpeg plugin) | GIF, a palette per frame | colours kept (±1) up to 256 a frame |

OpenCV's wheels cannot encode H.264 (licensing) and do not write GIF; imageio's ffmpeg plugin drives
the ffmpeg binary that the optional ``imageio-ffmpeg`` package ships (``pip install "stereo[video]"``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

LAYOUTS = ("sbs", "tab")
EXTRA_HINT = 'pip install "stereo[video]"'


@dataclass(frozen=True)
class VideoFormat:
    """How one ``video_format`` is written: file suffix, encoder and the library that drives it."""

    suffix: str
    codec: str  # an OpenCV fourcc, or an ffmpeg encoder name
    backend: str  # "opencv" or "imageio"
    pixel_format: str | None = None  # ffmpeg's -pix_fmt of the encoded stream (imageio only)
    ffmpeg_args: tuple[str, ...] = ()  # further ffmpeg output options (imageio only)
    even_size: bool = False  # the encoder needs an even width and height


# GIF holds at most 256 colours per frame. palettegen/paletteuse build each frame's own palette from
# that frame alone (stats_mode=single, new=1), so ffmpeg buffers one frame, not the whole video, and a
# frame of at most 256 colours (a colourised disparity frame without invalid pixels: the colour map's
# 256) keeps its colours, to within the one level of palettegen's rounding; with black added (invalid
# pixels), two neighbouring colour-map entries may share a palette entry.
_GIF_PALETTE = ("split[frames][stats];[stats]palettegen=stats_mode=single:reserve_transparent=0[palette];"
                "[frames][palette]paletteuse=new=1:dither=none")

VIDEO_FORMATS = {
    # OpenCV's writer silently drops the last column/row of an odd-sized frame for all three: pad instead
    "mp4": VideoFormat(".mp4", "mp4v", "opencv", even_size=True),
    "avi": VideoFormat(".avi", "MJPG", "opencv", even_size=True),
    "mkv": VideoFormat(".mkv", "FFV1", "opencv", even_size=True),
    # crf 18: x264's "visually lossless" quality; faststart puts the index first so browsers stream it
    "h264": VideoFormat(".mp4", "libx264", "imageio", "yuv420p", ("-crf", "18", "-movflags", "+faststart"),
                        even_size=True),
    "gif": VideoFormat(".gif", "gif", "imageio", "pal8", ("-vf", _GIF_PALETTE)),
}


class VideoError(ValueError):
    """A video that cannot be read or written, or inputs that do not form a stereo sequence."""


# Still-image signatures: OpenCV would open such a file as a one-frame "video" (recognised by content)
_IMAGE_SIGNATURES = {b"\x89PNG\r\n\x1a\n": "PNG", b"\xff\xd8\xff": "JPEG", b"BM": "BMP", b"II*\x00": "TIFF",
                     b"MM\x00*": "TIFF", b"PF\n": "PFM", b"Pf\n": "PFM", b"P5": "PGM", b"P6": "PPM"}


def _open(path: str | Path) -> cv2.VideoCapture:
    path = Path(path)
    if not path.is_file():
        raise VideoError(f"{path}: video file not found")
    with path.open("rb") as handle:
        head = handle.read(16)
    kind = next((name for signature, name in _IMAGE_SIGNATURES.items() if head.startswith(signature)), None)
    if kind is None and head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        kind = "WebP"
    if kind is not None:
        raise VideoError(f"{path}: a {kind} still image, not a video; give image pairs as left=... right=... "
                         "(or input_dir=...), and a video file as video=... / left_video=... right_video=...")
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


def resolve_video_format(name: str) -> VideoFormat:
    """The format called ``name``; refused up front, before any prediction, when its encoder is missing."""
    if name not in VIDEO_FORMATS:
        raise VideoError(f"video_format must be one of {sorted(VIDEO_FORMATS)}, got {name!r}")
    if VIDEO_FORMATS[name].backend == "imageio":
        try:
            import imageio_ffmpeg  # noqa: F401  (the optional package that ships the ffmpeg binary)
        except ImportError:
            raise VideoError(f"video_format={name} needs imageio-ffmpeg: {EXTRA_HINT}") from None
    return VIDEO_FORMATS[name]


class _OpenCVStream:
    """Frames to a file through OpenCV's bundled FFmpeg (the container follows the file suffix)."""

    def __init__(self, path: Path, fmt: VideoFormat, fps: float, size: tuple[int, int]) -> None:
        self._writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fmt.codec), fps, size)
        if not self._writer.isOpened():
            self._writer.release()
            raise VideoError(f"{path}: OpenCV cannot write {fmt.codec} video here")

    def write(self, frame: np.ndarray) -> None:
        self._writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))

    def close(self) -> None:
        self._writer.release()


class _ImageioStream:
    """Frames to a file through imageio's ffmpeg plugin (imageio-ffmpeg's binary, fed over a pipe)."""

    def __init__(self, path: Path, fmt: VideoFormat, fps: float, size: tuple[int, int]) -> None:
        import imageio.v3 as iio

        # The plugin admits files by suffix and lists no .gif (imageio leaves GIF to Pillow), though the
        # ffmpeg it drives writes GIF natively and picks the muxer from the real file name: extension=
        # only gets the file past that check. macro_block_size=1: no rescaling, odd sizes are padded here.
        self._writer = iio.imopen(path, "wI", plugin="FFMPEG", extension=".mp4", legacy_mode=True).legacy_get_writer(
            fps=fps, codec=fmt.codec, pixelformat=fmt.pixel_format, quality=None, macro_block_size=1,
            output_params=list(fmt.ffmpeg_args), ffmpeg_log_level="error")

    def write(self, frame: np.ndarray) -> None:
        self._writer.append_data(frame)

    def close(self) -> None:
        self._writer.close()


_STREAMS = {"opencv": _OpenCVStream, "imageio": _ImageioStream}


class VideoWriter:
    """Appends H×W×3 uint8 RGB frames to ``path``; the file appears under its name only when closed
    successfully (written under a temporary name in the same folder, then renamed).

    ``video_format`` (a key of :data:`VIDEO_FORMATS`) picks the encoder; by default it follows the
    suffix (``.mp4`` = OpenCV's MPEG-4 part 2; ask for ``h264`` explicitly). Every format but ``gif``
    pads an odd width or height by one edge pixel (h264's colour planes are half size; OpenCV's writer
    would drop the last column or row without a word).
    """

    def __init__(self, path: str | Path, fps: float, video_format: str | None = None) -> None:
        self.path = Path(path)
        suffix = self.path.suffix.lower()
        if video_format is None:
            video_format = next((name for name, fmt in VIDEO_FORMATS.items() if fmt.suffix == suffix), None)
            if video_format is None:
                raise VideoError(f"{self.path}: video output must end in one of "
                                 f"{sorted({fmt.suffix for fmt in VIDEO_FORMATS.values()})}")
        self.format = resolve_video_format(video_format)
        if suffix != self.format.suffix:
            raise VideoError(f"{self.path}: video_format={video_format} writes {self.format.suffix} files")
        if not fps > 0:
            raise VideoError(f"{self.path}: frames per second must be positive, got {fps}")
        self.fps, self.frames = float(fps), 0
        self._stream: _OpenCVStream | _ImageioStream | None = None
        self._size: tuple[int, int] | None = None
        self._temporary: Path | None = None

    def write(self, frame: np.ndarray) -> None:
        frame = np.asarray(frame)
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise VideoError(f"{self.path}: frames must be H×W×3 uint8, got {frame.dtype} {frame.shape}")
        size = (frame.shape[1], frame.shape[0])
        if self._stream is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # same folder (the rename is atomic), same suffix (the encoders pick the container by it)
            self._temporary = self.path.with_name(f".{self.path.stem}.{os.getpid()}.partial{self.path.suffix}")
            self._size = size
            even = tuple(side + side % 2 for side in size) if self.format.even_size else size
            try:
                self._stream = _STREAMS[self.format.backend](self._temporary, self.format, self.fps, even)
            except BaseException:
                self.abort()
                raise
        elif size != self._size:
            raise VideoError(f"{self.path}: frame {self.frames} is {size[0]}x{size[1]}, the video is "
                             f"{self._size[0]}x{self._size[1]}; every frame of a video must have one size")
        if self.format.even_size and (size[0] % 2 or size[1] % 2):  # one edge row/column makes the size even
            frame = np.pad(frame, ((0, size[1] % 2), (0, size[0] % 2), (0, 0)), mode="edge")
        self._stream.write(np.ascontiguousarray(frame))
        self.frames += 1

    def close(self) -> Path | None:
        """Finish the file and move it into place; returns its path (None when no frame was written)."""
        if self._stream is None:
            return None
        stream, self._stream = self._stream, None
        try:
            stream.close()
        except BaseException:
            self._temporary.unlink(missing_ok=True)
            raise
        os.replace(self._temporary, self.path)
        return self.path

    def abort(self) -> None:
        """Drop the partial file (an interrupted run leaves no truncated video under the real name)."""
        stream, self._stream = self._stream, None
        try:
            if stream is not None:
                stream.close()
        finally:
            if self._temporary is not None:
                self._temporary.unlink(missing_ok=True)

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, kind, value, traceback) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()
