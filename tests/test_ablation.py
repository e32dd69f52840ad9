"""The comparison commands: the ablation (quick=true) end to end (real training commands, real
evaluation, table files, resumption of an interrupted arm), the real-pair comparison of a checkpoint
against StereoSGBM and the SGBM tuning grid."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
from conftest import compose

from stereo import ablation, compare_real, tune_sgbm
from stereo.data.real_samples import default_real_data_dir
from stereo.models.checkpoints import read_checkpoint

VARIANTS = ["psmnet", "ea_psmnet_feature"]


def _real_args() -> list[str]:
    """Score one small real pair when ../shared/data/real is present, else skip the real pairs."""
    real = default_real_data_dir()
    return [f"real_root={real}", "real_names=[middlebury2001/tsukuba]"] if real.is_dir() else ["real=false"]


@pytest.mark.slow
def test_quick_ablation_resumes_an_interrupted_arm_tabulates_every_variant_and_reuses_finished_ones(synthetic_root, tmp_path):
    out = tmp_path / "ablation"
    data = f'train_overrides=["data.generate=null","data.train.root={synthetic_root}","data.val.root={synthetic_root}"]'
    argv = ["quick=true", "budget_steps=2", f"variants=[{','.join(VARIANTS)}]", f"output_dir={out}", *_real_args()]
    # The first arm stops after 1 of its 2 steps (an epoch of one batch ends the attempt): reported as such.
    stopped = data[:-1] + ',"trainer.max_epochs=1","trainer.limit_train_batches=1"]'
    with pytest.raises(RuntimeError, match="stopped at step 1 of 2"):
        ablation.run(compose("ablation", [*argv, stopped]))
    # The next run resumes it from its last checkpoint and trains the one step left.
    report = ablation.run(compose("ablation", [*argv, data]))
    assert [(r["variant"], r["seed"], r["steps"], r["resumed"]) for r in report["runs"]] == [
        (VARIANTS[0], 1, 2, True), (VARIANTS[1], 1, 2, False)]
    assert read_checkpoint(out / "runs" / VARIANTS[0] / "seed1" / "checkpoints" / "last.ckpt")["global_step"] == 2

    splits = ["synthetic"] + (["real"] if "real=false" not in argv else [])
    for run in report["runs"] + [report["sgbm"]]:
        for split in splits:
            summary = run[split]["summary"]
            assert all(math.isfinite(summary[m]) for m in ("epe", "bad2", "bad3", "d1")), (run["variant"], split)
            assert summary["count"] == (2 if split == "synthetic" else 1)
    assert report["runs"][1]["params"] > report["runs"][0]["params"]  # the attention block adds weights
    written = json.loads((out / "ablation.json").read_text())
    assert [row[0] for row in written["table"]["rows"]] == [*VARIANTS, "StereoSGBM"]
    table = (out / "ablation.md").read_text()
    for name in [*VARIANTS, "StereoSGBM", "synthetic EPE", "bad-3"]:
        assert name in table
    assert "nan" not in table.lower()

    # Finished arms are read back untouched.
    results = [out / "runs" / variant / "seed1" / "result.json" for variant in VARIANTS]
    mtimes = [path.stat().st_mtime_ns for path in results]
    again = ablation.run(compose("ablation", [*argv, data]))
    assert [path.stat().st_mtime_ns for path in results] == mtimes and again["runs"] == report["runs"]


def test_unknown_variant_is_refused_with_the_config_folder(tmp_path):
    with pytest.raises(ValueError, match=r"unknown model config\(s\) \['no_such_model'\]; see .*conf/model"):
        ablation.run(compose("ablation", ["variants=[no_such_model]", f"output_dir={tmp_path}"]))


def test_compare_real_scores_a_checkpoint_and_sgbm_on_the_same_pairs(tiny_checkpoint, real_data_dir, tmp_path):
    report = compare_real.run(compose("compare_real", [f"checkpoints=[{tiny_checkpoint}]", f"real_root={real_data_dir}",
                                                       "names=[middlebury2001/tsukuba]", f"output_dir={tmp_path}"]))
    methods = report["methods"]
    assert list(methods) == ["StereoSGBM", tiny_checkpoint.name]
    rows = [methods[name]["rows"][0] for name in methods]
    assert [r["name"] for r in rows] == ["middlebury2001/tsukuba"] * 2
    assert rows[0]["pixels"] == rows[1]["pixels"] > 0 and rows[0]["max_disp"] == rows[1]["max_disp"] == 16
    assert all(math.isfinite(r["epe"]) for r in rows)
    assert rows[1]["coverage"] == 100.0  # a network is dense by construction
    assert [r["route"]["route"] for r in rows] == ["full image"] * 2
    assert "middlebury2001/tsukuba" in (tmp_path / "compare_real.md").read_text()


def _two_last_checkpoints(tiny_checkpoint, folder):
    paths = []
    for run in ("run_a", "run_b"):
        (folder / run).mkdir()
        paths.append(folder / run / "last.ckpt")
        shutil.copyfile(tiny_checkpoint, paths[-1])
    return paths


def test_checkpoints_sharing_a_file_name_are_labelled_by_their_paths_and_one_listed_twice_is_refused(
        tiny_checkpoint, tmp_path):
    first, second = _two_last_checkpoints(tiny_checkpoint, tmp_path)
    assert compare_real.checkpoint_labels([str(first), str(second), "ea_census_zero_shot", str(tiny_checkpoint)]) == {
        str(first): str(first), str(second): str(second), "ea_census_zero_shot": "ea_census_zero_shot",
        str(tiny_checkpoint): tiny_checkpoint.name}
    with pytest.raises(ValueError, match=r"^checkpoints: .*last.ckpt is listed twice"):
        compare_real.checkpoint_labels([str(first), str(tmp_path / "run_a" / ".." / "run_a" / "last.ckpt")])


@pytest.mark.slow  # 2.4 s; the labels themselves are checked in the quick tier (above)
def test_compare_real_reports_two_runs_last_checkpoints_side_by_side(tiny_checkpoint, real_data_dir, tmp_path):
    """One result never replaces another in the report (it did when both were labelled last.ckpt)."""
    paths = _two_last_checkpoints(tiny_checkpoint, tmp_path)
    report = compare_real.run(compose("compare_real", [f"checkpoints=[{paths[0]},{paths[1]}]",
                                                       f"real_root={real_data_dir}", "names=[middlebury2001/tsukuba]",
                                                       f"output_dir={tmp_path / 'out'}"]))
    assert list(report["methods"]) == ["StereoSGBM", str(paths[0]), str(paths[1])]
    first, second = (report["methods"][str(path)]["rows"][0] for path in paths)
    # the same weights on the same pair: the same scores (float32 reduction order is all that may differ)
    assert first["name"] == second["name"] and first["pixels"] == second["pixels"] > 0
    assert first["epe"] == pytest.approx(second["epe"], rel=1e-6)


def test_an_evaluation_never_switches_to_strips_silently(tiny_checkpoint, real_data_dir, tmp_path):
    """Over the memory budget a pair is refused, naming the options; allowed, its strips are recorded."""
    options = [f"checkpoints=[{tiny_checkpoint}]", f"real_root={real_data_dir}", "names=[middlebury2001/tsukuba]",
               f"output_dir={tmp_path}", "max_memory_gb=0.5"]
    with pytest.raises(ValueError, match=r"^a 384x288 pair with max_disp 16 .* max_memory_gb=0.5: .*allow_strips=true"):
        compare_real.run(compose("compare_real", options))
    report = compare_real.run(compose("compare_real", options + ["allow_strips=true"]))
    route = report["methods"][tiny_checkpoint.name]["rows"][0]["route"]
    # the 384x288 pair runs enlarged to min_width 768 (768x576): three 256-row strips with 64 rows of overlap
    assert route["enlarged"]["to"] == [768, 576]
    assert route["route"] == "strips" and route["strips"] == 3 and route["strip_rows"] == 256
    assert report["methods"][tiny_checkpoint.name]["summary"]["routes"] == ["strips"]


def test_tune_sgbm_ranks_every_grid_setting_on_the_synthetic_test_split(synthetic_root, tmp_path):
    """Two settings (the uniqueness ratios) stand for the 24 of the default grid: the same code ranks any grid."""
    out = tmp_path / "tuning.json"
    results = tune_sgbm.run(compose("tune_sgbm", [f"output={out}", "data.generate=null", f"data.train.root={synthetic_root}",
                                                  f"data.val.root={synthetic_root}", "grid.block_size=[3]", "grid.mode=[hh]",
                                                  "grid.pad_left=[true]"]))
    assert sorted(r["params"]["uniqueness_ratio"] for r in results) == [5, 15]
    assert [r["epe"] for r in results] == sorted(r["epe"] for r in results)
    assert all(math.isfinite(r["epe"]) and 0 < r["coverage"] <= 100 for r in results)
    written = json.loads(out.read_text())
    assert written["results"] == results and written["dataset"] == "synthetic TEST (2 pairs)"


def test_a_network_searches_at_least_its_own_range_unless_told_to_search_the_pairs():
    from stereo.evaluation.methods import network_method

    class Recorder:  # the part of Predictor that network_method uses
        def __init__(self, covered: int = 192) -> None:
            self.max_disp, self.covered, self.ranges = 192, covered, []

        def covered_range(self, width):  # input pixels its own range covers (less on a pair it enlarges)
            return self.covered

        def route(self, height, width, max_disp=None):
            return {"route": "full image"}

        def predict(self, left, right, max_disp=None):
            self.ranges.append(max_disp)
            return type("P", (), {"disparity": np.zeros(left.shape[:2], np.float32)})()

    image = np.zeros((32, 48, 3), np.uint8)
    for search_range, expected in (("network", [None, 208]), ("pair", [16, 208])):  # None: the predictor's own
        predictor = Recorder()
        method = network_method(predictor, search_range)
        method(image, image, 16)
        method(image, image, 208)
        assert predictor.ranges == expected
    enlarged = Recorder(covered=96)  # its own 192 px at x2 cover 96 px of the pair: more is asked for
    method = network_method(enlarged, "network")
    method(image, image, 96)
    method(image, image, 112)
    assert enlarged.ranges == [None, 112]
    with pytest.raises(ValueError, match="search_range must be one of"):
        network_method(Recorder(), "all")


def test_compare_real_takes_the_shipped_weights_by_name(real_data_dir, tmp_path):
    report = compare_real.run(compose("compare_real", ["checkpoints=[ea_census_zero_shot]", f"real_root={real_data_dir}",
                                                       "names=[middlebury2001/venus]", f"output_dir={tmp_path}"]))
    assert list(report["methods"]) == ["StereoSGBM", "ea_census_zero_shot"] and report["search_range"] == "network"
