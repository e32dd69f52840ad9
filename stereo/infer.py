"""Command-line inference: ``python -m stereo.infer ckpt_path=... left=... right=... output_dir=...``.

Config: ``conf/infer.yaml`` (inputs, formats, device/precision, memory mode, calibration). Prints a
summary of what was written where. ``<output_dir>/manifest.json`` records the resolved config and
every file the run wrote; one run at a time owns an output folder (``stereo.output_dirs``), and a
folder holding an earlier run's results is refused unless ``overwrite=true``.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator
from pathlib import Path

import hydra
import numpy as np
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from stereo import output_dirs
from stereo.cli import entry_point
from stereo.config import CONFIG_DIR
from stereo.calibration.readers import read_calibration, read_middlebury, require_calibration_files
from stereo.calibration.rectify import Rectifier
from stereo.data.io import read_image, write_image
from stereo.inference.inputs import PairError, StereoPair, pairs_from_files, pairs_from_folder, pairs_from_list
from stereo.inference.outputs import OutputWriter, default_color_range, make_calibration
from stereo.inference.predictor import Predictor
from stereo.inference.video import LAYOUTS, VideoWriter, resolve_video_format, stereo_frames, video_info
from stereo.visualize import colorize_disparity


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


def _image_frames(pairs: list[StereoPair]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    for pair in pairs:
        yield read_image(pair.left), read_image(pair.right)


def run(cfg: DictConfig) -> dict[str, list[str]]:
    """Predict every pair (or video frame) and write the requested formats; returns {format: [paths]}.

    Frames are read, predicted and written ``batch_size`` at a time, so memory does not grow with the
    length of a sequence. ``video`` in formats writes one colourised disparity video of all frames.
    """
    if cfg.rectify_only:
        return write_rectified(cfg)
    checkpoint = Path(str(cfg.ckpt_path))
    if not checkpoint.is_file():
        raise FileNotFoundError(f"{checkpoint}: checkpoint not found (ckpt_path=...)")
    formats = requested_formats(cfg)
    image_formats = [fmt for fmt in formats if fmt != "video"]
    video = video_input(cfg)
    if video is None:
        pairs = collect_pairs(cfg)
        name, frames, total, fps = "sequence", _image_frames(pairs), len(pairs), None
        stems = iter([p.stem for p in pairs])  # iterators: each batch takes the next names
        names = iter([(str(p.left), str(p.right)) for p in pairs])
    else:
        pairs = []
        name, frames, total, fps = video
        stems = (f"{name}_{index:06d}" for index in itertools.count())
        names = ((f"{name} frame {index} (left)", f"{name} frame {index} (right)") for index in itertools.count())
    rectifier = build_rectifier(cfg)
    if rectifier is not None:
        frames = rectifier.frames(frames)
    # depth/ply without a global calibration: use each scene's calib.txt when every pair has one
    per_scene_calib = bool({"depth", "depth_original", "ply"} & set(formats)) and cfg.calib is None and cfg.focal is None
    if per_scene_calib and not (pairs and all(p.calib for p in pairs)):
        where = next((str(p.left) for p in pairs if p.calib is None), "video input")
        raise ValueError(
            f"{where}: formats depth/ply need a calibration: calib=<calibration file> or "
            "focal=<px> baseline=<unit> (no calib.txt beside the image)"
        )
    writer = build_writer(cfg, image_formats, rectifier) if image_formats else None
    output_dirs.check_is_folder(Path(cfg.output_dir), "output_dir")
    color_range = tuple(cfg.color_range) if cfg.color_range is not None else None
    # One colour scale for the whole run (the writer's rule, docs/inference.md), shared with the video.
    video_writer = None
    if "video" in formats:  # an unknown video_format, or one whose encoder is not installed, stops the run here
        suffix = resolve_video_format(str(cfg.video_format)).suffix
        video_writer = VideoWriter(Path(cfg.output_dir) / f"{name}_disp{suffix}", cfg.video_fps or fps or DEFAULT_FPS,
                                   str(cfg.video_format))
    predictor = Predictor.from_checkpoint(
        checkpoint,
        device=cfg.device,
        precision=cfg.precision,
        max_disp=cfg.max_disp,
        mode=cfg.mode,
        max_memory_gb=cfg.max_memory_gb,
        downscale=cfg.downscale,
        tile_overlap=cfg.tile_overlap,
        swap_check=cfg.swap_check,
        optimize=cfg.optimize,
    )
    written: dict[str, list[str]] = {fmt: [] for fmt in formats}
    batch_size = max(1, int(cfg.batch_size))
    calibrations = iter([p.calib for p in pairs])
    count = 0
    planned: list[Path] = []  # every image file this run has started to write
    with output_dirs.claim(cfg.output_dir, "output_dir") as output_dir:
        output_dirs.clear_earlier_run(output_dir, bool(cfg.get("overwrite", False)), "stereo.infer")
        record = {"command": "stereo.infer", "checkpoint": str(checkpoint.resolve()),
                  "config": OmegaConf.to_container(cfg, resolve=True)}
        if rectifier is not None:
            record["calibration"] = rectifier.provenance()
        output_dirs.write_manifest(output_dir, record, [], "running")
        try:
            with contextlib.ExitStack() as stack, tqdm(total=total, desc="stereo pairs", unit="pair") as progress:
                if video_writer is not None:
                    stack.enter_context(video_writer)
                while batch := list(itertools.islice(frames, batch_size)):
                    lefts, rights = [left for left, _ in batch], [right for _, right in batch]
                    batch_names = list(itertools.islice(names, len(batch)))
                    for stem, left, prediction in zip(itertools.islice(stems, len(batch)), lefts,
                                                      predictor.predict_batch(lefts, rights, batch_names)):
                        if color_range is None:
                            color_range = default_color_range(prediction.disparity)
                            if writer is not None:
                                writer.color_range = color_range
                        if writer is not None:
                            # Listed before they are written: a killed run's manifest names its partial files.
                            planned += [writer.path(fmt, stem) for fmt in image_formats]
                            output_dirs.write_manifest(output_dir, record, planned, "running")
                            calib_path = next(calibrations, None)
                            calibration = read_middlebury(calib_path).depth_geometry() if per_scene_calib else None
                            paths = writer.write(stem, prediction.disparity, prediction.confidence, left, calibration)
                            for fmt, path in paths.items():
                                written[fmt].append(str(path))
                        if video_writer is not None:
                            video_writer.write(colorize_disparity(prediction.disparity, *color_range))
                    count += len(batch)
                    progress.update(len(batch))
            if video_writer is not None and video_writer.frames:
                written["video"].append(str(video_writer.path))
        except BaseException:
            output_dirs.write_manifest(output_dir, record, _files(written) + planned, "failed")
            raise
        output_dirs.write_manifest(output_dir, record, _files(written), "complete")
    _print_summary(written, Path(cfg.output_dir), predictor, count)
    return written


def write_rectified(cfg: DictConfig) -> dict[str, list[str]]:
    """rectify_only=true: the rectified pairs as <output_dir>/left/<stem>.png and right/<stem>.png
    (an input_dir for a later run), no network."""
    if cfg.calib is None:
        raise ValueError("rectify_only=true needs calib=<calibration file>")
    rectifier = build_rectifier(cfg)
    video = video_input(cfg)
    if video is None:
        pairs = collect_pairs(cfg)
        frames, stems = _image_frames(pairs), iter([p.stem for p in pairs])
    else:
        frames, stems = video[1], (f"{video[0]}_{index:06d}" for index in itertools.count())
    output_dirs.check_is_folder(Path(cfg.output_dir), "output_dir")
    written: dict[str, list[str]] = {"left": [], "right": []}
    with output_dirs.claim(cfg.output_dir, "output_dir") as output_dir:
        output_dirs.clear_earlier_run(output_dir, bool(cfg.get("overwrite", False)), "stereo.infer")
        record = {"command": "stereo.infer", "config": OmegaConf.to_container(cfg, resolve=True),
                  "calibration": rectifier.provenance()}
        planned: list[Path] = []
        try:
            for stem, (left, right) in zip(stems, rectifier.frames(frames)):
                paths = [output_dir / "left" / f"{stem}.png", output_dir / "right" / f"{stem}.png"]
                planned += paths
                output_dirs.write_manifest(output_dir, record, planned, "running")
                for path, image, view in zip(paths, (left, right), ("left", "right")):
                    write_image(path, image)
                    written[view].append(str(path))
        except BaseException:
            output_dirs.write_manifest(output_dir, record, planned, "failed")
            raise
        output_dirs.write_manifest(output_dir, record, planned, "complete")
    width, height = rectifier.rectified_size
    print(f"{len(written['left'])} rectified pair(s), {width}x{height} -> {Path(cfg.output_dir).resolve()}/left, right")
    return written


def _files(written: dict[str, list[str]]) -> list[Path]:
    return [Path(path) for paths in written.values() for path in paths]


def _print_summary(written: dict[str, list[str]], output_dir: Path, predictor: Predictor, count: int) -> None:
    print(f"\n{count} pair(s) on {predictor.device} ({predictor.precision}, max_disp {predictor.max_disp}) -> {output_dir.resolve()}")
    for fmt, paths in written.items():
        example = Path(paths[0]).name if paths else "-"
        print(f"  {fmt:<11} {len(paths):>5} file(s)   e.g. {example}")


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="infer")
@entry_point
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
