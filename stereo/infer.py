"""Command-line inference: ``python -m stereo.infer ckpt_path=... left=... right=... output_dir=...``.

Config: ``conf/infer.yaml`` (inputs, formats, device/precision, memory mode, calibration). Prints a
summary of what was written where. ``<output_dir>/manifest.json`` records the resolved config and
every file the run wrote; one run at a time owns an output folder (``stereo.output_dirs``), and a
folder holding an earlier run's results is refused unless ``overwrite=true``.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from stereo import output_dirs
from stereo.cli import entry_point
from stereo.config import CONFIG_DIR
from stereo.data.io import read_calib, read_image
from stereo.inference.inputs import PairError, StereoPair, pairs_from_files, pairs_from_folder, pairs_from_list
from stereo.inference.outputs import OutputWriter, make_calibration
from stereo.inference.predictor import Predictor


def collect_pairs(cfg: DictConfig) -> list[StereoPair]:
    """The pairs named by exactly one of: left+right, input_dir, list_file."""
    given = [k for k in ("left", "input_dir", "list_file") if cfg.get(k) is not None]
    if cfg.get("right") is not None and cfg.get("left") is None:
        raise PairError("right=... given without left=...")
    if len(given) != 1:
        raise PairError(
            "give exactly one input: left=... right=... (files or globs), input_dir=... or list_file=... "
            f"(got {given or 'none'})"
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


def build_writer(cfg: DictConfig) -> OutputWriter:
    calibration = make_calibration(cfg.calib_file, cfg.focal, cfg.baseline, cfg.doffs, cfg.cx, cfg.cy)
    color_range = tuple(cfg.color_range) if cfg.color_range is not None else None
    return OutputWriter(
        Path(cfg.output_dir), requested_formats(cfg), color_range, calibration, cfg.max_depth, cfg.confidence_format
    )


def run(cfg: DictConfig) -> dict[str, list[str]]:
    """Predict every pair and write the requested formats; returns {format: [paths]}."""
    checkpoint = Path(str(cfg.ckpt_path))
    if not checkpoint.is_file():
        raise FileNotFoundError(f"{checkpoint}: checkpoint not found (ckpt_path=...)")
    pairs = collect_pairs(cfg)
    # depth/ply without a global calibration: use each scene's calib.txt when every pair has one
    formats = requested_formats(cfg)
    per_scene_calib = bool({"depth", "ply"} & set(formats)) and cfg.calib_file is None and cfg.focal is None
    if per_scene_calib and not all(p.calib for p in pairs):
        missing = next(p for p in pairs if p.calib is None)
        raise ValueError(
            f"{missing.left}: formats depth/ply need a calibration: calib_file=<calib.txt> or "
            "focal=<px> baseline=<unit> (no calib.txt beside the image)"
        )
    writer = build_writer(cfg)
    output_dirs.check_is_folder(Path(cfg.output_dir), "output_dir")
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
    with output_dirs.claim(cfg.output_dir, "output_dir") as output_dir:
        output_dirs.clear_earlier_run(output_dir, bool(cfg.get("overwrite", False)))
        record = {"command": "stereo.infer", "checkpoint": str(checkpoint.resolve()),
                  "config": OmegaConf.to_container(cfg, resolve=True)}
        output_dirs.write_manifest(output_dir, record, [], "running")
        try:
            with tqdm(total=len(pairs), desc="stereo pairs", unit="pair") as progress:
                for start in range(0, len(pairs), batch_size):
                    batch = pairs[start : start + batch_size]
                    lefts = [read_image(p.left) for p in batch]
                    rights = [read_image(p.right) for p in batch]
                    names = [(str(p.left), str(p.right)) for p in batch]
                    for pair, left, prediction in zip(batch, lefts, predictor.predict_batch(lefts, rights, names)):
                        calibration = read_calib(pair.calib) if per_scene_calib else None
                        paths = writer.write(pair.stem, prediction.disparity, prediction.confidence, left, calibration)
                        for fmt, path in paths.items():
                            written[fmt].append(str(path))
                    progress.update(len(batch))
        except BaseException:
            output_dirs.write_manifest(output_dir, record, _files(written), "failed")
            raise
        output_dirs.write_manifest(output_dir, record, _files(written), "complete")
    _print_summary(written, Path(cfg.output_dir), predictor, len(pairs))
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
