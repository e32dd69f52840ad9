"""GPU kit: training and inference figures plus the model's GPU correctness checks, in one run.

    python scripts/bench_gpu.py                          # on a CUDA device, < 8 minutes
    python scripts/bench_gpu.py --device cpu --tiny      # the same code at toy sizes (the test suite)

Prints a table per section and writes everything to ``--json`` (default bench_gpu.json):

1. ``checks``: host synchronisations in one forward (and forward + PSMNet loss) of the training path,
   counted by a dispatch mode (host reads ``aten._local_scalar_dense`` / ``item`` / ``is_nonzero`` /
   ``nonzero``, and copies from CPU tensors to the device); the ops of a training step that have no
   deterministic CUDA implementation; and one training step under
   ``torch.use_deterministic_algorithms(True)`` run twice, which must give identical gradients.
2. ``training``: samples/s and peak device memory at 256×512, batch 12, for psmnet and ea_psmnet,
   fp32 vs bf16-mixed, contiguous vs channels-last, eager, and ``torch.compile`` (contiguous).
3. ``largest_batch``: the largest batch that fits (doubling from 12 until out of memory), per model
   and precision, with its samples/s.
4. ``inference``: latency at 544×960 and 1242×375 (padded to 1248×384), plain eval and
   ``optimize_for_inference``, fp32 and bf16.
5. ``convergence``: 200 training steps on synthetic pairs (``stereo.data.synthetic``): the loss falls.

Cases run in this process one after another (peak memory is reset per case); a time budget
(``--budget`` seconds) skips what would not fit and says so in the output. ``--tiny``: 256×256,
batch 2, max_disp 16, a few steps, no ``torch.compile`` (its CPU compile alone takes minutes).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

# cuBLAS needs this before CUDA starts for deterministic matrix products (this script's own process).
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

import torch  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

HOST_READS = {"_local_scalar_dense", "item", "is_nonzero", "nonzero"}
MASK_INDEXING = {"index", "index_put_", "_index_put_impl_"}  # with a boolean mask: an implicit nonzero
# Ops that raise under torch.use_deterministic_algorithms(True) on CUDA (its documented list).
CUDA_NONDETERMINISTIC = {
    "avg_pool3d_backward", "_adaptive_avg_pool2d_backward", "_adaptive_avg_pool3d_backward",
    "adaptive_max_pool2d_backward", "fractional_max_pool2d_backward", "fractional_max_pool3d_backward",
    "max_unpool2d", "max_unpool3d", "upsample_linear1d_backward", "upsample_bilinear2d_backward",
    "upsample_bicubic2d_backward", "upsample_trilinear3d_backward", "reflection_pad1d_backward",
    "reflection_pad2d_backward", "reflection_pad3d_backward", "nll_loss_forward", "nll_loss2d_forward",
    "_ctc_loss_backward", "_embedding_bag_backward", "put_", "histc", "bincount", "median",
    "grid_sampler_2d_backward", "grid_sampler_3d_backward", "cumsum", "scatter_reduce",
}


class DeviceOpCounter(TorchDispatchMode):
    """Counts, per op name, host reads and host-to-device copies (each one blocks or synchronises a
    GPU step), and ops that have no deterministic CUDA kernel. Works on any device: on CPU the host
    reads and the op names are the same calls that would synchronise or raise on a GPU."""

    def __init__(self) -> None:
        super().__init__()
        self.host_reads: Counter[str] = Counter()
        self.host_to_device: Counter[str] = Counter()
        self.nondeterministic: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func.overloadpacket.__name__
        out = func(*args, **kwargs)
        if name in HOST_READS:
            self.host_reads[name] += 1
        elif name in MASK_INDEXING and any(t is not None and t.dtype == torch.bool for t in args[1]):
            self.host_reads[f"{name} (boolean mask: result size read on the host)"] += 1
        if name in CUDA_NONDETERMINISTIC:
            self.nondeterministic[name] += 1
        if name in ("_to_copy", "copy_"):
            source = args[1] if name == "copy_" else args[0]
            target = args[0] if name == "copy_" else out
            if isinstance(source, torch.Tensor) and source.device.type == "cpu" and target.device.type != "cpu":
                self.host_to_device[name] += 1
        return out

    def summary(self) -> dict:
        return {"host_reads": dict(self.host_reads), "host_to_device": dict(self.host_to_device),
                "syncs": sum(self.host_reads.values()) + sum(self.host_to_device.values()),
                "cuda_nondeterministic_ops": dict(self.nondeterministic)}


class Budget:
    """Wall-clock budget: sections ask before each case and record what they skipped."""

    def __init__(self, seconds: float) -> None:
        self.deadline = time.perf_counter() + seconds

    def left(self) -> float:
        return self.deadline - time.perf_counter()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_mib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def build(model_name: str, max_disp: int):
    """The network exactly as ``python -m stereo.train model=<name>`` builds it (GPU recipes: plain)."""
    import hydra

    from stereo.config import CONFIG_DIR
    from stereo.train import build_training_network

    with hydra.initialize_config_dir(version_base="1.3", config_dir=CONFIG_DIR):
        cfg = hydra.compose("train", overrides=[f"model={model_name}", f"model.max_disp={max_disp}"])
    torch.manual_seed(0)
    return build_training_network(cfg)


def random_batch(batch: int, height: int, width: int, max_disp: int, device: torch.device, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    left, right = (torch.randn(batch, 3, height, width, generator=gen) for _ in range(2))
    target = torch.rand(batch, height, width, generator=gen) * (max_disp - 1)
    return left.to(device), right.to(device), target.to(device)


def loss_function(max_disp: int):
    from stereo.training.losses import PSMNetLoss

    return PSMNetLoss(max_disp)


def autocast(device: torch.device, precision: str):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16-mixed")


# ------------------------------------------------------------------------------------------ checks


def run_checks(args, device: torch.device) -> dict:
    model = build(args.models[0], args.max_disp).to(device).train()
    left, right, target = random_batch(args.batch, args.height, args.width, args.max_disp, device)
    loss_fn = loss_function(args.max_disp)
    with DeviceOpCounter() as forward:
        outputs = model(left, right)
    with DeviceOpCounter() as forward_loss:
        total, _ = loss_fn(model(left, right), target)
    with DeviceOpCounter() as step_ops:
        total, _ = loss_fn(model(left, right), target)
        total.backward()
    del outputs, total
    return {"model": args.models[0], "forward": forward.summary(), "forward_and_loss": forward_loss.summary(),
            "training_step_cuda_nondeterministic_ops": dict(step_ops.nondeterministic),
            "deterministic_step": deterministic_step(args, device)}


def deterministic_step(args, device: torch.device) -> dict:
    """One step under ``torch.use_deterministic_algorithms(True)``, twice from the same state: raises on
    an op without a deterministic kernel; otherwise the gradients must be identical bit for bit."""
    model = build(args.models[0], args.max_disp).to(device).train()
    state = copy.deepcopy(model.state_dict())
    left, right, target = random_batch(args.batch, args.height, args.width, args.max_disp, device)
    loss_fn = loss_function(args.max_disp)
    previous = torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    try:
        grads = []
        for _ in range(2):
            model.load_state_dict(state)
            model.zero_grad(set_to_none=True)
            total, _ = loss_fn(model(left, right), target)
            total.backward()
            grads.append([p.grad.clone() for p in model.parameters() if p.grad is not None])
        identical = all(torch.equal(a, b) for a, b in zip(*grads))
        return {"ran": True, "identical_gradients": identical}
    except RuntimeError as error:
        return {"ran": False, "error": str(error).splitlines()[0]}
    finally:
        torch.use_deterministic_algorithms(previous[0])
        torch.backends.cudnn.benchmark = previous[1]


# ---------------------------------------------------------------------------------------- training


def train_steps(model, optimizer, batch, precision: str, steps: int, warmup: int, device: torch.device, max_disp: int):
    """Seconds per step (mean of ``steps`` after ``warmup``) and the first step's seconds."""
    left, right, target = batch
    loss_fn = loss_function(max_disp)
    times = []
    for step in range(warmup + steps):
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, precision):
            total, _ = loss_fn(model(left, right), target)
        total.backward()
        optimizer.step()
        synchronize(device)
        times.append(time.perf_counter() - start)
    measured = times[warmup:] or times
    return sum(measured) / len(measured), times[0]


def training_case(args, device, model_name, batch, precision, layout, compiled) -> dict:
    case = {"model": model_name, "batch": batch, "precision": precision, "layout": layout, "compile": compiled}
    model = build(model_name, args.max_disp).to(device).train()
    if layout == "channels_last":
        model.channels_last = True
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    runner = torch.compile(model) if compiled else model
    reset_peak(device)
    try:
        seconds, first = train_steps(runner, optimizer, random_batch(batch, args.height, args.width, args.max_disp, device),
                                     precision, args.steps, args.warmup, device, args.max_disp)
    except torch.OutOfMemoryError:
        return {**case, "error": "out of memory"}
    finally:
        del model, optimizer, runner
    return {**case, "samples_per_sec": batch / seconds, "seconds_per_step": seconds, "first_step_seconds": first,
            "peak_memory_mib": peak_mib(device)}


def run_training(args, device, budget: Budget) -> list[dict]:
    results = []
    for model_name in args.models:
        for precision in ("fp32", "bf16-mixed"):
            for layout, compiled in (("contiguous", False), ("channels_last", False), ("contiguous", True)):
                case = dict(model=model_name, batch=args.batch, precision=precision, layout=layout, compile=compiled)
                if compiled and args.tiny:
                    results.append({**case, "skipped": "--tiny (compiling takes minutes on a CPU)"})
                elif budget.left() < (args.compile_reserve if compiled else 10):
                    results.append({**case, "skipped": "time budget"})
                else:
                    results.append(training_case(args, device, model_name, args.batch, precision, layout, compiled))
                print(json.dumps(results[-1]), flush=True)
    return results


def run_largest_batch(args, device, budget: Budget) -> list[dict]:
    """Doubling from the recipe batch until a step runs out of memory (or ``--max-batch``)."""
    results = []
    for model_name in args.models:
        for precision in ("fp32", "bf16-mixed"):
            fits, batch, reason = None, args.batch * 2, "reached --max-batch"
            while batch <= args.max_batch:
                if budget.left() < 20:
                    reason = "time budget"
                    break
                case = training_case(args, device, model_name, batch, precision, "contiguous", False)
                if "error" in case:
                    reason = f"batch {batch}: {case['error']}"
                    break
                fits, batch = case, batch * 2
            results.append({"model": model_name, "precision": precision, "largest_fitting": fits, "stopped": reason})
            print(json.dumps(results[-1]), flush=True)
    return results


# --------------------------------------------------------------------------------------- inference


def run_inference(args, device, budget: Budget) -> list[dict]:
    from stereo.models import optimize_for_inference

    results = []
    for model_name in args.models:
        for height, width in args.infer_sizes:
            for path in ("plain", "optimized"):
                for precision in ("fp32", "bf16-mixed"):
                    case = {"model": model_name, "size": f"{width}x{height}", "path": path, "precision": precision}
                    if budget.left() < 10:
                        results.append({**case, "skipped": "time budget"})
                        continue
                    model = build(model_name, args.max_disp).to(device).eval()
                    if path == "optimized":
                        model = optimize_for_inference(model)
                    padded = (-(-height // 16) * 16, -(-width // 16) * 16)
                    left, right, _ = random_batch(1, *padded, args.max_disp, device)
                    reset_peak(device)
                    times = []
                    with torch.inference_mode(), autocast(device, precision):
                        for _ in range(1 + args.infer_repeats):
                            start = time.perf_counter()
                            model(left, right)
                            synchronize(device)
                            times.append(time.perf_counter() - start)
                    results.append({**case, "padded": f"{padded[1]}x{padded[0]}", "ms": 1e3 * statistics.median(times[1:]),
                                    "peak_memory_mib": peak_mib(device)})
                    print(json.dumps(results[-1]), flush=True)
                    del model
    return results


# ------------------------------------------------------------------------------------- convergence


def run_convergence(args, device, budget: Budget) -> dict:
    """``--convergence-steps`` steps of PSMNet on synthetic pairs (random batches from a rendered pool)."""
    import numpy as np

    from stereo.data.normalize import normalize_image
    from stereo.data.synthetic import render_pair

    if budget.left() < 30:
        return {"skipped": "time budget"}
    pool = [render_pair(np.random.default_rng(seed), args.height, args.width, args.max_disp)
            for seed in range(args.convergence_pool)]
    lefts = torch.stack([normalize_image(p["left"]) for p in pool]).to(device)
    rights = torch.stack([normalize_image(p["right"]) for p in pool]).to(device)
    targets = torch.stack([torch.from_numpy(p["disparity_left"]) for p in pool]).to(device)
    model = build(args.models[0], args.max_disp).to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = loss_function(args.max_disp)
    gen = torch.Generator().manual_seed(0)
    losses, start = [], time.perf_counter()
    for step in range(args.convergence_steps):
        index = torch.randint(len(pool), (args.convergence_batch,), generator=gen).to(device)
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, args.convergence_precision):
            total, _ = loss_fn(model(lefts[index], rights[index]), targets[index])
        total.backward()
        optimizer.step()
        losses.append(total.detach())
        if budget.left() < 5:
            break
    losses = torch.stack(losses).float().cpu().tolist()  # one read at the end
    window = max(1, len(losses) // 10)
    first, last = statistics.mean(losses[:window]), statistics.mean(losses[-window:])
    return {"model": args.models[0], "steps": len(losses), "batch": args.convergence_batch,
            "precision": args.convergence_precision, "seconds": time.perf_counter() - start,
            "loss_first_tenth": first, "loss_last_tenth": last, "falls": last < first, "losses": losses}


# -------------------------------------------------------------------------------------------- main


def print_tables(report: dict) -> None:
    checks = report["checks"]
    print("\nchecks:")
    print(f"  host syncs, forward: {checks['forward']['syncs']} {checks['forward']['host_reads']} "
          f"{checks['forward']['host_to_device']}")
    print(f"  host syncs, forward + loss: {checks['forward_and_loss']['syncs']} "
          f"{checks['forward_and_loss']['host_reads']} {checks['forward_and_loss']['host_to_device']}")
    print(f"  ops without a deterministic CUDA kernel in a training step: "
          f"{checks['training_step_cuda_nondeterministic_ops'] or 'none'}")
    print(f"  deterministic step: {checks['deterministic_step']}")
    print(f"\ntraining at {report['size']}, max_disp {report['max_disp']}:")
    print(f"  {'model':<10} {'batch':>5} {'precision':<10} {'layout':<13} {'compile':<7} {'samples/s':>9} {'peak MiB':>9}")
    for r in report["training"] + [c["largest_fitting"] for c in report["largest_batch"] if c["largest_fitting"]]:
        figures = (f"{r['samples_per_sec']:>9.2f} {r['peak_memory_mib'] or float('nan'):>9.0f}" if "samples_per_sec" in r
                   else r.get("error") or r.get("skipped"))
        print(f"  {r['model']:<10} {r['batch']:>5} {r['precision']:<10} {r['layout']:<13} {str(r['compile']):<7} {figures}")
    for c in report["largest_batch"]:
        largest = c["largest_fitting"]["batch"] if c["largest_fitting"] else "none above the recipe batch"
        print(f"  largest batch {c['model']} {c['precision']}: {largest} (stopped: {c['stopped']})")
    print("\ninference (batch 1):")
    for r in report["inference"]:
        figures = f"{r['ms']:.1f} ms, peak {r['peak_memory_mib'] or float('nan'):.0f} MiB" if "ms" in r else r["skipped"]
        print(f"  {r['model']:<10} {r['size']:<9} {r['path']:<9} {r['precision']:<10} {figures}")
    conv = report["convergence"]
    if "skipped" in conv:
        print(f"\nconvergence: skipped ({conv['skipped']})")
    else:
        print(f"\nconvergence: {conv['steps']} steps, loss {conv['loss_first_tenth']:.3f} -> {conv['loss_last_tenth']:.3f} "
              f"({'falls' if conv['falls'] else 'does NOT fall'}), {conv['seconds']:.0f} s")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="toy sizes: checks the script, measures nothing useful")
    parser.add_argument("--models", nargs="+", default=["psmnet", "ea_psmnet"])
    parser.add_argument("--budget", type=float, default=450.0, help="seconds for all sections together")
    parser.add_argument("--json", default="bench_gpu.json")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device here (use --device cpu --tiny to check the script)")
    tiny = args.tiny
    args.height, args.width = (256, 256) if tiny else (256, 512)
    args.batch, args.max_disp = (2, 16) if tiny else (12, 192)
    args.max_batch = 4 if tiny else 384
    args.steps, args.warmup = (1, 0) if tiny else (5, 2)
    args.compile_reserve = 150.0
    args.infer_sizes = [(256, 256)] if tiny else [(544, 960), (375, 1242)]
    args.infer_repeats = 1 if tiny else 5
    args.convergence_steps, args.convergence_batch, args.convergence_pool = (3, 2, 2) if tiny else (200, 4, 48)
    args.convergence_precision = "fp32" if tiny else "bf16-mixed"
    budget = Budget(args.budget)
    started = time.perf_counter()

    from benchlib import machine_info

    report = {"machine": machine_info(device=str(device)), "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
              "tiny": tiny, "size": f"{args.width}x{args.height}", "max_disp": args.max_disp}
    report["checks"] = run_checks(args, device)
    print(json.dumps(report["checks"]), flush=True)
    report["training"] = run_training(args, device, budget)
    report["inference"] = run_inference(args, device, budget)
    report["convergence"] = run_convergence(args, device, budget)
    report["largest_batch"] = run_largest_batch(args, device, budget)
    report["seconds"] = time.perf_counter() - started
    print_tables(report)
    Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {args.json} ({report['seconds']:.0f} s)")
    return report


if __name__ == "__main__":
    main()
