"""Options that used to give a silent wrong answer or a traceback (stereo.infer, stereo.export,
stereo.train's run folder), through the real commands: one line, exit status 2, nothing written; or,
where the value is valid, a result that is what was asked for."""

from __future__ import annotations

import json
import struct
import zlib

import cv2
import numpy as np
import pytest

from bad_input.conftest import snapshot
from stereo.inference.video import VideoWriter

PAIR = ("ckpt_path=tiny.ckpt", "left=left.png", "right=right.png", "swap_check=false", "optimize=false", "output_dir=out")


def infer(run_command, *overrides: str):
    given = {o.split("=", 1)[0] for o in overrides}
    return run_command("infer", *(o for o in PAIR if o.split("=", 1)[0] not in given), *overrides)


@pytest.mark.parametrize("overrides, words", [
    (("max_depth=-1", "focal=90", "baseline=0.1", "formats=[depth,ply]"), ("max_depth=-1", "positive number")),
    (("max_depth=0", "focal=90", "baseline=0.1", "formats=[ply]"), ("max_depth=0", "positive number")),
    (("cx=nan", "focal=90", "baseline=0.1", "formats=[ply]"), ("cx=nan", "finite number")),
    (("color_range=[0,inf]",), ("color_range",)),
    (("downscale=inf", "mode=downscale"), ("downscale must be >= 1",)),
    (("max_memory_gb=0",), ("max_memory_gb=0", "positive")),
])
def test_an_option_value_that_would_give_a_wrong_result_is_refused_before_writing(workspace, run_command, overrides,
                                                                                     words):
    before = snapshot(workspace)
    infer(run_command, *overrides).error_line(*words)
    assert snapshot(workspace) == before


def test_a_downscale_below_the_minimum_size_is_refused_not_clamped(workspace, run_command):
    infer(run_command, "mode=downscale", "downscale=100").error_line(
        "downscale=100", "96x64 image would become 1x1", "use downscale <= 2")
    assert not list((workspace / "out").glob("*.pfm")) and not list((workspace / "out").glob("*.png"))
    assert infer(run_command, "mode=downscale", "downscale=2", "formats=[pfm]", "output_dir=out2").status == 0


@pytest.mark.slow  # 2-2.5 s on 2 cores (the quick tier's budget is 2 minutes)
def test_the_manifest_is_strict_json_and_a_rerun_is_the_same_producer(workspace, run_command):
    """max_memory_gb=inf (no budget) is valid; Python's json would write it as the bare word Infinity."""
    assert infer(run_command, "max_memory_gb=inf", "formats=[pfm]").status == 0

    def refuse(word):
        raise AssertionError(f"manifest.json holds {word}: not JSON")

    manifest = json.loads((workspace / "out" / "manifest.json").read_text(), parse_constant=refuse)
    assert manifest["config"]["max_memory_gb"] is None
    assert infer(run_command, "max_memory_gb=inf", "formats=[pfm]").status == 0  # not "another producer"


def test_a_side_by_side_video_with_odd_width_views_is_padded_not_cropped(workspace, run_command):
    """Views 97 px wide: OpenCV's writer would drop the last column; the frame is padded to 98 instead."""
    rng = np.random.default_rng(0)
    view = cv2.GaussianBlur(rng.integers(0, 256, (64, 97, 3), dtype=np.uint8), (3, 3), 0)
    with VideoWriter(workspace / "sbs.mkv", 10, "mkv") as writer:  # 194 wide: even, nothing padded
        for _ in range(2):
            writer.write(np.concatenate([view, np.roll(view, -3, axis=1)], axis=1))
    assert infer(run_command, "left=null", "right=null", "video=sbs.mkv", "formats=[video]", "video_format=mkv").status == 0
    capture = cv2.VideoCapture(str(workspace / "out" / "sbs_disp.mkv"))
    ok, frame = capture.read()
    capture.release()
    assert ok and frame.shape[:2] == (64, 98)
    np.testing.assert_array_equal(frame[:, 97], frame[:, 96])  # FFV1 is lossless: the copied edge column


def png_bomb(path, width: int, height: int) -> None:
    """A valid PNG header for width x height, with a few rows of data: a few KB on disk."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = zlib.compress((b"\0" + b"\0" * 3 * width) * 4)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", rows) + chunk(b"IEND", b""))


def test_a_decompression_bomb_is_refused_by_its_header(workspace, run_command):
    png_bomb(workspace / "bomb.png", 40000, 40000)
    infer(run_command, "left=bomb.png").error_line("bomb.png", "header says 40000x40000 pixels")
    assert not list((workspace / "out").glob("*.p*"))  # images are read inside the run: only its manifest


@pytest.mark.parametrize("sizes, words", [("[]", ("verify_sizes=[]", "verify=false")),
                                          ("[[100,100]]", ("verify_sizes: [100, 100]", "at least 256")),
                                          ("[256,256]", ("verify_sizes: 256",)),
                                          ("[[256,256]] tolerance_factor=nan", ("tolerance_factor=nan", "positive"))])
def test_export_refuses_verify_sizes_that_verify_nothing(workspace, run_command, sizes, words):
    before = snapshot(workspace)
    run_command("export", "ckpt_path=tiny.ckpt", "format=weights", "output=model.pt",
                *f"verify_sizes={sizes}".split()).error_line(*words)
    assert snapshot(workspace) == before


def test_an_unwritable_run_folder_is_one_line(workspace, run_command, train_overrides):
    line = run_command("train", *train_overrides(), "hydra.run.dir=left.png/run").error_line(
        "hydra.run.dir=left.png/run", "cannot create the run folder")
    assert "Not a directory" in line
