"""Model speed and memory in one run: the code before issue 6 ("baseline@REV"), the plain model, its optimised paths.

    python scripts/bench_model.py --threads 2 --repeats 2 --json bench_model.json
    python scripts/bench_model.py --quick            # small sizes, to check the script (~4 min)
    python scripts/bench_model.py --baseline none    # without the old-code path
    # the light network beside EA-PSMNet and PSMNet, optimised inference at 544×960 only:
    python scripts/bench_model.py --models ea_light ea_psmnet psmnet --train-models none --baseline none \
        --paths after --reference ea_psmnet --json bench_model_light.json

Measures, on this machine and in this run: a large fp32 matmul's throughput (the reference FLOP
rate); per model, inference at 544×960 (max_disp 192): seconds per pass, FLOPs (torch's
FlopCounterMode), achieved FLOP rate as % of the matmul rate, peak memory; a training step at
256×512, batch 1 (forward, PSMNet's weighted SmoothL1 loss, backward, Adam step): seconds and peak
memory. Every case runs in a fresh subprocess, so each peak resident set size (``ru_maxrss``) is
that case's own; the process baseline (peak before the first forward: interpreter, torch, weights,
inputs) is reported beside it. Times are medians of ``--repeats`` passes after one untimed warm-up pass;
the peak is read after them, and only then does the plain path run one more pass to count FLOPs.

Paths, for every inference and training case:
- "plain": the network as built from its model config (``stereo.train``'s default training path);
  inference under ``torch.no_grad()``.
- "after" (inference only): ``optimize_for_inference(model)`` (BatchNorm folded, channels-last,
  banded regression, the 3-D convolutions' CPU small-volume route) under ``torch.inference_mode()``, as
  ``stereo.infer`` runs it.
- "after-noroute" (inference only, on request): "after" with that route switched off (the plain
  ``torch.nn`` 3-D layers), to measure what the route gives in the same run.
- "cpu" (training only): ``model_backend=cpu``, the CPU convolution routes of stereo/accel/cpu.py
  (the demo_cpu recipe's training path).
- "plain+ckpt" (training only): the memory-lean option, ``activation_checkpointing.aggregation`` and
  ``.features`` on.
- "baseline@REV": the plain model of git revision REV (``--baseline``, default f5d6fa1, the last commit
  before the performance work), exported with ``git archive`` and imported from there by its
  subprocess; run like "plain". Issue 6's "faster than before this issue" targets are the speed-ups
  against this path, measured in the same run because timings on the shared machine drift.
Speed-ups are given against "plain" (what the options buy) and against the baseline (what all the
work bought, always-on changes included). %matmul divides the current plain model's FLOP count by
each path's time, so all paths of one model are rated on the same work.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from benchlib import baseline_tree, machine_info, matmul_gflops, peak_rss_mb, run_json, tree_env

MATMUL_SIZE = 2048
# Run-time settings per path (applied to the built network, as stereo.train applies them). The
# baseline path gets none: the old code does not have them. "after" inference runs optimize_for_inference;
# "after-noroute" the same with its 3-D convolutions switched back to torch.nn's (the routes' share).
INFER_OPTIONS = {"plain": {}, "after": {}, "after-noroute": {}}
TRAIN_OPTIONS = {"plain": {}, "cpu": dict(backend="cpu"), "plain+ckpt": dict(checkpointing=True)}


def _build(model_name: str, max_disp: int, backend: str | None = None, checkpointing: bool = False):
    import hydra

    from stereo.config import CONFIG_DIR

    try:
        from stereo.models.build import build_network
    except ImportError:  # the baseline tree predates the library's builder
        from hydra.utils import instantiate as build_network

    with hydra.initialize_config_dir(version_base="1.3", config_dir=CONFIG_DIR):
        cfg = hydra.compose("train", overrides=[f"model={model_name}", f"model.max_disp={max_disp}"])
    torch.manual_seed(0)
    model = build_network(cfg.model)
    if checkpointing:
        model.checkpoint_aggregation = model.checkpoint_features = True
    if backend:
        from stereo.accel import apply_backend  # not in the baseline tree

        apply_backend(model, backend)
    return model


def run_case(case: dict) -> dict:
    """One measurement in this (fresh) process; returns times, FLOPs and memory."""
    from torch.utils.flop_counter import FlopCounterMode

    import stereo

    torch.set_num_threads(case["threads"])
    height, width, batch = case["height"], case["width"], case["batch"]
    gen = torch.Generator().manual_seed(1)
    left = torch.randn(batch, 3, height, width, generator=gen)
    right = torch.randn(batch, 3, height, width, generator=gen)
    result: dict = {"stereo": str(Path(stereo.__file__).parent)}
    options = dict((INFER_OPTIONS if case["kind"] == "infer" else TRAIN_OPTIONS).get(case["path"], {}))
    optimized = case["path"].startswith("after")
    if case["kind"] == "infer":
        model = _build(case["model"], case["max_disp"], **options).eval()
        if optimized:
            from stereo.models import optimize_for_inference  # not in the baseline tree

            model = optimize_for_inference(model)
            if case["path"] == "after-noroute":
                from stereo.accel import use_plain_convolutions

                use_plain_convolutions(model)
        context = torch.inference_mode if optimized else torch.no_grad

        def step() -> None:
            with context():
                model(left, right)
    else:
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

    result["baseline_rss_mb"] = peak_rss_mb()
    result["matmul_gflops_case"] = [matmul_gflops(size=MATMUL_SIZE)]
    # Warm-up pass, untimed: oneDNN creates its kernels on the first call (measured: the optimised
    # path's first 544×960 pass took 21 s, the next 14 s).
    step()
    times = []
    for _ in range(case["repeats"]):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    result["matmul_gflops_case"].append(matmul_gflops(size=MATMUL_SIZE))
    result.update(seconds=statistics.median(times), all_seconds=times, peak_rss_mb=peak_rss_mb(),
                  load_after=os.getloadavg()[0])
    # FLOPs last, after the peak is read: FlopCounterMode's own bookkeeping raised the measured peaks
    # by up to 0.7 GB when it shared the warm-up pass. Only the plain path's count is used (%matmul).
    if case["path"] == "plain" or case.get("count_flops"):
        if case["kind"] == "infer":
            model = _build(case["model"], case["max_disp"]).eval()  # the plain network's work

            def step() -> None:
                with torch.no_grad():
                    model(left, right)
        with FlopCounterMode(display=False) as counter:
            step()
        result["gflop"] = counter.get_total_flops() / 1e9
    return result


def _spawn(case: dict, tree: Path | None) -> dict:
    """Runs ``case`` in a fresh process; a baseline case imports ``stereo`` from ``tree``."""
    load = os.getloadavg()[0]
    out = run_json([sys.executable, __file__, "--case", json.dumps(case)], env=tree_env(tree) if tree else None)
    if tree and "stereo" in out and not out["stereo"].startswith(str(tree)):
        out = {"error": f"baseline case imported stereo from {out['stereo']}, not from {tree}"}
    return {**case, **out, "load_before": load}


def _same_case(results: list[dict], r: dict, path: str) -> dict | None:
    """The successful result of ``path`` for ``r``'s kind and model, if any."""
    return next((b for b in results if b["kind"] == r["kind"] and b["model"] == r["model"]
                 and b["path"] == path and "error" not in b), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--models", nargs="*", default=["ea_psmnet", "psmnet"], help="inference cases (none: skip)")
    parser.add_argument("--train-models", nargs="*", default=["ea_psmnet"], help="training cases (none: skip)")
    parser.add_argument("--baseline", default="f5d6fa1", metavar="REV",
                        help="git revision measured as the 'baseline@REV' path (default: f5d6fa1, before issue 6; none: skip)")
    parser.add_argument("--paths", nargs="*", default=None,
                        help="inference paths to run (default: plain, after; also after-noroute); FLOPs come from 'plain' or, "
                             "without it, from one extra counted pass of the plain network")
    parser.add_argument("--reference", default=None, metavar="MODEL",
                        help="also report each inference case's speed-up and peak ratio against MODEL's same path")
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
    baseline = None if args.baseline.lower() == "none" else f"baseline@{args.baseline}"
    extra = [baseline] if baseline else []
    machine = machine_info()
    print("machine:", machine)
    mm = matmul_gflops(size=MATMUL_SIZE)
    print(f"fp32 matmul {MATMUL_SIZE}x{MATMUL_SIZE}: {mm:.1f} GFLOP/s")
    infer_paths = args.paths if args.paths is not None else ["plain", "after"]
    models, train_models = ([m for m in names if m.lower() != "none"] for names in (args.models, args.train_models))
    cases = [dict(kind="infer", model=m, path=p, **infer) for m in models for p in [*infer_paths, *extra]]
    cases += [dict(kind="train", model=m, path=p, **train) for m in train_models for p in [*TRAIN_OPTIONS, *extra]]
    with baseline_tree(args.baseline) if baseline else contextlib.nullcontext() as tree:
        # without a plain case the FLOPs are counted on the plain network after the timed passes
        counted = {(c["kind"], c["model"]) for c in cases if c["path"] == "plain"}
        for c in cases:
            c["count_flops"] = c["kind"] == "infer" and (c["kind"], c["model"]) not in counted and c["path"] != baseline
        results = [_spawn(dict(c, threads=args.threads, repeats=args.repeats), tree if c["path"] == baseline else None)
                   for c in tqdm(cases, desc="cases")]
    mm_end = matmul_gflops(size=MATMUL_SIZE)
    print(f"fp32 matmul again at the end: {mm_end:.1f} GFLOP/s (each case's %matmul uses its own probes)")

    for r in results:  # every path's FLOP rate is the current plain network's FLOPs over its time
        plain = _same_case(results, r, "plain") or (r if "gflop" in r else None)
        if r["kind"] == "infer" and "error" not in r and plain:
            r["gflop_per_s"] = plain["gflop"] / r["seconds"]
            # against the matmul rate measured in the same subprocess just before and after its
            # passes: the load on a shared machine changes within minutes
            r["percent_of_matmul"] = 100 * r["gflop_per_s"] / statistics.mean(r["matmul_gflops_case"])
    ref_column = f" {'vs ' + args.reference[:5]:>8}" if args.reference else ""
    header = (f"{'case':44} {'s/pass':>7} {'GFLOP':>7} {'%matmul':>8} {'peak MB':>8} {'-base MB':>8} "
              f"{'vs plain':>8} {'vs base':>8}{ref_column} {'load':>5}")
    print(header)
    print("-" * len(header))
    for r in results:
        name = f"{r['kind']} {r['model']} {r['height']}x{r['width']} b{r['batch']} {r['path']}"
        if "error" in r:
            print(f"{name:44} failed: {r['error'].splitlines()[-1]}")
            continue
        speedups = []
        for key, path in (("plain", "plain"), ("baseline", baseline)):
            reference = _same_case(results, r, path)
            if reference:
                r[f"speedup_vs_{key}"] = reference["seconds"] / r["seconds"]
                r[f"peak_ratio_vs_{key}"] = r["peak_rss_mb"] / reference["peak_rss_mb"]
            speedups.append(f"{r[f'speedup_vs_{key}']:7.2f}x" if reference else f"{'-':>8}")
        if args.reference and r["kind"] == "infer":
            ref = next((b for b in results if b["kind"] == "infer" and b["model"] == args.reference
                        and b["path"] == r["path"] and "error" not in b), None)
            if ref:
                r[f"speedup_vs_{args.reference}"] = ref["seconds"] / r["seconds"]
                r[f"peak_ratio_vs_{args.reference}"] = r["peak_rss_mb"] / ref["peak_rss_mb"]
                speedups.append(f"{r[f'speedup_vs_{args.reference}']:7.2f}x")
            else:
                speedups.append(f"{'-':>8}")
        pct = f"{r['percent_of_matmul']:.0f}%" if "percent_of_matmul" in r else "-"
        gflop = f"{r['gflop']:.0f}" if "gflop" in r else "-"
        print(f"{name:44} {r['seconds']:7.2f} {gflop:>7} {pct:>8} {r['peak_rss_mb']:8.0f} "
              f"{r['peak_rss_mb'] - r['baseline_rss_mb']:8.0f} {' '.join(speedups)} {r['load_before']:5.1f}")
    args.json.write_text(json.dumps(dict(machine=machine, baseline=args.baseline, matmul_gflops=[mm, mm_end],
                                         results=results), indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
