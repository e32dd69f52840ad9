"""The comparison commands of stereo.evaluation: the ablation (--quick) end to end (real train() runs, real
evaluation, table files, resumption), the real-pair comparison of a checkpoint against StereoSGBM, the
SGBM tuning grid, and the thin scripts/ commands that call them."""

from __future__ import annotations

import json
import math
import runpy
import sys
from pathlib import Path

import pytest
from stereo.data.real_samples import default_real_data_dir
from stereo.evaluation import ablation, compare_real, tune_sgbm

VARIANTS = ["psmnet", "ea_psmnet_feature"]


def _real_args() -> list[str]:
    """Score one small real pair when ../shared/data/real is present, else skip the real pairs."""
    real = default_real_data_dir()
    return ["--real-root", str(real), "--real-names", "middlebury2001/tsukuba"] if real.is_dir() else ["--no-real"]


@pytest.mark.slow
def test_quick_ablation_tabulates_every_variant_and_resumes_instead_of_retraining(synthetic_root, tmp_path):
    out = tmp_path / "ablation"
    argv = ["--quick", "--variants", *VARIANTS, "--out", str(out), *_real_args(),
            "data.generate=null", f"data.train.root={synthetic_root}", f"data.val.root={synthetic_root}"]
    report = ablation.main(argv)

    splits = ["synthetic"] + (["real"] if "--no-real" not in argv else [])
    assert [(r["variant"], r["seed"], r["steps"]) for r in report["runs"]] == [(v, 1, 1) for v in VARIANTS]
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

    # Re-run (synthetic only, to stay cheap): the finished run is read back untouched, the one without
    # result.json resumes from its last checkpoint instead of training again.
    kept = out / "runs" / "ea_psmnet_feature" / "seed1" / "result.json"
    kept_mtime = kept.stat().st_mtime_ns
    (out / "runs" / "psmnet" / "seed1" / "result.json").unlink()
    again = ablation.main([a for a in argv if a not in _real_args()] + ["--no-real"])
    assert kept.stat().st_mtime_ns == kept_mtime
    assert again["runs"][0]["resumed"] is True and again["runs"][0]["steps"] == 1
    assert again["runs"][0]["synthetic"]["summary"]["epe"] == pytest.approx(report["runs"][0]["synthetic"]["summary"]["epe"])


def test_unknown_variant_is_refused_with_the_config_folder(tmp_path):
    with pytest.raises(SystemExit):
        ablation.parse_args(["--variants", "no_such_model", "--out", str(tmp_path)])


def test_compare_real_scores_a_checkpoint_and_sgbm_on_the_same_pairs(tiny_checkpoint, real_data_dir, tmp_path):
    report = compare_real.main(["--checkpoint", str(tiny_checkpoint), "--real-root", str(real_data_dir),
                          "--names", "middlebury2001/tsukuba", "--out", str(tmp_path)])
    methods = report["methods"]
    assert list(methods) == ["StereoSGBM", tiny_checkpoint.name]
    rows = [methods[name]["rows"][0] for name in methods]
    assert [r["name"] for r in rows] == ["middlebury2001/tsukuba"] * 2
    assert rows[0]["pixels"] == rows[1]["pixels"] > 0 and rows[0]["max_disp"] == rows[1]["max_disp"] == 16
    assert all(math.isfinite(r["epe"]) for r in rows)
    assert rows[1]["coverage"] == 100.0  # a network is dense by construction
    assert "middlebury2001/tsukuba" in (tmp_path / "compare_real.md").read_text()


@pytest.mark.slow
def test_tune_sgbm_ranks_every_grid_setting_on_the_synthetic_test_split(synthetic_root, tmp_path):
    out = tmp_path / "tuning.json"
    results = tune_sgbm.main(["--out", str(out), "data.generate=null", f"data.train.root={synthetic_root}",
                              f"data.val.root={synthetic_root}"])
    grid_size = math.prod(len(values) for values in tune_sgbm.GRID.values())
    assert len(results) == grid_size
    assert [r["epe"] for r in results] == sorted(r["epe"] for r in results)
    assert all(math.isfinite(r["epe"]) and 0 < r["coverage"] <= 100 for r in results)
    written = json.loads(out.read_text())
    assert written["results"] == results and written["dataset"] == "synthetic TEST (2 pairs)"


@pytest.mark.parametrize("name", ["ablation", "compare_real", "tune_sgbm"])
def test_scripts_are_thin_commands_for_the_package_modules(name, monkeypatch, capsys):
    script = Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py"
    monkeypatch.setattr(sys, "argv", [str(script), "--help"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(script), run_name="__main__")
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith("usage:")
