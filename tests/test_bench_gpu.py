"""scripts/bench_gpu.py runs end to end on the CPU at toy sizes, its checks (scripts/gpu_checks.py: host
syncs by phase, deterministic fits, torchrun evaluation counting each sample once) hold here, and
``--markdown`` renders the docs tables from its JSON. The kit's checks are tested here only."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_gpu.py"


@pytest.mark.slow
def test_gpu_kit_runs_on_cpu_and_its_checks_pass(tmp_path):
    output = tmp_path / "bench_gpu.json"
    done = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--tiny", "--models", "ea_psmnet",
                           "--budget", "1e9", "--json", str(output)], capture_output=True, text=True, timeout=3600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(output.read_text())
    checks = report["checks"]
    step = checks["training_step"]["ea_psmnet"]
    assert step == {"host_syncs": {"model forward": {}, "loss and logging": {}, "backward": {}},
                    "cuda_nondeterministic_ops": {}}
    assert checks["deterministic_fits"]["identical"] and checks["deterministic_fits"]["max_abs_diff"] == 0.0
    assert checks["two_gpu_evaluate"] == {"skipped": "needs 2 GPUs"}
    trained = [r for r in report["training"] if "samples_per_sec" in r]
    assert {(r["precision"], r["layout"]) for r in trained} == {
        (p, layout) for p in ("fp32", "bf16-mixed") for layout in ("contiguous", "channels_last")}
    assert all(r["samples_per_sec"] > 0 for r in trained)
    assert all(r.get("skipped") for r in report["training"] if r["compile"])  # torch.compile: CUDA only
    assert {(r["path"], r["precision"]) for r in report["inference"] if "ms" in r} == {
        (p, q) for p in ("plain", "optimized") for q in ("fp32", "bf16-mixed")}
    assert report["convergence"]["steps"] == 3 and len(report["convergence"]["losses"]) == 3
    assert [c["precision"] for c in report["largest_batch"]] == ["fp32", "bf16-mixed"]

    tables = subprocess.run([sys.executable, str(SCRIPT), "--markdown", str(output)],
                            capture_output=True, text=True, timeout=300)
    assert tables.returncode == 0, tables.stderr[-3000:]
    assert tables.stdout in done.stdout  # the run printed the same tables
    assert f"`{report['command']}`, {report['date']}" in tables.stdout
    assert "| ea_psmnet | 0 | 0 | 0 | none |" in tables.stdout
    assert "2-GPU evaluate (`torchrun --nproc_per_node 2 -m stereo.evaluate`): skipped: needs 2 GPUs" in tables.stdout


@pytest.mark.slow
def test_markdown_of_a_file_that_is_not_a_report_is_one_clear_error(tmp_path):
    bad = tmp_path / "bench_gpu.json"
    bad.write_text("not json")
    done = subprocess.run([sys.executable, str(SCRIPT), "--markdown", str(bad)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert f"--markdown {bad}: cannot read a bench_gpu.py JSON report" in done.stderr


@pytest.mark.slow
def test_two_process_evaluation_check_counts_each_sample_once_on_the_cpu(tmp_path):
    """The kit's 2-GPU evaluate check, run here over 2 CPU processes (gloo): the same command and checks."""
    from gpu_checks import distributed_evaluation

    result = distributed_evaluation(nproc=2, workdir=tmp_path)
    assert result["ran"], result
    assert result["each_sample_once"] and result["world_size"] == 2 and result["count"] == 3, result
