"""scripts/bench_gpu.py runs end to end on the CPU at toy sizes, and its model checks hold here:
no host read in the training forward (the same calls would synchronise a GPU), no op without a
deterministic CUDA kernel in a training step, and a deterministic step reproduces its gradients."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_gpu.py"


@pytest.mark.slow
def test_gpu_kit_runs_on_cpu_and_its_model_checks_pass(tmp_path):
    output = tmp_path / "bench_gpu.json"
    done = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--tiny", "--models", "ea_psmnet",
                           "--budget", "1e9", "--json", str(output)], capture_output=True, text=True, timeout=3600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(output.read_text())
    checks = report["checks"]
    assert checks["forward"]["syncs"] == 0, checks["forward"]
    assert checks["training_step_cuda_nondeterministic_ops"] == {}
    assert checks["deterministic_step"] == {"ran": True, "identical_gradients": True}
    trained = [r for r in report["training"] if "samples_per_sec" in r]
    assert {(r["precision"], r["layout"]) for r in trained} == {
        (p, layout) for p in ("fp32", "bf16-mixed") for layout in ("contiguous", "channels_last")}
    assert all(r["samples_per_sec"] > 0 for r in trained)
    assert all(r.get("skipped") for r in report["training"] if r["compile"])  # --tiny: no compile
    assert {(r["path"], r["precision"]) for r in report["inference"] if "ms" in r} == {
        (p, q) for p in ("plain", "optimized") for q in ("fp32", "bf16-mixed")}
    assert report["convergence"]["steps"] == 3 and len(report["convergence"]["losses"]) == 3
    assert [c["precision"] for c in report["largest_batch"]] == ["fp32", "bf16-mixed"]
    assert "host syncs, forward: 0" in done.stdout


def test_op_counter_sees_host_reads_copies_and_nondeterministic_ops():
    """The counter itself: each kind of event it exists to find is found (so a zero means none)."""
    sys.path.insert(0, str(SCRIPT.parent))
    import torch
    import torch.nn.functional as F
    from bench_gpu import DeviceOpCounter

    x = torch.randn(1, 2, 4, 4, requires_grad=True)
    with DeviceOpCounter() as counter:
        (x > 0).any().item()
        x[x > 0].sum()
        F.interpolate(x, scale_factor=2.0, mode="bilinear").sum().backward()
        torch.ones(3).to("meta")
    summary = counter.summary()
    assert summary["host_reads"]["_local_scalar_dense"] >= 1
    assert any(name.startswith("index ") for name in summary["host_reads"]), summary["host_reads"]
    assert summary["host_to_device"] == {"_to_copy": 1}
    assert summary["cuda_nondeterministic_ops"] == {"upsample_bilinear2d_backward": 1}
