"""Stereo video in, disparity video out: frame count, size, content, streaming memory, clear errors."""

from __future__ import annotations

import builtins
import importlib.util
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from conftest import compose

from stereo.data.io import read_image, read_pfm
from stereo.infer import run
from stereo.inference.inputs import PairError
from stereo.inference.outputs import default_color_range
from stereo.inference.video import (VIDEO_FORMATS, VideoError, VideoWriter, read_frames, split_frame, stereo_frames,
                                    video_info)
from stereo.visualize import colorize_disparity

FRAMES, HEIGHT, WIDTH = 5, 256, 320
needs_video_extra = pytest.mark.skipif(importlib.util.find_spec("imageio_ffmpeg") is None,
                                       reason='video_format=h264|gif need imageio-ffmpeg: pip install "stereo[video]"')


def _pairs(real_data_dir: Path | None) -> list[tuple[np.ndarray, np.ndarray]]:
    """A 5-frame pan across the real KITTI 2015 pair (the same window in both views keeps it rectified)."""
    sample = real_data_dir / "kitti2015" / "000046_10" / "training"
    left, right = read_image(sample / "image_2" / "000046_10.png"), read_image(sample / "image_3" / "000046_10.png")
    top = left.shape[0] - HEIGHT
    return [(left[top:, x:x + WIDTH], right[top:, x:x + WIDTH]) for x in range(300, 300 + 40 * FRAMES, 40)]


def _write_video(path: Path, frames) -> Path:
    with VideoWriter(path, fps=5) as writer:
        for frame in frames:
            writer.write(frame)
    return path


def test_lossless_video_round_trip_and_packed_layouts(tmp_path):
    rng = np.random.default_rng(0)
    lefts = [rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for _ in range(3)]
    rights = [rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for _ in range(3)]
    sbs = _write_video(tmp_path / "sbs.mkv", [np.concatenate(p, axis=1) for p in zip(lefts, rights)])
    tab = _write_video(tmp_path / "tab.mkv", [np.concatenate(p, axis=0) for p in zip(lefts, rights)])
    assert video_info(sbs) == (3, 5.0)
    for path, layout in ((sbs, "sbs"), (tab, "tab")):
        decoded = list(stereo_frames(video=path, layout=layout))
        assert len(decoded) == 3
        for (left, right), expected_left, expected_right in zip(decoded, lefts, rights):
            assert np.array_equal(left, expected_left) and np.array_equal(right, expected_right)


def test_errors_name_the_file(tmp_path):
    frame = np.zeros((32, 48, 3), np.uint8)
    with pytest.raises(VideoError, match="missing.mp4: video file not found"):
        next(read_frames(tmp_path / "missing.mp4"))
    with pytest.raises(VideoError, match="odd.mkv: a sbs frame needs an even width"):
        split_frame(np.zeros((32, 47, 3), np.uint8), "sbs", "odd.mkv")
    short, long = _write_video(tmp_path / "short.mkv", [frame] * 2), _write_video(tmp_path / "long.mkv", [frame] * 3)
    with pytest.raises(VideoError, match="short.mkv: ends after 2 frames"):
        list(stereo_frames(left_video=long, right_video=short))
    with pytest.raises(VideoError, match="short.mkv: ends before"):
        list(stereo_frames(left_video=short, right_video=long))
    with pytest.raises(VideoError, match="every frame of a video must have one size"):
        with VideoWriter(tmp_path / "mixed.mkv", fps=5) as writer:
            writer.write(frame)
            writer.write(np.zeros((32, 50, 3), np.uint8))
    assert not any(p.name.startswith(".mixed") or p.name == "mixed.mkv" for p in tmp_path.iterdir())  # aborted: nothing left


def _quadrant_frames(count: int, height: int, width: int) -> list[np.ndarray]:
    """Frames of four flat colour quadrants, rotated one step per frame (every frame differs from the others)."""
    colours = np.array([[230, 30, 40], [20, 200, 60], [30, 60, 220], [250, 240, 20]], np.uint8)
    frames = []
    for index in range(count):
        top_left, top_right, bottom_left, bottom_right = np.roll(colours, index, axis=0)
        frame = np.empty((height, width, 3), np.uint8)
        h, w = height // 2, width // 2
        frame[:h, :w], frame[:h, w:], frame[h:, :w], frame[h:, w:] = top_left, top_right, bottom_left, bottom_right
        frames.append(frame)
    return frames


def _decode_with_imageio(path: Path) -> list[np.ndarray]:
    """Every frame, decoded by imageio's ffmpeg plugin (the extension hint admits .gif, see video.py)."""
    import imageio.v3 as iio

    return list(iio.imiter(path, plugin="FFMPEG", extension=".mp4"))


@needs_video_extra
def test_h264_video_has_every_frame_its_size_and_colours(tmp_path):
    frames = _quadrant_frames(4, 48, 64)
    path = tmp_path / "out.mp4"
    with VideoWriter(path, fps=5, video_format="h264") as writer:
        for frame in frames:
            writer.write(frame)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]  # the temporary file was renamed
    import imageio.v3 as iio

    assert iio.immeta(path, plugin="FFMPEG")["codec"] == "h264"
    assert video_info(path) == (4, 5.0)  # OpenCV reads it back too
    decoded = _decode_with_imageio(path)
    assert len(decoded) == 4 and all(d.shape == (48, 64, 3) for d in decoded)
    # Flat areas away from the quadrant edges (8 px: yuv420p halves the colour planes and the deblocking
    # filter reaches 3 px across block edges): 8-bit limited-range YUV moves a flat colour by up to 2
    # levels per channel, crf-18 quantisation of a flat block's DC term by a few more.
    interior = np.zeros((48, 64), bool)
    for rows in (slice(0, 24 - 8), slice(24 + 8, 48)):
        for columns in (slice(0, 32 - 8), slice(32 + 8, 64)):
            interior[rows, columns] = True
    for index, got in enumerate(decoded):
        error = np.abs(got.astype(int) - frames[index].astype(int))[interior]
        assert error.max() <= 8, f"frame {index}: {error.max()} levels off"


@needs_video_extra
def test_h264_pads_an_odd_size_by_one_edge_pixel(tmp_path):
    frames = _quadrant_frames(2, 46, 62)
    odd = [np.pad(f, ((0, 1), (0, 1), (0, 0)), mode="edge") for f in frames]  # 47x63: edge row/column copied
    with VideoWriter(tmp_path / "odd.mp4", fps=5, video_format="h264") as writer:
        for frame in odd:
            writer.write(frame)
    decoded = _decode_with_imageio(tmp_path / "odd.mp4")
    assert [d.shape for d in decoded] == [(48, 64, 3)] * 2
    for got, frame in zip(decoded, frames):  # bottom-right quadrant interior, next to the padding
        assert np.abs(got[36:44, 44:60].astype(int) - frame[36:44, 44:60]).max() <= 8


@needs_video_extra
def test_gif_keeps_the_colours_of_frames_of_at_most_256_colours(tmp_path):
    """A colourised disparity frame without invalid pixels holds the colour map's 256 colours: one palette each."""
    ramp = np.linspace(0.0, 40.0, 64 * 48, dtype=np.float32).reshape(48, 64)
    frames = [colorize_disparity(np.roll(ramp, 7 * i, axis=1), 0.0, 40.0) for i in range(3)]
    assert all(len(np.unique(frame.reshape(-1, 3), axis=0)) == 256 for frame in frames)
    path = tmp_path / "out.gif"
    with VideoWriter(path, fps=5, video_format="gif") as writer:
        for frame in frames:
            writer.write(frame)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.gif"]
    assert path.read_bytes()[:6] == b"GIF89a"
    decoded = list(read_frames(path))  # OpenCV's decoder: independent of the ffmpeg that wrote the file
    assert len(decoded) == 3 and video_info(path) == (3, 5.0)
    for index, (got, frame) in enumerate(zip(decoded, frames)):
        # palettegen averages each colour box in OkLab and rounds back to 8-bit sRGB: a box holding one
        # colour returns it within one rounding step
        error = np.abs(got.astype(int) - frame.astype(int))
        assert error.max() <= 1, f"frame {index}: {error.max()} levels off"


def test_h264_and_gif_without_imageio_ffmpeg_fail_up_front_with_one_line(tmp_path, monkeypatch):
    real_import = builtins.__import__

    def without_imageio_ffmpeg(name, *args, **kwargs):  # what Python does when the package is not installed
        if name == "imageio_ffmpeg" or name.startswith("imageio_ffmpeg."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", without_imageio_ffmpeg)
    for video_format, suffix in (("h264", "mp4"), ("gif", "gif")):
        message = f'^video_format={video_format} needs imageio-ffmpeg: pip install "stereo\\[video\\]"$'
        with pytest.raises(VideoError, match=message):
            VideoWriter(tmp_path / f"out.{suffix}", fps=5, video_format=video_format)
    VideoWriter(tmp_path / "out.mkv", fps=5).close()  # OpenCV's formats do not need it

    checkpoint = tmp_path / "model.ckpt"
    checkpoint.write_bytes(b"never read: the missing encoder is reported before the model is loaded")
    left = tmp_path / "left.png"
    left.write_bytes(b"never read either")
    with pytest.raises(VideoError, match="video_format=h264 needs imageio-ffmpeg"):
        run(compose("infer", [f"ckpt_path={checkpoint}", f"output_dir={tmp_path / 'out'}", f"left={left}",
                              f"right={left}", "formats=[video]", "video_format=h264"]))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("video_format", ["mp4", "avi"])
def test_lossy_opencv_videos_keep_frame_count_and_size(tmp_path, video_format):
    frames = _quadrant_frames(3, 48, 64)
    path = _write_video(tmp_path / f"out.{video_format}", frames)
    decoded = list(read_frames(path))
    assert len(decoded) == 3 and all(d.shape == (48, 64, 3) for d in decoded)
    for index, got in enumerate(decoded):  # each frame decodes nearer to its own source than to the others
        distances = [np.abs(got.astype(int) - other).mean() for other in frames]
        assert int(np.argmin(distances)) == index, f"frame {index}: mean distances {distances}"


def test_video_format_and_suffix_must_agree(tmp_path):
    with pytest.raises(VideoError, match="video_format must be one of"):
        VideoWriter(tmp_path / "out.webm", fps=5, video_format="webm")
    with pytest.raises(VideoError, match="out.mkv: video_format=gif writes .gif files"):
        VideoWriter(tmp_path / "out.mkv", fps=5, video_format="gif")
    with pytest.raises(VideoError, match="out.webm: video output must end in one of"):
        VideoWriter(tmp_path / "out.webm", fps=5)
    assert VideoWriter(tmp_path / "out.mp4", fps=5).format == VIDEO_FORMATS["mp4"]  # .mp4 alone means OpenCV's


def test_reading_and_writing_stream_one_frame_at_a_time(tmp_path):
    """60 frames of 256x1024 (768 KiB each, 45 MiB in all): Python-side peak stays below 8 frames."""
    frame_bytes = 256 * 1024 * 3
    gradient = np.tile(np.arange(1024, dtype=np.uint8)[None, :, None], (256, 1, 3))
    source = _write_video(tmp_path / "long.mkv", (np.roll(gradient, i, axis=1) for i in range(60)))
    tracemalloc.start()
    try:
        with VideoWriter(tmp_path / "out.mkv", fps=5) as writer:
            for left, right in stereo_frames(video=source, layout="sbs"):
                writer.write(np.concatenate([left, right], axis=0))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert writer.frames == 60 and video_info(tmp_path / "out.mkv")[0] == 60
    assert peak < 8 * frame_bytes, f"peak {peak / 2**20:.1f} MiB for 60 frames of {frame_bytes / 2**20:.2f} MiB"


def test_infer_refuses_ambiguous_or_incomplete_video_inputs(tmp_path):
    checkpoint = tmp_path / "model.ckpt"
    checkpoint.write_bytes(b"checked for existence only: the inputs are refused before it is read")
    video = _write_video(tmp_path / "v.mkv", [np.zeros((32, 64, 3), np.uint8)])
    for overrides, message in (([f"video={video}", f"left={video}"], "give one input"),
                               ([f"video={video}", f"right_video={video}"], "give one input"),
                               ([f"left_video={video}"], "left_video=... given without right_video"),
                               ([f"right_video={video}"], "give one input"),
                               ([f"video={video}", "layout=lr"], "layout='lr'")):
        with pytest.raises(PairError, match=message):
            run(compose("infer", [f"ckpt_path={checkpoint}", f"output_dir={tmp_path / 'out'}", *overrides]))


@pytest.mark.slow
@needs_video_extra
def test_infer_turns_a_stereo_video_into_a_disparity_video(real_data_dir, calibrated_checkpoint, tmp_path):
    pairs = _pairs(real_data_dir)
    sbs = _write_video(tmp_path / "drive.mkv", [np.concatenate(p, axis=1) for p in pairs])
    out = tmp_path / "out"
    written = run(compose("infer", [f"ckpt_path={calibrated_checkpoint}", f"output_dir={out}", f"video={sbs}",
                                    "formats=[video,pfm]", "video_format=mkv", "device=cpu"]))
    assert written["video"] == [str(out / "drive_disp.mkv")]
    assert [Path(p).name for p in written["pfm"]] == [f"drive_{i:06d}_disp.pfm" for i in range(FRAMES)]
    disparities = [read_pfm(p) for p in written["pfm"]]
    assert all(d.shape == (HEIGHT, WIDTH) for d in disparities)
    color_range = default_color_range(disparities[0])
    decoded = list(read_frames(out / "drive_disp.mkv"))
    assert len(decoded) == FRAMES
    for frame, disparity in zip(decoded, disparities):  # FFV1 is lossless: exactly the colours written
        assert np.array_equal(frame, colorize_disparity(disparity, *color_range))

    # the same frames as two videos, and an H.264 mp4 (lossy): same disparities, same frame count and size
    left = _write_video(tmp_path / "left.mkv", [p[0] for p in pairs])
    right = _write_video(tmp_path / "right.mkv", [p[1] for p in pairs])
    out2 = tmp_path / "out2"
    written2 = run(compose("infer", [f"ckpt_path={calibrated_checkpoint}", f"output_dir={out2}", f"left_video={left}",
                                     f"right_video={right}", "formats=[video,pfm]", "video_format=h264", "device=cpu"]))
    for first, second in zip(written["pfm"], written2["pfm"], strict=True):
        assert np.array_equal(read_pfm(first), read_pfm(second))
    assert written2["video"] == [str(out2 / "left_disp.mp4")]
    decoded = _decode_with_imageio(out2 / "left_disp.mp4")
    assert len(decoded) == FRAMES and all(frame.shape == (HEIGHT, WIDTH, 3) for frame in decoded)
