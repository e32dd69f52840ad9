"""Training throughput and peak memory of the networks at a crop (default 256×512, PSMNet's).

    python scripts/bench_train.py [--models psmnet ea_psmnet] [--batches 1 2] [--steps 2] [--warmup 1]
                                  [--device cpu|cuda] [--max-disp 192] [--backend plain [cpu]]
                                  [--crop 256 512] [--precision 32-true bf16-mixed] [--compile]
                                  [--json bench_train.json]
    # the demo's training step (experiment=demo_cpu: 256×256 crops, batch 2, max_disp 48, CPU backend):
    python scripts/bench_train.py --models psmnet_basic ea_light --batches 2 --crop 256 256 --max-disp 48 --backend cpu

"x ref" is each case's speed-up over the first model's case of the same batch (first precision, first
backend), measured in this run.
``--precision`` runs each case at each listed Lightning precision: ``bf16-mixed`` is the forward and the
loss under ``torch.autocast(dtype=torch.bfloat16)``, as ``trainer.precision=bf16-mixed`` runs a training
step (fast on CPUs with native bf16 units, AVX512-BF16 or AMX; emulated, and far slower, elsewhere:
``bf16_native`` in the JSON says which). ``--compile`` adds, after each plain case, the same case with the network's call through
``torch.compile`` (measured, not offered as a training option: docs/performance.md); its warm-up step
compiles (reported as ``first_step_seconds``) and is not timed.

The network is built from conf/train.yaml as ``python -m stereo.train`` builds it (the model config,
then ``model_backend``: ``--backend cpu`` measures stereo/accel/cpu.py's routes, ``--backend plain cpu`` both
side by side). Each (model, batch, precision, backend) case runs in a fresh
subprocess so that peak memory (ru_maxrss on CPU, torch.cuda.max_memory_allocated on GPU) belongs to
that case alone. A 1024² matmul probe (median of 10 products) runs before and after the cases and
its GFLOP/s is printed with them, so figures from different (noisy, shared) machines can be compared
as ratios.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

from benchlib import machine_info, matmul_gflops, peak_rss_mb, run_json

MATMUL_SIZE, MATMUL_REPEATS = 1024, 10
PRECISIONS = ("32-true", "bf16-mixed")


def run_case(model_name: str, batch: int, steps: int, warmup: int, device: str, max_disp: int, backend: str,
             crop: tuple[int, int] = (256, 512), torch_compile: bool = False, precision: str = "32-true") -> dict:
    """One case, in this process: build the network from its Hydra config and time full training steps."""
    import hydra
    import torch

    from stereo.config import CONFIG_DIR
    from stereo.models.build import build_training_network
    from stereo.training.losses import PSMNetLoss

    with hydra.initialize_config_dir(version_base="1.3", config_dir=CONFIG_DIR):
        cfg = hydra.compose("train", overrides=[f"model={model_name}", f"model.max_disp={max_disp}",
                                                f"model_backend={backend}", "paths.output_dir=."])
    torch.manual_seed(0)
    model = build_training_network(cfg).to(device).train()
    forward = torch.compile(model.__call__) if torch_compile else model
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.999))
    loss_fn = PSMNetLoss(max_disp)
    height, width = crop
    left = torch.randn(batch, 3, height, width, device=device)
    right = torch.randn(batch, 3, height, width, device=device)
    gt = torch.rand(batch, height, width, device=device) * (max_disp - 1)
    times = []
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for step in range(warmup + steps):
        start = time.perf_counter()
        with torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bf16-mixed"):
            total, _ = loss_fn(forward(left, right), gt)
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        if device == "cuda":
            torch.cuda.synchronize()
        if step == 0:
            first_step = time.perf_counter() - start
        if step >= warmup:
            times.append(time.perf_counter() - start)
    seconds = sum(times) / len(times)
    peak_mib = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else peak_rss_mb()
    return {"model": model_name, "batch": batch, "device": device, "max_disp": max_disp, "steps": steps,
            "warmup": warmup, "crop": list(crop), "seconds_per_step": seconds, "samples_per_sec": batch / seconds,
            "peak_memory_mib": peak_mib, "model_backend": backend, "torch_compile": torch_compile, "precision": precision,
            "first_step_seconds": first_step, "peak_memory_kind": "cuda max_memory_allocated" if device == "cuda" else "ru_maxrss (process)"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["psmnet", "ea_psmnet"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--max-disp", type=int, default=192)
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--backend", nargs="+", default=["plain"], choices=["plain", "cpu"],
                        help="model_backend of each case (stereo/accel)")
    parser.add_argument("--crop", nargs=2, type=int, default=[256, 512], metavar=("H", "W"))
    parser.add_argument("--precision", nargs="+", default=["32-true"], choices=PRECISIONS,
                        help="Lightning precision of each case (bf16-mixed: autocast to bfloat16)")
    parser.add_argument("--compile", action="store_true", help="also each case through torch.compile")
    parser.add_argument("--json", default="bench_train.json")
    parser.add_argument("--case", default=None, help=argparse.SUPPRESS)  # internal: run one case, print JSON
    args = parser.parse_args()

    if args.compile and args.warmup < 1:
        parser.error("--compile needs --warmup 1 or more: the first step compiles and must not be timed")
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.case:
        model_name, batch, precision, compiled = args.case.split(":")
        print(json.dumps(run_case(model_name, int(batch), args.steps, args.warmup, device, args.max_disp, args.backend[0],
                                  tuple(args.crop), compiled == "compiled", precision)))
        return

    machine = machine_info(device=device)
    if device == "cpu":
        from stereo.inference.checks import cpu_has_native

        machine["bf16_native"] = cpu_has_native("bf16")
    probe_before = matmul_gflops(device, MATMUL_SIZE, MATMUL_REPEATS)
    print(f"machine: {machine}\nmatmul probe: {probe_before:.1f} GFLOP/s", flush=True)
    results = []
    for model_name in args.models:
        for batch in args.batches:
            for precision, backend, compiled in itertools.product(
                    args.precision, args.backend, ("plain", "compiled") if args.compile else ("plain",)):
                command = [sys.executable, __file__, "--case", f"{model_name}:{batch}:{precision}:{compiled}", "--steps",
                           str(args.steps), "--warmup", str(args.warmup), "--max-disp", str(args.max_disp),
                           "--device", device, "--backend", backend, "--crop", *map(str, args.crop)]
                results.append({"model": model_name, "batch": batch, "precision": precision, "model_backend": backend,
                                "torch_compile": compiled == "compiled", **run_json(command)})
                print(json.dumps(results[-1]), flush=True)
    probe_after = matmul_gflops(device, MATMUL_SIZE, MATMUL_REPEATS)
    for r in results:
        reference = next((q for q in results if q["model"] == args.models[0] and q["batch"] == r["batch"]
                          and q["precision"] == args.precision[0] and q["model_backend"] == args.backend[0]
                          and not q["torch_compile"] and "error" not in q), None)
        if reference and "error" not in r:
            r["speedup_vs_" + args.models[0]] = reference["seconds_per_step"] / r["seconds_per_step"]
    header = (f"{'model':<17} {'precision':>10} {'backend':>7} {'compiled':>8} {'batch':>5} {'s/step':>8} {'samples/s':>10} "
              f"{'peak MiB':>10} {'x ref':>7}")
    print(f"\nTraining at {args.crop[0]}x{args.crop[1]}, max_disp {args.max_disp}, {args.steps} measured steps after {args.warmup} warm-up, "
          f"{device}")
    print(header)
    for r in results:
        if "error" in r:
            print(f"{r['model']:<17} {r['precision']:>10} {r['model_backend']:>7} {'yes' if r['torch_compile'] else 'no':>8} {r['batch']:>5}  failed: "
                  f"{r['error'].splitlines()[-1]}")
        else:
            ratio = r.get("speedup_vs_" + args.models[0])
            print(f"{r['model']:<17} {r['precision']:>10} {r['model_backend']:>7} {'yes' if r['torch_compile'] else 'no':>8} {r['batch']:>5} {r['seconds_per_step']:>8.2f} {r['samples_per_sec']:>10.3f} "
                  f"{r['peak_memory_mib']:>10.0f} {f'{ratio:.2f}x' if ratio else '-':>7}")
    print(f"x ref: speed-up over {args.models[0]} ({args.precision[0]}, {args.backend[0]} backend, not compiled, same batch, this run)")
    print(f"matmul probe: {probe_before:.1f} GFLOP/s before, {probe_after:.1f} GFLOP/s after")
    Path(args.json).write_text(json.dumps({"machine": machine, "matmul_gflops_before": probe_before,
                                           "matmul_gflops_after": probe_after, "results": results}, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
