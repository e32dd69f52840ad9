"""stereo.evaluate: CSV/JSON/exports on disk, the protocol recorded, protocol geometry (pad/crop/mask)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import compose

from stereo.data.io import read_pfm
from stereo.evaluate import evaluate
from stereo.evaluation import metrics, protocols
from stereo.evaluation.loop import score_samples
from stereo.models import InputSpec

def test_evaluate_writes_csv_json_and_exports_with_the_protocol(synthetic_root, tiny_checkpoint, tmp_path):
    checkpoint = tiny_checkpoint
    out = tmp_path / "eval"
    cfg = compose("eval", [f"ckpt_path={checkpoint}", "data.generate=null", f"data.val.root={synthetic_root}",
                           f"data.train.root={synthetic_root}", "num_workers=0", f"paths.output_dir={out}",
                           "export.max_images=1", "protocol=synthetic"])
    summary = evaluate(cfg)

    record = json.loads((out / "metrics.json").read_text())
    for key in ("epe", "bad1", "bad2", "bad3", "d1", "count", "checkpoint"):
        assert key in record, key
    assert record["count"] == 2 and record["checkpoint"] == str(checkpoint.resolve())
    assert record["protocol"] == protocols.get_protocol("synthetic").to_dict()
    assert record["route"] == {"route": "full image", "padding": {"mode": "top_right", "divisor": 16, "min_size": 256}}
    assert record["epe"] == pytest.approx(summary["epe"])

    rows = list(csv.DictReader(open(out / "per_image.csv")))
    assert [r["name"] for r in rows] == sorted({r["name"] for r in rows}) and len(rows) == 2
    assert np.mean([float(r["epe"]) for r in rows]) == pytest.approx(record["epe"])  # per-image mean
    assert [r["route"] for r in rows] == ["full image"] * 2  # the loop's columns (stereo.evaluation.loop)
    assert record["seconds"] == pytest.approx(sum(float(r["seconds"]) for r in rows)) and record["seconds"] > 0

    pfms = sorted((out / "disparity").rglob("*.pfm"))
    assert len(pfms) == 1, "export.max_images=1 exports exactly one image"
    disparity = read_pfm(pfms[0])
    assert disparity.shape == (256, 256) and np.isfinite(disparity).all()
    stem = str(pfms[0])[: -len(".pfm")]
    assert Path(stem + ".png").is_file() and Path(stem + "_error.png").is_file()


def test_the_evaluation_loop_scores_each_sample_with_the_protocol_and_records_its_route():
    """Both evaluators (runner.evaluate_model, methods.evaluate_method) are this loop with their own run."""
    protocol = protocols.get_protocol("synthetic")
    gt = torch.arange(12.0).reshape(1, 3, 4) * 20  # 0..220: the mask keeps 0 < gt < 192
    samples = [(7, "a", 1.0), (9, "b", 3.0)]

    def run(offset):
        result = {"prediction": gt + offset, "disparity": gt, "mask": metrics.evaluation_mask(gt, None, 0.0, 192.0)}
        return {**result, "record": {"offset": offset}}, {"route": "full image", "why": "test"}

    rows = [row for row, _ in score_samples(samples, run, protocol, progress=False)]
    assert [(r["index"], r["name"], r["height"], r["width"], r["offset"]) for r in rows] == [(7, "a", 3, 4, 1.0), (9, "b", 3, 4, 3.0)]
    assert [r["epe"] for r in rows] == [1.0, 3.0] and [r["pixels"] for r in rows] == [9.0, 9.0]  # gt 20..180
    assert [r["bad2"] for r in rows] == [0.0, 100.0] and all(r["route"] == {"route": "full image", "why": "test"} for r in rows)
    assert all(r["seconds"] >= 0 for r in rows)


class ConstantModel(torch.nn.Module):
    """Predicts 5 px everywhere and records the input size it was given; states PSMNet's input needs."""

    max_disp = 32
    input_spec = InputSpec(16, 256)

    def forward(self, left, right):
        assert left.shape[-2] % 16 == 0 and left.shape[-1] % 16 == 0
        self.seen = tuple(left.shape[-2:])
        return torch.full(left.shape[:1] + left.shape[-2:], 5.0)


def _batch(height: int, width: int) -> dict:
    gt = torch.full((1, height, width), 4.0)
    gt[0, 0, 0] = 0.0  # invalid under 0 < gt
    return {"left": torch.zeros(1, 3, height, width), "right": torch.zeros(1, 3, height, width),
            "disparity": gt, "valid": torch.ones(1, height, width, dtype=torch.bool),
            "noc": torch.ones(1, height, width, dtype=torch.bool)}


def test_protocol_pads_to_the_network_minimum_and_unpads():
    model = ConstantModel()
    result = protocols.predict(model, _batch(100, 300), protocols.get_protocol("sceneflow"))
    assert model.seen == (256, 304)
    assert result["prediction"].shape == (1, 100, 300)
    (row,) = protocols.score(result, protocols.get_protocol("sceneflow"))
    assert row["epe"] == pytest.approx(1.0) and row["pixels"] == 100 * 300 - 1


def test_gwcnet_protocol_crops_bottom_right_and_kitti_reports_noc():
    model = ConstantModel()
    gwc = protocols.get_protocol("sceneflow_gwcnet")
    result = protocols.predict(model, _batch(540, 960), gwc)
    assert model.seen == (512, 960) and result["mask"].all()  # the invalid top-left pixel was cropped away
    with pytest.raises(ValueError, match="smaller than the protocol crop"):
        protocols.predict(model, _batch(256, 512), gwc)
    kitti = protocols.get_protocol("kitti2015")
    rows = protocols.score(protocols.predict(model, _batch(256, 256), kitti), kitti)
    assert "noc_d1" in rows[0] and set(kitti.summarize(rows)) >= {"d1", "noc_d1", "count"}
    with pytest.raises(ValueError, match="unknown evaluation protocol"):
        protocols.get_protocol("sceneflow_best")


def test_psmnet_protocol_averages_per_batch_of_8_without_lower_bound():
    protocol = protocols.get_protocol("sceneflow_psmnet")
    assert (protocol.averaging, protocol.batch_size, protocol.min_disp, protocol.passes) == ("per_batch", 8, None, "clean")


def test_a_scene_flow_protocol_reports_every_data_setting_it_changes():
    """protocol=sceneflow_psmnet prescribes every cleanpass file: the change is returned (printed and
    recorded by stereo.evaluate), and a protocol that matches the data config changes nothing."""
    from stereo.evaluation.runner import apply_protocol_to_data

    cfg = compose("eval", ["ckpt_path=x.ckpt", "data=sceneflow"])
    data, changes = apply_protocol_to_data(cfg.data, protocols.get_protocol("sceneflow_psmnet"))
    assert "data.val.files=all (was standard)" in changes and "data.val.passes=clean (was final)" in changes
    assert data.val.files == "all" and data.val.passes == "clean" and cfg.data.val.files == "standard"
    assert apply_protocol_to_data(cfg.data, protocols.get_protocol("sceneflow"))[1] == []
    assert apply_protocol_to_data(cfg.data, protocols.get_protocol("kitti2015")) == (cfg.data, [])
