"""Command-line inference: ``python -m stereo.infer ckpt_path=... left=... right=... output_dir=...``.

Config: ``conf/infer.yaml`` (inputs, formats, device/precision, memory mode, calibration). Prints a
summary of what was written where. ``<output_dir>/manifest.json`` records what produced the results
(checkpoint and its sha256, the resolved config) and every file the run wrote; one run at a time owns
an output folder, and a folder holding an earlier run's results is refused unless ``overwrite=true``
(``stereo.output_dirs``).
"""

from __future__ import annotations

import contextlib
import itertools
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from stereo import output_dirs
from stereo.cli import command
from stereo.calibration.readers import read_calibration, read_middlebury, require_calibration_files
from stereo.calibration.rectify import Rectifier
from stereo.data.io import read_image, write_image
from stereo.data.pairs import StereoPair
from stereo.inference.inputs import PairError, pairs_from_files, pairs_from_folder, pairs_from_list
from stereo.inference.outputs import FORMATS, OutputWriter, make_calibration
from stereo.inference.predictor import InputError, Predictor
from stereo.inference.video import LAYOUTS, VideoWriter, resolve_video_format, stereo_frames, video_info
from stereo.models import pretrained


VIDEO_INPUTS = ("video", "left_video")
DEFAULT_FPS = 10.0  # a video made from an image sequence, when video_fps is not given


def collect_pairs(cfg: DictConfig) -> list[StereoPair]:
    """The pairs named by exactly one of: left+right, input_dir, list_file."""
    given = [k for k in ("left", "input_dir", "list_file") if cfg.get(k) is not None]
    if cfg.get("right") is not None and cfg.get("left") is None:
        raise PairError("right=... given without left=...")
    if len(given) != 1:
        raise PairError(
            "give exactly one input: left=... right=... (files or globs), input_dir=... or list_file=..., "
            f"video=... or left_video=... right_video=... (got {given or 'none'})"
        )
    if cfg.left is not None:
        if cfg.right is None:
            raise PairError("left=... given without right=...")
        return pairs_from_files(str(cfg.left), str(cfg.right))
    if cfg.input_dir is not None:
        return pairs_from_folder(cfg.input_dir)
    return pairs_from_list(cfg.list_file)


def requested_formats(cfg: DictConfig) -> list[str]:
    """``formats=pfm`` (one name) or ``formats=[pfm,color]`` (a list)."""
    return [str(cfg.formats)] if isinstance(cfg.formats, str) else [str(f) for f in cfg.formats]


def video_input(cfg: DictConfig) -> tuple[str, Iterator[tuple[np.ndarray, np.ndarray]], int | None, float | None] | None:
    """(name, (left, right) frames, frame count, fps) for video=... or left_video+right_video; None otherwise."""
    given = [k for k in VIDEO_INPUTS if cfg.get(k) is not None]
    if not given and cfg.get("right_video") is None:
        return None
    others = [k for k in ("left", "right", "input_dir", "list_file") if cfg.get(k) is not None]
    if cfg.get("video") is not None and cfg.get("right_video") is not None:
        others.append("right_video")
    if len(given) != 1 or others:
        raise PairError(f"give one input: video=... (layout=sbs|tab) or left_video=... right_video=... "
                        f"(got {given + others or ['right_video']})")
    if cfg.video is not None:
        if cfg.layout not in LAYOUTS:
            raise PairError(f"layout={cfg.layout!r}: choose sbs (left | right) or tab (left over right)")
        count, fps = video_info(cfg.video)
        return Path(str(cfg.video)).stem, stereo_frames(video=str(cfg.video), layout=str(cfg.layout)), count, fps
    if cfg.get("right_video") is None:
        raise PairError("left_video=... given without right_video=...")
    count, fps = video_info(cfg.left_video)
    video_info(cfg.right_video)  # fails now, naming the file, if it cannot be opened
    frames = stereo_frames(left_video=str(cfg.left_video), right_video=str(cfg.right_video))
    return Path(str(cfg.left_video)).stem, frames, count, fps


def build_writer(cfg: DictConfig, formats: list[str], rectifier: Rectifier | None = None) -> OutputWriter:
    calibration = make_calibration(cfg.calib, cfg.focal, cfg.baseline, cfg.doffs, cfg.cx, cfg.cy)
    color_range = tuple(cfg.color_range) if cfg.color_range is not None else None
    return OutputWriter(Path(cfg.output_dir), formats, color_range, calibration, cfg.max_depth, cfg.confidence_format,
                        rectifier.to_original if rectifier is not None else None)


def build_rectifier(cfg: DictConfig) -> Rectifier | None:
    """calib=<file> (or two ROS files): the rectification of every pair/frame, maps built once."""
    if cfg.calib is None:
        return None
    require_calibration_files(cfg.calib)
    return Rectifier(read_calibration(cfg.calib))


@dataclass
class Frame:
    """One input pair (``stereo.data.pairs.StereoPair``) or video frame, decoded (and rectified), with
    everything written about it: ``stem`` names its outputs, ``names`` its two images in messages."""

    stem: str
    left: np.ndarray
    right: np.ndarray
    names: tuple[str, str]
    calib: str | None = None


@dataclass
class Inputs:
    """The run's frames, read one at a time, and what is known about them up front."""

    name: str
    frames: Iterator[Frame]
    total: int | None
    fps: float | None
    calibrated: bool  # every frame has its own calib.txt
    stems: list[str] | None = None  # known up front for image pairs (not for videos)


def read_inputs(cfg: DictConfig, rectifier: Rectifier | None = None) -> Inputs:
    """The one place where the input pairs / video frames are produced (read lazily, one at a time),
    rectified by ``rectifier`` when a calibration is given."""
    video = video_input(cfg)
    if video is not None:
        name, images, total, fps = video
        stems: Iterator[str] | list[str] = (f"{name}_{index:06d}" for index in itertools.count())
        names: Iterator[tuple[str, str]] | list[tuple[str, str]] = (
            (f"{name} frame {index} (left)", f"{name} frame {index} (right)") for index in itertools.count())
        calibs: Iterator[str | None] | list[str | None] = itertools.repeat(None)
        known_stems, calibrated = None, False
    else:
        pairs = collect_pairs(cfg)
        name, total, fps = "sequence", len(pairs), None
        images = ((read_image(p.left), read_image(p.right)) for p in pairs)
        stems = known_stems = [p.name for p in pairs]
        names, calibs = [(str(p.left), str(p.right)) for p in pairs], [p.calib for p in pairs]
        calibrated = all(p.calib for p in pairs)
    if rectifier is not None:
        names, rectified_names = itertools.tee(names)
        images = rectifier.frames(images, rectified_names)
    frames = (Frame(stem, left, right, pair_names, calib)
              for stem, pair_names, calib, (left, right) in zip(stems, names, calibs, images))
    return Inputs(name, frames, total, fps, calibrated, known_stems)


def batches(frames: Iterator[Frame], size: int) -> Iterator[list[Frame]]:
    while batch := list(itertools.islice(frames, size)):
        yield batch


def positive_int(cfg: DictConfig, key: str) -> int:
    value = cfg.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{key}={value}: must be a positive whole number")
    return value


# Keys that do not change what is written (where, whether to replace): not part of the producer.
NOT_PRODUCER_KEYS = ("output_dir", "overwrite", "ckpt_path")


def run(cfg: DictConfig) -> dict[str, list[str]]:
    """Predict every pair (or video frame) and write the requested formats; returns {format: [paths]}.

    Frames are read, predicted and written ``batch_size`` at a time, so memory does not grow with the
    length of a sequence; the manifest is rewritten once per batch. ``video`` in formats writes one
    colourised disparity video of all frames, in the writer's colour scale.
    """
    if cfg.rectify_only:
        return write_rectified(cfg)
    if cfg.ckpt_path is None:
        print(f"using the shipped weights {pretrained.DEFAULT} (docs/model_card.md); ckpt_path=<file> for your own")
    checkpoint = pretrained.resolve_checkpoint(cfg.ckpt_path if cfg.ckpt_path is not None else pretrained.DEFAULT)
    if not checkpoint.is_file():
        raise FileNotFoundError(f"{checkpoint}: checkpoint not found (ckpt_path=...)")
    formats = requested_formats(cfg)
    if not formats:
        raise ValueError(f"formats=[]: no output format requested; choose from {[*FORMATS, 'video']}")
    image_formats = [fmt for fmt in formats if fmt != "video"]
    batch_size = positive_int(cfg, "batch_size")
    output_dirs.check_is_folder(Path(cfg.output_dir), "output_dir")
    rectifier = build_rectifier(cfg)
    inputs = read_inputs(cfg, rectifier)
    # depth/ply without a global calibration: use each scene's calib.txt when every pair has one
    per_scene_calib = bool({"depth", "depth_original", "ply"} & set(formats)) and cfg.calib is None and cfg.focal is None
    if per_scene_calib and not inputs.calibrated:
        raise ValueError(
            "formats depth/ply need a calibration: calib=<calibration file> or focal=<px> baseline=<unit> "
            "(not every input pair has a calib.txt beside it)"
        )
    writer = build_writer(cfg, image_formats, rectifier)
    video_path = None
    if "video" in formats:  # an unknown video_format, or one whose encoder is not installed, stops the run here
        suffix = resolve_video_format(str(cfg.video_format)).suffix
        video_path = Path(cfg.output_dir) / f"{inputs.name}_disp{suffix}"
    predictor = Predictor.from_checkpoint(
        checkpoint, device=cfg.device, precision=cfg.precision, max_disp=cfg.max_disp, mode=cfg.mode,
        max_memory_gb=cfg.max_memory_gb, downscale=cfg.downscale, tile_overlap=cfg.tile_overlap,
        swap_check=cfg.swap_check, optimize=cfg.optimize, min_width=cfg.min_width,
    )
    config = OmegaConf.to_container(cfg, resolve=True)
    settings = {k: v for k, v in config.items() if k not in NOT_PRODUCER_KEYS}
    if rectifier is not None:
        settings["calibration"] = rectifier.provenance()
    made_by = output_dirs.producer("stereo.infer", checkpoint, settings)
    written: dict[str, list[str]] = {fmt: [] for fmt in formats}
    nonfinite: dict[str, int] = {}
    count = 0
    with output_dirs.open_run(cfg.output_dir, "output_dir", made_by, overwrite=bool(cfg.get("overwrite", False)),
                              extra={"config": config, "nonfinite_pixels": nonfinite,
                                     "calibration": settings.get("calibration")},
                              will_write=[writer.path(fmt, stem) for stem in inputs.stems or [] for fmt in image_formats]
                              + ([video_path] if video_path is not None else [])) as record:
        with contextlib.ExitStack() as stack, tqdm(total=inputs.total, desc="stereo pairs", unit="pair") as progress:
            video_writer = None
            if video_path is not None:
                record.plan([video_path])
                video_writer = stack.enter_context(VideoWriter(video_path, cfg.video_fps or inputs.fps or DEFAULT_FPS,
                                                               str(cfg.video_format)))
            for batch in batches(inputs.frames, batch_size):
                predictions = predictor.predict_batch([f.left for f in batch], [f.right for f in batch],
                                                      [f.names for f in batch])
                # Listed before they are written: a killed run's manifest names its partial files.
                record.plan(writer.path(fmt, frame.stem) for frame in batch for fmt in image_formats)
                record.save("running")
                for frame, prediction in zip(batch, predictions):
                    bad = int(np.count_nonzero(~np.isfinite(prediction.disparity)))
                    if bad == prediction.disparity.size:
                        raise InputError(f"{frame.names[0]}: the network's disparity is non-finite (NaN/inf) at every "
                                         "pixel; its checkpoint or the input is broken: nothing written for this pair")
                    if bad:
                        nonfinite[frame.stem] = bad
                    calibration = read_middlebury(frame.calib).depth_geometry() if per_scene_calib else None
                    paths = writer.write(frame.stem, prediction.disparity, prediction.confidence, frame.left, calibration)
                    for fmt, path in paths.items():
                        written[fmt].append(str(path))
                    if video_writer is not None:
                        video_writer.write(writer.colorized(prediction.disparity))
                count += len(batch)
                progress.update(len(batch))
        if video_writer is not None and video_writer.frames:
            written["video"].append(str(video_writer.path))
    _print_summary(written, Path(cfg.output_dir), predictor, count, nonfinite)
    return written


def write_rectified(cfg: DictConfig) -> dict[str, list[str]]:
    """rectify_only=true: the rectified pairs as <output_dir>/left/<stem>.png and right/<stem>.png
    (an input_dir for a later run), no network."""
    if cfg.calib is None:
        raise ValueError("rectify_only=true needs calib=<calibration file>")
    output_dirs.check_is_folder(Path(cfg.output_dir), "output_dir")
    rectifier = build_rectifier(cfg)
    inputs = read_inputs(cfg, rectifier)
    config = OmegaConf.to_container(cfg, resolve=True)
    settings = {k: v for k, v in config.items() if k not in NOT_PRODUCER_KEYS}
    settings["calibration"] = rectifier.provenance()
    made_by = output_dirs.producer("stereo.infer", None, settings)
    written: dict[str, list[str]] = {"left": [], "right": []}
    output_dir = Path(cfg.output_dir)
    with output_dirs.open_run(output_dir, "output_dir", made_by, overwrite=bool(cfg.get("overwrite", False)),
                              extra={"config": config, "calibration": settings["calibration"]},
                              will_write=[output_dir / view / f"{stem}.png" for stem in inputs.stems or []
                                          for view in ("left", "right")]) as record:
        for frame in inputs.frames:
            paths = [output_dir / "left" / f"{frame.stem}.png", output_dir / "right" / f"{frame.stem}.png"]
            record.plan(paths)
            record.save("running")
            for path, image, view in zip(paths, (frame.left, frame.right), ("left", "right")):
                write_image(path, image)
                written[view].append(str(path))
    width, height = rectifier.rectified_size
    print(f"{len(written['left'])} rectified pair(s), {width}x{height} -> {output_dir.resolve()}/left, right")
    return written


def _print_summary(written: dict[str, list[str]], output_dir: Path, predictor: Predictor, count: int,
                   nonfinite: dict[str, int]) -> None:
    print(f"\n{count} pair(s) on {predictor.device} ({predictor.precision}, max_disp {predictor.max_disp}) -> {output_dir.resolve()}")
    for fmt, paths in written.items():
        example = Path(paths[0]).name if paths else "-"
        print(f"  {fmt:<11} {len(paths):>5} file(s)   e.g. {example}")
    if nonfinite:
        print(f"  warning: {len(nonfinite)} pair(s) have non-finite disparity pixels ({sum(nonfinite.values())} in all; "
              "per pair: nonfinite_pixels in manifest.json)", file=sys.stderr)


@command("infer")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
