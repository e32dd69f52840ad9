"""Evaluate a checkpoint (ours or the PSMNet authors') under an explicit protocol.

    python -m stereo.evaluate ckpt_path=logs/train/runs/<run>/checkpoints/last.ckpt protocol=synthetic
    torchrun --nproc_per_node 4 -m stereo.evaluate ckpt_path=... data=sceneflow protocol=sceneflow

Thin on purpose: loads the checkpoint, builds the dataset and hands both to
``stereo.evaluation.runner.evaluate_model`` (which writes per_image.csv, metrics.json and exports).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from stereo import output_dirs
from stereo.cli import command
from stereo.devices import resolve_device
from stereo.evaluation import protocols
from stereo.models.pretrained import resolve_checkpoint
from stereo.evaluation.runner import apply_protocol_to_data, build_eval_dataset, distributed_rank, evaluate_model


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Load ``cfg.ckpt_path`` with stereo.models.load_model and score it under ``cfg.protocol``."""
    from stereo.models import load_model

    protocol = protocols.check_data(str(cfg.protocol), cfg.data.get("protocol"))
    if cfg.get("ckpt_path") in (None, "???"):
        raise ValueError("evaluate needs ckpt_path=<checkpoint> (ours or the PSMNet authors')")
    checkpoint = resolve_checkpoint(cfg.ckpt_path)
    if not checkpoint.is_file():
        raise FileNotFoundError(f"{checkpoint}: checkpoint file not found")
    output_dir = Path(cfg.paths.output_dir)
    output_dirs.check_is_folder(output_dir, "paths.output_dir")
    device = resolve_device(str(cfg.device))
    model = load_model(checkpoint, map_location="cpu")
    data_cfg, protocol_changes = apply_protocol_to_data(cfg.data, protocol)
    if protocol_changes and distributed_rank()[0] == 0:
        print(f"protocol {protocol.name} sets " + ", ".join(protocol_changes) + " (docs/evaluation.md#protocols)")
    dataset = build_eval_dataset(data_cfg, cfg.split)
    data = OmegaConf.to_container(data_cfg, resolve=True)
    export = OmegaConf.to_container(cfg.export, resolve=True)
    made_by = output_dirs.producer("stereo.evaluate", checkpoint, {"protocol": str(cfg.protocol), "split": str(cfg.split),
                                                                   "data": data, "export": export})
    rank = distributed_rank()[0]
    tables = [output_dir / "per_image.csv", output_dir / "metrics.json"]
    with (output_dirs.open_run(output_dir, "paths.output_dir", made_by, overwrite=bool(cfg.get("overwrite", False)),
                               extra=output_dirs.config_record(cfg), will_write=tables)
          if rank == 0 else contextlib.nullcontext()) as record:
        if record is not None:
            record.plan(tables)
            output_dirs.write_hydra_record(record, cfg)
        summary = evaluate_model(
            model, dataset, protocol, output_dir, export=export, device=device, num_workers=int(cfg.num_workers),
            extra_record={"checkpoint": str(checkpoint.resolve()), "split": str(cfg.split), "data": data,
                          "protocol_data_changes": protocol_changes},
        )
        if record is not None:
            record.adopt_new_files()
    if rank == 0:
        print(format_summary(summary, output_dir))
    return summary


def format_summary(summary: Mapping[str, Any], output_dir: Path) -> str:
    keys = [k for k in ("epe", "bad1", "bad2", "bad3", "d1", "noc_epe", "noc_bad1", "noc_bad2", "noc_d1") if k in summary]
    values = "  ".join(f"{k}={summary[k]:.4f}" for k in keys)
    nonfinite = (f"\n  warning: {summary['nonfinite_gt_images']} image(s) have non-finite ground truth "
                 f"({summary['nonfinite_gt']} NaN/inf pixels, not scored; column nonfinite_gt in per_image.csv)"
                 if summary.get("nonfinite_gt_images") else "")
    return (f"[{summary['protocol']['name']}] {summary['count']} images ({summary['excluded']} without valid pixels): {values}"
            f"{nonfinite}\n"
            f"  metrics:  {output_dir / 'metrics.json'}\n  per image: {output_dir / 'per_image.csv'}\n"
            f"  disparity exports: {summary['exports']}")


@command("eval")
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    main()
