"""Benchmark submission: ``python -m stereo.submit benchmark=kitti2015 ckpt_path=... data_root=... output=...``.

Thin on purpose: finds the benchmark's test pairs and writes its files (``stereo.evaluation.submission``)
with one ``Predictor``; finished frames are skipped, so an interrupted run resumes. Config:
``conf/submit.yaml``; layouts: ``docs/submission.md``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig
from tqdm import tqdm

from stereo.cli import entry_point
from stereo.config import CONFIG_DIR
from stereo.data.io import read_image
from stereo.evaluation.submission import SubmissionWriter, find_frames
from stereo.inference.predictor import Predictor


def submit(cfg: DictConfig) -> dict[str, Any]:
    """Predict every test pair not yet written; returns counts, runtimes and the archive path."""
    checkpoint = Path(str(cfg.ckpt_path))
    if not checkpoint.is_file():
        raise FileNotFoundError(f"{checkpoint}: checkpoint not found (ckpt_path=...)")
    writer = SubmissionWriter(str(cfg.benchmark), Path(str(cfg.output)), str(cfg.method))
    frames = find_frames(writer.benchmark, str(cfg.data_root), str(cfg.resolution))
    todo = [frame for frame in frames if not writer.done(frame)]
    seconds: list[float] = []
    predictor = None
    for frame in tqdm(todo, desc=f"{writer.benchmark} test pairs", unit="pair"):
        if predictor is None:  # loading is skipped entirely when every frame is already written
            predictor = Predictor.from_checkpoint(checkpoint, device=cfg.device, precision=cfg.precision,
                                                  mode=cfg.mode, max_memory_gb=cfg.max_memory_gb,
                                                  swap_check=False, optimize=cfg.optimize)
            network_max_disp = predictor.max_disp
        max_disp = cfg.max_disp if cfg.max_disp is not None else frame.max_disp or network_max_disp
        predictor.set_max_disp(int(max_disp))
        left, right = read_image(frame.left), read_image(frame.right)
        started = time.perf_counter()
        prediction = predictor.predict(left, right, (str(frame.left), str(frame.right)))
        seconds.append(time.perf_counter() - started)
        writer.write(frame, prediction.disparity, seconds[-1])
    archive = writer.archive(frames) if cfg.zip else None
    summary = {"benchmark": writer.benchmark, "frames": len(frames), "predicted": len(todo),
               "skipped": len(frames) - len(todo), "seconds": seconds, "archive": archive, "output": writer.output}
    print(format_summary(summary, predictor))
    return summary


def format_summary(summary: dict[str, Any], predictor: Predictor | None) -> str:
    lines = [f"\n{summary['benchmark']}: {summary['frames']} test pair(s), {summary['predicted']} predicted, "
             f"{summary['skipped']} already done -> {Path(summary['output']).resolve()}"]
    if summary["seconds"]:
        mean = sum(summary["seconds"]) / len(summary["seconds"])
        lines.append(f"  runtime: {mean:.3f} s per pair on {predictor.device} ({predictor.precision})")
    if summary["archive"] is not None:
        lines.append(f"  upload:  {Path(summary['archive']).resolve()}")
    return "\n".join(lines)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="submit")
@entry_point
def main(cfg: DictConfig) -> None:
    submit(cfg)


if __name__ == "__main__":
    main()
