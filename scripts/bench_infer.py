"""Inference latency and peak memory per model and image size, each case in a fresh process.

    python scripts/bench_infer.py [--quick] [--models psmnet ea_psmnet] [--json bench_infer.json]

Cases: 256×512 and 544×960 run the whole image (mode=full); the high-resolution case (2880×1988,
Middlebury 2014 full size) runs the memory-bounded tiled mode planned for ``--budget-gb``. Peak memory
is the worker process's ru_maxrss (everything: weights, images, activations, allocator slack). A
matmul probe in the same run shows how much of the CPU this run actually got (the machine may be
shared): compare cases by their ratios, not across runs. ``--quick`` uses a 1,024×1,536 high-res case.
``--accuracy CKPT`` additionally compares tiled/downscaled against full-image inference on a real
pair with ground truth (EPE, bad-1), which needs a trained checkpoint to mean anything.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from benchlib import machine_info, matmul_gflops, peak_rss_mb, run_json

CASES = [("256x512", 256, 512, "full"), ("544x960", 544, 960, "full"), ("2880x1988", 1988, 2880, "tiled")]
QUICK_HIGHRES = ("1536x1024", 1024, 1536, "tiled")
MATMUL_SIZE, MATMUL_REPEATS = 1024, 10


def build_model(name: str) -> torch.nn.Module:
    from stereo.models.build import build_network, model_config

    return build_network(model_config(name)).eval()


def worker(model_name: str, height: int, width: int, mode: str, budget_gb: float, repeats: int) -> dict:
    """Runs in its own process so ru_maxrss is this case's peak only."""
    from stereo.inference.predictor import Predictor

    torch.manual_seed(0)
    predictor = Predictor(build_model(model_name), device="cpu", mode=mode, max_memory_gb=budget_gb, swap_check=False)
    rng = np.random.default_rng(0)
    left = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    right = np.roll(left, -8, axis=1)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        predictor.predict(left, right)
        times.append(time.perf_counter() - start)
    strips = None
    if mode == "tiled":
        from stereo.inference.strips import strip_starts

        strip = predictor._strip_height(predictor.network(), width, 1)
        strips = {"strip_rows": strip, "strips": len(strip_starts(height, strip, predictor.tile_overlap))}
    return {
        "model": model_name, "size": f"{height}x{width}", "mode": mode, "budget_gb": budget_gb,
        "seconds": min(times), "repeats": repeats,
        "peak_rss_gb": peak_rss_mb() * 2**20 / 1e9, **(strips or {}),
    }


def run_case(model: str, height: int, width: int, mode: str, budget: float, repeats: int, timeout: int) -> dict:
    command = [sys.executable, __file__, "--worker", model, str(height), str(width), mode, str(budget), str(repeats)]
    return {"model": model, "size": f"{height}x{width}", "mode": mode, **run_json(command, timeout=timeout)}


def accuracy_check(checkpoint: str, budget_gb: float) -> list[dict]:
    """EPE / bad-1 of full vs tiled vs downscaled inference on real pairs with ground truth."""
    from stereo.data.io import read_disparity, read_image
    from stereo.inference.predictor import Predictor

    from stereo.data.real_samples import default_real_data_dir

    real = default_real_data_dir()
    pairs = {
        "middlebury2005/Reindeer (671x555)": ("middlebury2005/Reindeer/view1.png", "middlebury2005/Reindeer/view5.png",
                                              "middlebury2005/Reindeer/disp1.png", 2.0),
        "kitti2015/000046_10 (1242x375)": ("kitti2015/000046_10/training/image_2/000046_10.png",
                                           "kitti2015/000046_10/training/image_3/000046_10.png",
                                           "kitti2015/000046_10/training/disp_occ_0/000046_10.png", None),
    }
    rows = []
    for name, (left, right, gt, scale) in pairs.items():
        if not (real / left).is_file():
            continue
        l, r = read_image(real / left), read_image(real / right)
        disparity, valid = read_disparity(real / gt, scale)
        full = None
        for mode, options in [("full", {}), ("tiled", {"max_memory_gb": 0.5}), ("downscale", {"downscale": 2.0})]:
            predictor = Predictor.from_checkpoint(checkpoint, device="cpu", mode=mode, swap_check=False, **options)
            prediction = predictor.predict(l, r).disparity
            full = prediction if mode == "full" else full
            error = np.abs(prediction - disparity)[valid]
            rows.append({"pair": name, "mode": mode, "epe": float(error.mean()), "bad1": float((error > 1).mean() * 100),
                         "vs_full_mean_abs": float(np.abs(prediction - full).mean())})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", nargs=6, help=argparse.SUPPRESS)
    parser.add_argument("--models", nargs="+", default=["psmnet", "ea_psmnet"])
    parser.add_argument("--budget-gb", type=float, default=8.0, help="max_memory_gb for the high-resolution case")
    parser.add_argument("--quick", action="store_true", help="1536x1024 instead of 2880x1988, one repeat")
    parser.add_argument("--repeats", type=int, default=2, help="passes for the two small sizes (fastest is kept)")
    parser.add_argument("--timeout", type=int, default=3600, help="seconds per case")
    parser.add_argument("--accuracy", metavar="CKPT", help="also compare full / tiled / downscale on real pairs")
    parser.add_argument("--json", default="bench_infer.json")
    args = parser.parse_args()
    if args.worker:
        model, height, width, mode, budget, repeats = args.worker
        print(json.dumps(worker(model, int(height), int(width), mode, float(budget), int(repeats))))
        return

    machine = machine_info()
    print(f"machine: {machine}")
    small, highres = CASES[:2], QUICK_HIGHRES if args.quick else CASES[2]
    plan = [(m, c) for m in args.models for c in small] + [(m, highres) for m in args.models]
    results, gflops = [], [matmul_gflops(size=MATMUL_SIZE, repeats=MATMUL_REPEATS)]
    for model, (label, height, width, mode) in plan:
        repeats = 1 if mode == "tiled" or height > 256 else args.repeats
        result = run_case(model, height, width, mode, args.budget_gb, repeats, args.timeout)
        print(json.dumps(result), flush=True)
        results.append(result)
        Path(args.json).write_text(json.dumps({"machine": machine, "matmul_gflops": gflops, "results": results,
                                               "complete": False}, indent=2))
    gflops.append(matmul_gflops(size=MATMUL_SIZE, repeats=MATMUL_REPEATS))
    accuracy = accuracy_check(args.accuracy, args.budget_gb) if args.accuracy else []

    print(f"\nmatmul probe (1024² fp32): {gflops[0]:.1f} GFLOP/s before, {gflops[1]:.1f} after")
    print(f"{'model':<10} {'size':<10} {'mode':<6} {'seconds':>8} {'peak GB':>8}  notes")
    for r in results:
        notes = r["error"].splitlines()[-1] if "error" in r else (f"{r['strips']} strips of {r['strip_rows']} rows, budget {r['budget_gb']} GB" if r.get("strips") else "")
        seconds = f"{r['seconds']:.1f}" if "seconds" in r else "-"
        peak = f"{r['peak_rss_gb']:.2f}" if "peak_rss_gb" in r else "-"
        print(f"{r['model']:<10} {r['size']:<10} {r['mode']:<6} {seconds:>8} {peak:>8}  {notes}")
    for row in accuracy:
        print(f"accuracy {row['pair']:<36} {row['mode']:<9} EPE {row['epe']:.3f}  bad-1 {row['bad1']:.2f} %  "
              f"|vs full| {row['vs_full_mean_abs']:.3f} px")
    Path(args.json).write_text(json.dumps({"machine": machine, "matmul_gflops": gflops, "results": results,
                                           "accuracy": accuracy, "complete": True}, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
