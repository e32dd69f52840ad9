"""Benchmark submission: ``python -m stereo.submit benchmark=kitti2015 ckpt_path=... data_root=... output=...``.

Thin on purpose: finds the benchmark's test pairs and writes its files (``stereo.evaluation.submission``)
with one ``Predictor``; frames a run of the same producer (checkpoint content, settings) already wrote
are skipped, so an interrupted run resumes, and a run of another producer is refused. Config:
``conf/submit.yaml``; layouts: ``docs/submission.md``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig
from tqdm import tqdm

from stereo import output_dirs
from stereo.cli import OutputDirError, command
from stereo.data.io import read_image
from stereo.evaluation.submission import SubmissionWriter, find_frames
from stereo.inference.predictor import Predictor
from stereo.models.pretrained import resolve_checkpoint


# Settings that decide the files a submission holds (a rerun with other values must not mix with them).
PRODUCER_KEYS = ("benchmark", "data_root", "method", "resolution", "max_disp", "precision", "mode", "max_memory_gb",
                 "optimize")


def submit(cfg: DictConfig) -> dict[str, Any]:
    """Predict every test pair not yet written; returns counts, runtimes and the archive path.

    A rerun into the same ``output`` resumes only when the recorded producer (checkpoint content,
    the settings in :data:`PRODUCER_KEYS`) is the same; otherwise it is refused (``overwrite=true``
    replaces the earlier files), so one upload never holds frames of two models."""
    checkpoint = resolve_checkpoint(cfg.ckpt_path)
    if not checkpoint.is_file():
        raise FileNotFoundError(f"{checkpoint}: checkpoint not found (ckpt_path=...)")
    output = Path(str(cfg.output))
    if output.exists() and not output.is_dir():
        raise OutputDirError(f"output={output} is an existing file, not a folder; choose a folder for the "
                             "benchmark's files")
    writer = SubmissionWriter(str(cfg.benchmark), output, str(cfg.method))
    frames = find_frames(writer.benchmark, str(cfg.data_root), str(cfg.resolution))
    made_by = output_dirs.producer("stereo.submit", checkpoint, {key: cfg.get(key) for key in PRODUCER_KEYS})
    seconds: list[float] = []
    predictor = None
    with output_dirs.open_run(output, "output", made_by, overwrite=bool(cfg.get("overwrite", False)),
                              resumable=True, will_write=[output / f for frame in frames for f in writer.files(frame)]) as record:
        todo = [frame for frame in frames if not all(record.owns(output / f) and (output / f).is_file()
                                                       for f in writer.files(frame))]
        for frame in tqdm(todo, desc=f"{writer.benchmark} test pairs", unit="pair"):
            if predictor is None:  # loading is skipped entirely when every frame is already written
                predictor = Predictor.from_checkpoint(checkpoint, device=cfg.device, precision=cfg.precision,
                                                      mode=cfg.mode, max_memory_gb=cfg.max_memory_gb,
                                                      swap_check=False, optimize=cfg.optimize)
            max_disp = cfg.max_disp if cfg.max_disp is not None else frame.max_disp or predictor.max_disp
            left, right = read_image(frame.left), read_image(frame.right)
            started = time.perf_counter()
            prediction = predictor.predict(left, right, (str(frame.left), str(frame.right)), int(max_disp))
            seconds.append(time.perf_counter() - started)
            record.plan(output / f for f in writer.files(frame))
            record.save("running")
            writer.write(frame, prediction.disparity, seconds[-1])
        if cfg.zip and writer.benchmark != "middlebury":
            record.plan([writer.archive_path])
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


@command("submit")
def main(cfg: DictConfig) -> None:
    submit(cfg)


if __name__ == "__main__":
    main()
