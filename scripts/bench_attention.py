"""Benchmark: efficient vs dot-product attention (forward + backward) over growing numbers of
positions on 1-D, 2-D and 3-D inputs, including PSMNet's real cost-volume shapes, plus the attention
modules' share of EA-PSMNet's 256×512 inference time.

Each attention case runs in a fresh subprocess; its peak extra memory is the process's peak RSS
(``ru_maxrss``) minus its RSS just before the first forward pass (input, upstream gradient and
module already allocated), so it counts everything forward + backward allocate, x.grad included.
Dot-product cases whose n×n maps (≈3 live copies in fp32) would exceed ``--mem-cap-gb`` are skipped.

    python scripts/bench_attention.py            # full sweep (a few minutes on 2 cores)
    python scripts/bench_attention.py --quick    # smaller sweep
    python scripts/bench_attention.py --network-only --threads 2 --network-repeats 3   # the time share only
Writes <out-dir>/bench_attention.json and, when matplotlib is installed, bench_attention.png.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

from benchlib import machine_info, peak_rss_mb, run_json

CHANNELS, KEY_CHANNELS, VALUE_CHANNELS = 32, 16, 32  # the `volume` placement's sizes

# (rank label, spatial shape, note); n = prod(shape)
FULL_CASES = [
    *[("1-D", (n,), "") for n in (256, 1024, 4096, 8192, 16384, 65536, 262144)],
    *[("2-D", s, "") for s in ((16, 16), (32, 32), (64, 64), (64, 128), (128, 128), (256, 256))],
    ("3-D", (6, 8, 16), "hourglass 1/16 bottleneck, 128x256 crop"),
    ("3-D", (12, 16, 32), "hourglass 1/16 bottleneck, 256x512 crop"),
    ("3-D", (12, 16, 64), "largest 3-D case where dot-product maps fit a 2 GiB cap"),
    ("3-D", (24, 32, 64), "1/8 volume, 256x512 crop"),
    ("3-D", (48, 64, 128), "cost volume, 256x512 crop, maxdisp 192"),
    ("3-D", (48, 136, 240), "cost volume, 544x960 (padded Scene Flow), maxdisp 192"),
]
QUICK_CASES = [
    *[("1-D", (n,), "") for n in (256, 1024, 4096, 16384)],
    *[("2-D", s, "") for s in ((16, 16), (32, 32), (64, 64), (128, 128))],
    ("3-D", (12, 16, 32), "hourglass 1/16 bottleneck, 256x512 crop"),
    ("3-D", (12, 16, 64), "largest 3-D case where dot-product maps fit a 2 GiB cap"),
    ("3-D", (48, 64, 128), "cost volume, 256x512 crop, maxdisp 192"),
]


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _worker(spec: dict) -> dict:
    """One case in this (fresh) process: time and peak extra memory of forward + backward."""
    import torch

    from stereo.models import DotProductAttention, EfficientAttention

    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    cls = EfficientAttention if spec["kind"] == "efficient" else DotProductAttention
    block = cls(CHANNELS, KEY_CHANNELS, VALUE_CHANNELS)
    x = torch.randn(1, CHANNELS, *spec["shape"], requires_grad=True)
    upstream = torch.randn_like(x)
    # a tiny warm-up first: thread pools and kernel caches are one-off costs, not the case's memory
    tiny = torch.randn(1, CHANNELS, 16, requires_grad=True)
    block(tiny).sum().backward()
    block.zero_grad(set_to_none=True)
    baseline = _rss_bytes()
    times = []
    # repeat small cases until ~2 s have been spent (the machine is shared: keep the fastest run)
    while len(times) < spec["repeats"] or (sum(times) < 2.0 and len(times) < 100):
        x.grad = None
        block.zero_grad(set_to_none=True)
        start = time.perf_counter()
        block(x).backward(upstream)
        times.append(time.perf_counter() - start)
    peak = int(peak_rss_mb() * 2**20)
    input_bytes = x.numel() * x.element_size()
    return {"seconds": min(times), "peak_extra_bytes": peak - baseline, "input_bytes": input_bytes,
            "peak_extra_over_input": (peak - baseline) / input_bytes}


def _run_case(
    kind: str, rank: str, shape: tuple, note: str, cap_bytes: float, timeout: float, threads: int
) -> dict:
    n = math.prod(shape)
    row = {"kind": kind, "rank": rank, "shape": list(shape), "n": n, "note": note}
    if kind == "dot_product" and 3 * 4 * n * n > cap_bytes:
        return {**row, "status": f"skipped: n×n maps ≈{3 * 4 * n * n / 2**30:.1f} GiB > cap"}
    repeats = 3 if n <= 65536 else 1  # plus more runs while under ~1 s in total
    spec = json.dumps({"kind": kind, "shape": list(shape), "repeats": repeats, "threads": threads})
    out = run_json([sys.executable, __file__, "--worker", spec], timeout=timeout)
    if "error" in out:
        return {**row, "status": f"failed: {out['error'].splitlines()[-1]}"}
    return {**row, "status": "ok", **out}


def _network_share(height: int, width: int, repeats: int) -> dict:
    """EA-PSMNet (conf/model/ea_psmnet.yaml settings) vs plain PSMNet inference at height×width."""
    import torch
    from stereo.models.build import build_network, model_config
    from stereo.models.attention import _AttentionBlock

    torch.manual_seed(0)
    ea = build_network(model_config("ea_psmnet")).eval()
    plain = build_network(model_config("psmnet", max_disp=ea.max_disp)).eval()  # same layout (both plain): compare the attention only
    spent = {"attention": 0.0}
    starts = {}

    def before(module, _inputs):
        starts[id(module)] = time.perf_counter()

    def after(module, _inputs, _output):
        spent["attention"] += time.perf_counter() - starts.pop(id(module))

    for module in ea.modules():
        if isinstance(module, _AttentionBlock):
            module.register_forward_pre_hook(before)
            module.register_forward_hook(after)
    left, right = torch.randn(2, 1, 3, height, width)
    totals = {"ea_psmnet": [], "psmnet": [], "attention": []}
    with torch.inference_mode():
        for _ in range(repeats):
            for name, model in (("psmnet", plain), ("ea_psmnet", ea)):
                spent["attention"] = 0.0
                start = time.perf_counter()
                model(left, right)
                totals[name].append(time.perf_counter() - start)
                if name == "ea_psmnet":
                    totals["attention"].append(spent["attention"])
    best = min(range(repeats), key=lambda i: totals["ea_psmnet"][i])
    ea_s, attention_s, plain_s = totals["ea_psmnet"][best], totals["attention"][best], min(totals["psmnet"])
    return {"size": [height, width], "max_disp": ea.max_disp, "placements": sorted(p for spec in ea.attention_config for p in spec["at"]),
            "ea_psmnet_seconds": ea_s, "psmnet_seconds": plain_s, "attention_seconds": attention_s,
            "attention_share_of_ea_psmnet": attention_s / ea_s,
            "attention_seconds_over_psmnet": attention_s / plain_s}


def _plot(rows: list[dict], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    styles = {"efficient": "-", "dot_product": "--"}
    markers = {"1-D": "o", "2-D": "s", "3-D": "^"}
    for kind in ("efficient", "dot_product"):
        for rank in ("1-D", "2-D", "3-D"):
            pts = sorted((r["n"], r["seconds"], r["peak_extra_bytes"]) for r in rows
                         if r["kind"] == kind and r["rank"] == rank and r["status"] == "ok")
            if not pts:
                continue
            n, s, m = zip(*pts)
            label = f"{kind} {rank}"
            axes[0].loglog(n, [v / 2**20 for v in m], styles[kind], marker=markers[rank], label=label)
            axes[1].loglog(n, s, styles[kind], marker=markers[rank], label=label)
    axes[0].set(xlabel="positions n", ylabel="peak extra memory (MiB)", title="forward+backward memory")
    axes[1].set(xlabel="positions n", ylabel="seconds", title="forward+backward time")
    for ax in axes:
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"C={CHANNELS}, d_k={KEY_CHANNELS}, d_v={VALUE_CHANNELS}, 1 head, softmax, fp32, CPU")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller sweep, one network repeat")
    parser.add_argument("--out-dir", type=Path, default=Path("outputs/bench_attention"))
    parser.add_argument("--mem-cap-gb", type=float, default=2.0, help="skip dot-product cases above this")
    parser.add_argument("--case-timeout", type=float, default=300.0, help="seconds per case")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads (0 = torch's default); 1 is steadier on a busy machine")
    parser.add_argument("--no-network", action="store_true", help="skip the EA-PSMNet time-share part")
    parser.add_argument("--network-only", action="store_true", help="only the EA-PSMNet time-share part")
    parser.add_argument("--network-repeats", type=int, default=None,
                        help="passes per network, the best one counts (default 2, 1 with --quick)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(_worker(json.loads(args.worker))))
        return

    import torch
    from tqdm import tqdm

    if args.threads:
        torch.set_num_threads(args.threads)
    machine = machine_info()
    print(f"machine: {machine}")
    cases = QUICK_CASES if args.quick else FULL_CASES
    if args.network_only and args.no_network:
        parser.error("--network-only and --no-network exclude each other")
    jobs = [] if args.network_only else [(kind, *case) for case in cases for kind in ("efficient", "dot_product")]
    rows = [_run_case(*job, args.mem_cap_gb * 2**30, args.case_timeout, args.threads)
            for job in tqdm(jobs, desc="cases")]

    print(f"\n{'kind':<12}{'rank':<5}{'shape':<16}{'n':>10}{'time s':>10}{'extra MiB':>11}{'x input':>9}  note/status")
    for r in rows:
        shape = "x".join(map(str, r["shape"]))
        if r["status"] == "ok":
            print(f"{r['kind']:<12}{r['rank']:<5}{shape:<16}{r['n']:>10}{r['seconds']:>10.4f}"
                  f"{r['peak_extra_bytes'] / 2**20:>11.1f}{r['peak_extra_over_input']:>9.2f}  {r['note']}")
        else:
            print(f"{r['kind']:<12}{r['rank']:<5}{shape:<16}{r['n']:>10}{'':>30}  {r['status']}")

    summary = {}
    measured = {(r["kind"], r["rank"], r["n"]): r for r in rows if r["status"] == "ok"}
    for rank in ("1-D", "2-D", "3-D"):
        common = [n for (k, rk, n) in measured if k == "dot_product" and rk == rank and ("efficient", rank, n) in measured]
        if common:
            n = max(common)
            dp, ea = measured[("dot_product", rank, n)], measured[("efficient", rank, n)]
            summary[f"{rank} largest n where dot-product ran"] = {
                "n": n, "dot_product_over_efficient_time": dp["seconds"] / ea["seconds"],
                "dot_product_over_efficient_memory": dp["peak_extra_bytes"] / max(ea["peak_extra_bytes"], 1)}
    volume = measured.get(("efficient", "3-D", 48 * 64 * 128))
    if volume:
        summary["EA over the 256x512 cost volume (393,216 positions)"] = {
            "seconds": volume["seconds"], "peak_extra_over_input": volume["peak_extra_over_input"]}
    print("\nsummary (ratios measured in this run):")
    for key, value in summary.items():
        print(f"  {key}: " + ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in value.items()))

    network = None
    if not args.no_network:
        print("\nEA-PSMNet vs PSMNet inference at 256x512 ...", flush=True)
        network = _network_share(256, 512, repeats=args.network_repeats or (1 if args.quick else 2))
        print(f"  PSMNet {network['psmnet_seconds']:.2f} s, EA-PSMNet {network['ea_psmnet_seconds']:.2f} s, "
              f"attention modules {network['attention_seconds']:.3f} s = "
              f"{100 * network['attention_share_of_ea_psmnet']:.2f} % of EA-PSMNet "
              f"({100 * network['attention_seconds_over_psmnet']:.2f} % on top of PSMNet)")

    args.out_dir.mkdir(parents=True, exist_ok=True)
    result = {"machine": machine, "settings": {"channels": CHANNELS, "key_channels": KEY_CHANNELS,
              "value_channels": VALUE_CHANNELS, "heads": 1, "normalization": "softmax", "dtype": "float32",
              "quick": args.quick, "mem_cap_gb": args.mem_cap_gb, "threads": torch.get_num_threads()},
              "cases": rows, "summary": summary, "network": network}
    json_path = args.out_dir / "bench_attention.json"
    json_path.write_text(json.dumps(result, indent=2))
    print(f"\nwrote {json_path}")
    png = args.out_dir / "bench_attention.png"
    if rows:
        print(f"wrote {png}" if _plot(rows, png) else "matplotlib not installed: no plot")


if __name__ == "__main__":
    main()
