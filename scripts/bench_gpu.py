"""GPU kit: training and inference figures plus the model's GPU correctness checks, in one run.

    python scripts/bench_gpu.py                          # on a CUDA device, < 8 minutes
    python scripts/bench_gpu.py --device cpu --tiny      # the same code at toy sizes (the test suite)

Writes everything to ``--json`` (default bench_gpu.json) and prints it as the docs tables;
``--markdown bench_gpu.json`` prints those tables again from the JSON (docs/performance.md).

1. ``checks`` (gpu_checks.py beside this script): per model, one training step through
   ``StereoModule.training_step`` (bf16 autocast on CUDA, as the GPU recipe) counted by
   sync_counter.py — host reads and host-to-device copies by phase (model forward, loss
   and logging, backward) and ops without a deterministic CUDA kernel; two short fits through the
   Lightning Trainer with ``trainer.deterministic=true``, which must end with identical weights; with
   two or more GPUs, ``torchrun --nproc_per_node 2 -m stereo.evaluate`` on generated pairs, which must
   score each sample once (fewer GPUs: recorded as skipped).
2. ``training``: samples/s and peak device memory at 256×512, batch 12, for psmnet and ea_psmnet,
   fp32 vs bf16-mixed, contiguous vs channels-last, eager, and ``torch.compile`` (contiguous, CUDA only).
3. ``largest_batch``: the largest batch that fits (doubling from 12 until out of memory), per model
   and precision, with its samples/s.
4. ``inference``: latency at 544×960 and 1242×375 (padded to 1248×384), plain eval and
   ``optimize_for_inference``, fp32 and bf16.
5. ``convergence``: 200 training steps on synthetic pairs (``stereo.data.synthetic``): the loss falls.

Cases run in this process one after another (peak memory is reset per case); a time budget
(``--budget`` seconds, checks included) skips what would not fit and says so in the output.
``--tiny``: 256×256, batch 2, max_disp 16, a few steps.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

# cuBLAS reads this when CUDA starts: the deterministic check's matrix products need it (this process only).
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import gpu_checks  # noqa: E402  (beside this script)
from stereo.evaluation.reports import machine_info, markdown_table  # noqa: E402

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


def run_checks(args, device: torch.device, budget: Budget) -> dict:
    """gpu_checks.py on this device: a training step's host syncs (by phase) and ops without a
    deterministic CUDA kernel, per model; two deterministic fits; a 2-process ``torchrun`` evaluation."""
    autocast_dtype = torch.bfloat16 if device.type == "cuda" else None  # the GPU recipe's bf16-mixed
    steps = {}
    for model_name in args.models:
        steps[model_name] = gpu_checks.training_step_ops(
            device, model_name, args.max_disp, batch_size=2, size=(args.height, args.width),
            autocast_dtype=autocast_dtype)
        print(json.dumps({"training_step": model_name, **steps[model_name]}), flush=True)
    accelerator = "gpu" if device.type == "cuda" else "cpu"
    try:
        deterministic = gpu_checks.deterministic_fits_match(
            accelerator, model=args.models[0], steps=2, max_disp=args.max_disp, size=(args.height, args.width))
    except RuntimeError as error:  # an op without a deterministic kernel on this device
        deterministic = {"identical": False, "error": str(error).splitlines()[0]}
    print(json.dumps({"deterministic_fits": deterministic}), flush=True)
    if device.type != "cuda" or torch.cuda.device_count() < 2:
        evaluation = {"skipped": "needs 2 GPUs"}
    elif budget.left() < 120:
        evaluation = {"skipped": "time budget"}
    else:
        evaluation = gpu_checks.distributed_evaluation(nproc=2, timeout=min(300.0, budget.left() - 60))
    print(json.dumps({"two_gpu_evaluate": evaluation}), flush=True)
    return {"training_step": {"precision": "bf16-mixed" if autocast_dtype else "fp32", "batch": 2, **steps},
            "deterministic_fits": {"model": args.models[0], "steps": 2, **deterministic},
            "two_gpu_evaluate": evaluation}


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
    model = gpu_checks.build_network(model_name, args.max_disp).to(device).train()
    if layout == "channels_last":
        model.channels_last = True
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    runner = torch.compile(model) if compiled else model
    reset_peak(device)
    try:
        seconds, first = train_steps(runner, optimizer, random_batch(batch, args.height, args.width, args.max_disp, device),
                                     precision, args.steps, args.warmup, device, args.max_disp)
    except torch.cuda.OutOfMemoryError:
        seconds = None  # the handler's traceback still holds the step's tensors: free them after it
    finally:
        del model, optimizer, runner
    if seconds is None:
        torch.cuda.empty_cache()
        return {**case, "error": "out of memory"}
    return {**case, "samples_per_sec": batch / seconds, "seconds_per_step": seconds, "first_step_seconds": first,
            "peak_memory_mib": peak_mib(device)}


def run_training(args, device, budget: Budget) -> list[dict]:
    results = []
    for model_name in args.models:
        for precision in ("fp32", "bf16-mixed"):
            for layout, compiled in (("contiguous", False), ("channels_last", False), ("contiguous", True)):
                case = dict(model=model_name, batch=args.batch, precision=precision, layout=layout, compile=compiled)
                if compiled and device.type != "cuda":
                    results.append({**case, "skipped": "torch.compile runs on CUDA only here (a CPU compile takes minutes)"})
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
                    model = gpu_checks.build_network(model_name, args.max_disp).to(device).eval()
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
    model = gpu_checks.build_network(args.models[0], args.max_disp).to(device).train()
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


def _table(header: list[str], rows: list[list]) -> list[str]:
    return markdown_table(header, rows).splitlines()


def _mib(value: float | None) -> str:
    return "–" if value is None else f"{value:.0f}"


def _measured(case: dict, figures: list[str]) -> list[str]:
    """The figures of a case, or why it has none (one cell each)."""
    if "skipped" in case or "error" in case:
        return [f"{case.get('skipped') or case['error']}"] + [""] * (len(figures) - 1)
    return figures


def markdown(report: dict) -> str:
    """The docs tables (docs/performance.md) of one run's JSON, with its command, date and machine."""
    machine = report["machine"]
    lines = [f"`{report['command']}`, {report['date']}, {machine.get('cuda') or machine['processor']} "
             f"(torch {machine['torch']}, {machine['cpu_count']} CPUs), {report['seconds']:.0f} s in all"
             + (" — **--tiny: toy sizes, checks the script only**" if report["tiny"] else "") + ".", ""]
    checks = report["checks"]
    step = checks["training_step"]
    lines += [f"Checks: one training step (batch {step['batch']}, {step['precision']}, {report['size']}) counted "
              "by `scripts/sync_counter.py`; expected 0 everywhere.", ""]
    rows = []
    for model in report["models"]:
        counted = step[model]
        rows.append([model, *(sum(counted["host_syncs"][phase].values()) for phase in gpu_checks.PHASES),
                     ", ".join(f"{op} ×{n}" for op, n in counted["cuda_nondeterministic_ops"].items()) or "none"])
    lines += _table(["model", *(f"host syncs: {phase}" for phase in gpu_checks.PHASES),
                     "ops without a deterministic CUDA kernel"], rows) + [""]
    det, evaluation = checks["deterministic_fits"], checks["two_gpu_evaluate"]
    det_text = (f"error: {det['error']}" if "error" in det else
                f"{'identical' if det['identical'] else 'NOT identical'} weights (max |Δ| {det['max_abs_diff']:.3g})")
    if "skipped" in evaluation:
        eval_text = f"skipped: {evaluation['skipped']}"
    elif not evaluation["ran"]:
        eval_text = f"failed: {evaluation['error']}"
    else:
        eval_text = (f"world size {evaluation['world_size']}, {evaluation['count']} of {evaluation['samples']} samples "
                     f"scored, {'each once' if evaluation['each_sample_once'] else 'NOT each once'}")
    lines += [f"- deterministic fits ({det['model']}, {det['steps']} steps, `trainer.deterministic=true`, twice): "
              f"{det_text}", f"- 2-GPU evaluate (`torchrun --nproc_per_node 2 -m stereo.evaluate`): {eval_text}", ""]
    lines += [f"Training at {report['size']}, max_disp {report['max_disp']} (forward, PSMNet loss, backward, Adam):", ""]
    largest = [c["largest_fitting"] for c in report["largest_batch"] if c["largest_fitting"]]
    lines += _table(["model", "batch", "precision", "layout", "compile", "samples/s", "peak MiB"], [
        [r["model"], r["batch"], r["precision"], r["layout"], "yes" if r["compile"] else "no",
         *_measured(r, [f"{r.get('samples_per_sec', 0):.2f}", _mib(r.get("peak_memory_mib"))])]
        for r in report["training"] + largest]) + [""]
    lines += _table(["model", "precision", "largest batch that fits", "stopped"], [
        [c["model"], c["precision"], c["largest_fitting"]["batch"] if c["largest_fitting"] else "none above the recipe's",
         c["stopped"]] for c in report["largest_batch"]]) + [""]
    lines += ["Inference (batch 1, median):", ""]
    lines += _table(["model", "size", "padded", "path", "precision", "ms", "peak MiB"], [
        [r["model"], r["size"], r.get("padded", ""), r["path"], r["precision"],
         *_measured(r, [f"{r.get('ms', 0):.1f}", _mib(r.get("peak_memory_mib"))])] for r in report["inference"]]) + [""]
    conv = report["convergence"]
    if "skipped" in conv:
        lines.append(f"Convergence: skipped ({conv['skipped']}).")
    else:
        lines.append(f"Convergence ({conv['model']}, {conv['precision']}, batch {conv['batch']}, synthetic pairs): "
                     f"{conv['steps']} steps in {conv['seconds']:.0f} s, mean loss of the first tenth "
                     f"{conv['loss_first_tenth']:.3f}, of the last tenth {conv['loss_last_tenth']:.3f} "
                     f"({'falls' if conv['falls'] else 'does NOT fall'}).")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="toy sizes: checks the script, measures nothing useful")
    parser.add_argument("--models", nargs="+", default=["psmnet", "ea_psmnet"])
    parser.add_argument("--budget", type=float, default=420.0, help="seconds for all sections together")
    parser.add_argument("--json", default="bench_gpu.json")
    parser.add_argument("--markdown", metavar="JSON", help="print the docs tables of an earlier run's JSON and exit")
    args = parser.parse_args(argv)
    if args.markdown:
        try:
            report = json.loads(Path(args.markdown).read_text())
        except (OSError, json.JSONDecodeError) as error:
            parser.error(f"--markdown {args.markdown}: cannot read a bench_gpu.py JSON report ({error})")
        print(markdown(report), end="")
        return report
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


    report = {"command": " ".join(["python scripts/bench_gpu.py", *(argv if argv is not None else sys.argv[1:])]),
              "machine": machine_info(device=str(device)), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "tiny": tiny, "models": args.models, "size": f"{args.width}x{args.height}", "max_disp": args.max_disp}
    report["checks"] = run_checks(args, device, budget)
    report["training"] = run_training(args, device, budget)
    report["inference"] = run_inference(args, device, budget)
    report["convergence"] = run_convergence(args, device, budget)
    report["largest_batch"] = run_largest_batch(args, device, budget)
    report["seconds"] = time.perf_counter() - started
    temporary = Path(f"{args.json}.partial")
    temporary.write_text(json.dumps(report, indent=2) + "\n")
    temporary.replace(args.json)
    print("\n" + markdown(report))
    print(f"wrote {args.json} ({report['seconds']:.0f} s); docs tables: python scripts/bench_gpu.py --markdown {args.json}")
    return report


if __name__ == "__main__":
    main()
