"""stereo.evaluate: masked ground truth is counted; the run records its tables and Hydra's .hydra/ (a refused
run changes nothing: test_output_folders.py)."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest

from stereo.data.io import read_pfm, write_pfm


def evaluate(run_command, root, checkpoint, *overrides):
    return run_command("evaluate", f"ckpt_path={checkpoint}", "data.generate=null", f"data.val.root={root}",
                       f"data.train.root={root}", "num_workers=0", "paths.output_dir=eval", "export.max_images=0",
                       *overrides)


@pytest.mark.slow  # a real evaluation; tests/test_metrics.py and the in-memory case below count quickly
def test_masked_nonfinite_gt_is_counted_and_the_manifest_lists_the_tables_and_hydras_record(
        workspace, run_command, synthetic_root, tiny_checkpoint):
    root = workspace / "tree"
    shutil.copytree(synthetic_root, root)
    gt = sorted(p for p in root.rglob("*.pfm") if "TEST" in p.parts and "disparity" in p.parts and "left" in p.parts)[0]
    disparity = read_pfm(gt).copy()
    disparity[:3, :5] = np.nan
    disparity[10, :7] = np.inf
    write_pfm(gt, disparity)
    result = evaluate(run_command, root, tiny_checkpoint)
    assert result.status == 0 and "non-finite ground truth (22 NaN/inf pixels" in result.stdout
    rows = list(csv.DictReader(open(workspace / "eval" / "per_image.csv")))
    assert sorted(float(row["nonfinite_gt"]) for row in rows) == [0.0] * (len(rows) - 1) + [22.0]
    assert json.loads((workspace / "eval" / "metrics.json").read_text())["nonfinite_gt"] == 22
    manifest = json.loads((workspace / "eval" / "manifest.json").read_text())
    assert {"metrics.json", "per_image.csv", ".hydra/config.yaml", ".hydra/overrides.yaml"} <= set(manifest["files"])


def test_evaluation_reads_with_on_error_raise_and_names_the_unreadable_file(workspace, run_command, synthetic_root,
                                                                           tiny_checkpoint):
    """data.on_error=skip would score a substitute sample twice; evaluation stops at the broken file instead."""
    root = workspace / "tree"
    shutil.copytree(synthetic_root, root)
    broken = sorted(p for p in root.rglob("*.png") if "TEST" in p.parts and "left" in p.parts)
    for path in broken:
        path.write_bytes(path.read_bytes()[:100])
    line = evaluate(run_command, root, tiny_checkpoint, "data.on_error=skip").error_line()
    assert any(str(path) in line for path in broken)
    assert not (workspace / "eval" / "metrics.json").exists()


def test_nonfinite_ground_truth_in_memory_is_reported_per_image_and_in_metrics_json(tmp_path):
    import torch

    from stereo.evaluation.runner import evaluate_model
    from stereo.models import InputSpec

    class Constant(torch.nn.Module):
        max_disp = 32
        input_spec = InputSpec(16, 16)

        def forward(self, left, right):
            return torch.full(left.shape[:1] + left.shape[-2:], 5.0)

    def sample(name, gt_value):
        return {"left": torch.zeros(3, 64, 64), "right": torch.zeros(3, 64, 64), "name": name,
                "disparity": torch.full((64, 64), gt_value), "valid": torch.ones(64, 64, dtype=torch.bool)}

    dataset = [sample("finite", 4.0), sample("all_nan", float("nan"))]
    summary = evaluate_model(Constant(), dataset, "synthetic", tmp_path, export={"max_images": 0})
    rows = {row["name"]: row for row in csv.DictReader(open(tmp_path / "per_image.csv"))}
    assert float(rows["all_nan"]["nonfinite_gt"]) == 64 * 64 and float(rows["finite"]["nonfinite_gt"]) == 0
    record = json.loads((tmp_path / "metrics.json").read_text())
    assert record["nonfinite_gt"] == 64 * 64 and record["nonfinite_gt_images"] == 1 and record["excluded"] == 1
    assert summary["epe"] == 1.0
    assert not list(tmp_path.glob(".*.tmp")), "atomic writes leave no temporary files"


def test_kitti_ground_truth_saved_as_8_bit_gets_the_kitti_hint(tmp_path):
    import cv2

    from stereo.data.io import DataError, read_disparity

    path = tmp_path / "training" / "disp_occ_0" / "000000_10.png"
    path.parent.mkdir(parents=True)
    cv2.imwrite(str(path), np.full((8, 8), 40, np.uint8))
    with pytest.raises(DataError, match="KITTI ground truth is 16-bit .*original disp_occ_0") as error:
        read_disparity(path)
    assert "Tsukuba" not in str(error.value)
