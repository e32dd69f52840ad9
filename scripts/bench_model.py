"""Model speed and memory, plain path ("before") against the optimised path ("after"), in one run.

    python scripts/bench_model.py --threads 2 --repeats 2 --json bench_model.json
    python scripts/bench_model.py --quick          # small sizes, to check the script (~2 min)

Measures, on this machine and in this run: a large fp32 matmul's throughput (the reference FLOP
rate); per model, inference at 544×960 (max_disp 192): seconds per pass, FLOPs (torch's
FlopCounterMode), achieved FLOP rate as % of the matmul rate, peak memory; a training step at
256×512, batch 1 (forward, PSMNet's weighted SmoothL1 loss, backward, Adam step): seconds and peak
memory. Every case runs in a fresh subprocess, so each peak resident set size (``ru_maxrss``) is
that case's own; the process baseline (peak before the first forward: interpreter, torch, weights,
inputs) is reported beside it. Times are medians of ``--repeats`` passes after one untimed warm-up pass
(which also counts FLOPs).

Paths: inference "before" = the model as built, under ``torch.no_grad()``; "after" =
``optimize_for_inference(model)`` (BatchNorm folded, channels-last, banded regression) under
``torch.inference_mode()``. Training "before" = plain; "after" = ``channels_last=True``;
"after+ckpt" also ``checkpoint_aggregation=True`` (the memory option).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

MATMUL_SIZE = 2048
INFER_PATHS = ("before", "after")
TRAIN_PATHS = ("before", "after", "after+ckpt")


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def matmul_gflops(repeats: int = 5, size: int = MATMUL_SIZE) -> float:
    """Median fp32 GFLOP/s of size×size matrix products: the machine's practical compute peak."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        rates.append(2 * size**3 / (time.perf_counter() - start) / 1e9)
    return statistics.median(rates)


def _build(model_name: str, max_disp: int, **options):
    import hydra
    from hydra.utils import instantiate

    from stereo.config import CONFIG_DIR

    overrides = [f"model={model_name}", f"model.max_disp={max_disp}"]
    overrides += [f"model.{k}={str(v).lower()}" for k, v in options.items()]
    with hydra.initialize_config_dir(version_base="1.3", config_dir=CONFIG_DIR):
        cfg = hydra.compose("train", overrides=overrides)
    torch.manual_seed(0)
    return instantiate(cfg.model)


def run_case(case: dict) -> dict:
    """One measurement in this (fresh) process; returns times, FLOPs and memory."""
    from torch.utils.flop_counter import FlopCounterMode

    from stereo.models import optimize_for_inference

    torch.set_num_threads(case["threads"])
    height, width, batch = case["height"], case["width"], case["batch"]
    gen = torch.Generator().manual_seed(1)
    left = torch.randn(batch, 3, height, width, generator=gen)
    right = torch.randn(batch, 3, height, width, generator=gen)
    result: dict = {}
    if case["kind"] == "infer":
        model = _build(case["model"], case["max_disp"]).eval()
        if case["path"] == "after":
            model = optimize_for_inference(model)
        context = torch.inference_mode if case["path"] == "after" else torch.no_grad

        def step() -> None:
            with context():
                model(left, right)
    else:
        options = {"channels_last": case["path"] != "before", "checkpoint_aggregation": case["path"] == "after+ckpt"}
        model = _build(case["model"], case["max_disp"], **options).train()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        target = torch.rand(batch, height, width, generator=gen) * case["max_disp"]
        weights = (0.5, 0.7, 1.0)

        def step() -> None:
            optimizer.zero_grad(set_to_none=True)
            outputs = model(left, right)
            loss = sum(w * torch.nn.functional.smooth_l1_loss(o, target) for w, o in zip(weights[-len(outputs):], outputs))
            loss.backward()
            optimizer.step()

    result["baseline_rss_mb"] = _peak_rss_mb()
    result["matmul_gflops_case"] = [matmul_gflops()]
    # Warm-up pass, untimed, which also counts FLOPs: oneDNN creates its kernels on the first call
    # (measured: the optimised path's first 544×960 pass took 21 s, the next 14 s).
    with FlopCounterMode(display=False) as counter:
        step()
    result["gflop"] = counter.get_total_flops() / 1e9
    times = []
    for _ in range(case["repeats"]):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    result["matmul_gflops_case"].append(matmul_gflops())
    result.update(seconds=statistics.median(times), all_seconds=times, peak_rss_mb=_peak_rss_mb(),
                  load_after=os.getloadavg()[0])
    return result


def _spawn(case: dict) -> dict:
    load = os.getloadavg()[0]
    proc = subprocess.run([sys.executable, __file__, "--case", json.dumps(case)], capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"case {case} failed:\n{proc.stderr[-3000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["load_before"] = load
    return {**case, **out}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--models", nargs="*", default=["ea_psmnet", "psmnet"], help="inference cases (none: skip)")
    parser.add_argument("--train-models", nargs="*", default=["ea_psmnet"], help="training cases (none: skip)")
    parser.add_argument("--quick", action="store_true", help="256x256 inference / 256x256 batch-2 training, max_disp 64")
    parser.add_argument("--json", type=Path, default=Path("bench_model.json"))
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(json.loads(args.case))))
        return

    from tqdm import tqdm

    torch.set_num_threads(args.threads)
    infer = dict(height=256, width=256, max_disp=64, batch=1) if args.quick else dict(height=544, width=960, max_disp=192, batch=1)
    train = dict(height=256, width=256, max_disp=64, batch=2) if args.quick else dict(height=256, width=512, max_disp=192, batch=1)
    machine = dict(processor=platform.processor() or platform.machine(), cpu_count=os.cpu_count(),
                   threads=args.threads, torch=torch.__version__, python=platform.python_version(),
                   load_at_start=os.getloadavg())
    print("machine:", machine)
    mm = matmul_gflops()
    print(f"fp32 matmul {MATMUL_SIZE}x{MATMUL_SIZE}: {mm:.1f} GFLOP/s")
    cases = [dict(kind="infer", model=m, path=p, **infer) for m in args.models for p in INFER_PATHS]
    cases += [dict(kind="train", model=m, path=p, **train) for m in args.train_models for p in TRAIN_PATHS]
    results = [_spawn(dict(c, threads=args.threads, repeats=args.repeats)) for c in tqdm(cases, desc="cases")]
    mm_end = matmul_gflops()
    print(f"fp32 matmul again at the end: {mm_end:.1f} GFLOP/s (each case's %matmul uses its own probes)")

    for r in results:  # the FLOP rate of both paths is the plain network's FLOPs over the time
        if r["kind"] == "infer":
            plain = next(b for b in results if b["kind"] == r["kind"] and b["model"] == r["model"] and b["path"] == "before")
            r["gflop_per_s"] = plain["gflop"] / r["seconds"]
            # against the matmul rate measured in the same subprocess just before and after its
            # passes: the load on a shared machine changes within minutes
            r["percent_of_matmul"] = 100 * r["gflop_per_s"] / statistics.mean(r["matmul_gflops_case"])
    header = f"{'case':34} {'s/pass':>7} {'GFLOP':>7} {'%matmul':>8} {'peak MB':>8} {'-base MB':>8} {'speed-up':>8} {'load':>5}"
    print(header)
    print("-" * len(header))
    for r in results:
        before = next(b for b in results if b["kind"] == r["kind"] and b["model"] == r["model"] and b["path"] == "before")
        r["speedup_vs_before"] = before["seconds"] / r["seconds"]
        r["peak_ratio_vs_before"] = r["peak_rss_mb"] / before["peak_rss_mb"]
        size = f"{r['height']}x{r['width']} b{r['batch']}"
        name = f"{r['kind']} {r['model']} {size} {r['path']}"
        pct = f"{r['percent_of_matmul']:.0f}%" if "percent_of_matmul" in r else "-"
        gflop = f"{r['gflop']:.0f}"
        print(f"{name:34} {r['seconds']:7.2f} {gflop:>7} {pct:>8} {r['peak_rss_mb']:8.0f} "
              f"{r['peak_rss_mb'] - r['baseline_rss_mb']:8.0f} {r['speedup_vs_before']:7.2f}x {r['load_before']:5.1f}")
    args.json.write_text(json.dumps(dict(machine=machine, matmul_gflops=[mm, mm_end], results=results), indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
