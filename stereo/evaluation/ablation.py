"""Attention ablation under one CPU budget, with StereoSGBM computed in the same run.

    python -m stereo.evaluation.ablation                                   # every variant, seed 1, 300 steps
    python -m stereo.evaluation.ablation --seeds 1 2 --budget-steps 600    # repeats where differences are small
    python -m stereo.evaluation.ablation --quick                           # tiny smoke run (tests)
    python -m stereo.evaluation.ablation --variants psmnet ea_psmnet -- data.num_workers=2   # + Hydra overrides

(``python scripts/ablation.py ...`` is the same command.)

Each (variant, seed) trains with ``stereo.train.train`` on ``conf/train.yaml`` + ``experiment=ablation``
+ ``model=<variant>`` (same data, crop, batch, optimiser, schedule, steps and seed for every variant),
then its final weights are scored with :func:`stereo.evaluation.methods.evaluate_method` on the held-out
synthetic TEST split and on every real pair (../shared/data/real), exactly like StereoSGBM.

Resumable: run directories are ``<out>/runs/<variant>/seed<seed>``; a run with ``result.json`` is not
redone, an interrupted one resumes from its ``checkpoints/last.ckpt``. Writes ``<out>/ablation.json``
and ``<out>/ablation.md`` and prints the same table.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path
from typing import Any

from stereo.config import CONFIG_DIR, compose
from stereo.evaluation.methods import DEFAULT_CAP, evaluate_method, network_method, raw_test_dataset, sgbm_method
from stereo.evaluation.reports import machine_info, markdown_table

VARIANTS = ("psmnet", "ea_psmnet_feature", "ea_psmnet_volume", "ea_psmnet", "dp_psmnet_hourglass")
METRICS = ("epe", "bad2", "bad3", "d1")
METRIC_LABELS = {"epe": "EPE", "bad2": "bad-2", "bad3": "bad-3", "d1": "D1"}
CHECKPOINT_EVERY = 50
# --quick: one training step on a 4-pair 256×256 tree, a 16-level search, one small real pair.
QUICK = {"budget_steps": 1, "max_disp": 16, "real_names": ["middlebury2001/tsukuba"]}
QUICK_OVERRIDES = [
    "data.generate.num_train=4", "data.generate.num_test=2", "data.generate.height=256",
    "data.generate.width=256", "data.generate.max_disp=32", "data.num_workers=0",
    "data.augment.color=false", "trainer.log_every_n_steps=1",
]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), help="model configs (conf/model/)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[1])
    parser.add_argument("--budget-steps", type=int, default=None, help="training steps per run (default: the experiment's 300)")
    parser.add_argument("--crop", nargs=2, type=int, default=None, metavar=("H", "W"), help="training crop (default 256 256)")
    parser.add_argument("--max-disp", type=int, default=None, help="training max_disp (default: the experiment's 96)")
    parser.add_argument("--out", type=Path, default=Path("logs/ablation"), help="output directory (run dirs, JSON, Markdown)")
    parser.add_argument("--real-root", type=Path, default=None, help="real samples folder (default ../shared/data/real or $STEREO_REAL_DATA)")
    parser.add_argument("--real-names", nargs="+", default=None, help="score only these real pairs (default: all)")
    parser.add_argument("--no-real", action="store_true", help="skip the real pairs")
    parser.add_argument("--real-cap", type=int, default=DEFAULT_CAP, help="largest per-pair max_disp on real pairs")
    parser.add_argument("--quick", action="store_true", help="tiny smoke run (tests): 1 step, 4 training pairs, max_disp 16, one real pair")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for conf/train.yaml, applied last")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.variants) - {p.stem for p in (Path(CONFIG_DIR) / "model").glob("*.yaml")})
    if unknown:
        parser.error(f"unknown model config(s) {unknown}; see {Path(CONFIG_DIR) / 'model'}")
    if args.quick:
        args.budget_steps = args.budget_steps or QUICK["budget_steps"]
        args.max_disp = args.max_disp or QUICK["max_disp"]
        args.real_names = args.real_names or QUICK["real_names"]
    return args


def base_overrides(args: argparse.Namespace) -> list[str]:
    """What every run shares (the equal budget); the variant and seed are added per run."""
    out = args.out.resolve()
    overrides = ["experiment=ablation", f"paths.log_dir={out / 'logs'}"]
    if args.quick:  # its own tiny tree: never regenerate the shared default one with tiny parameters
        overrides += [f"paths.data_dir={out / 'data'}", *QUICK_OVERRIDES]
    if args.budget_steps is not None:
        if args.budget_steps < 1:
            raise ValueError(f"--budget-steps must be >= 1, got {args.budget_steps}")
        overrides.append(f"trainer.max_steps={args.budget_steps}")
    if args.crop is not None:
        overrides.append(f"data.crop_size=[{args.crop[0]},{args.crop[1]}]")
    if args.max_disp is not None:
        overrides.append(f"model.max_disp={args.max_disp}")
    return overrides + list(args.overrides)


def run_variant(args: argparse.Namespace, variant: str, seed: int, datasets: dict[str, Any]) -> dict[str, Any]:
    """Train (or resume) one arm, then score its final weights; cached in the run's result.json."""
    from stereo.inference import Predictor
    from stereo.models import load_model
    from stereo.train import train

    run_dir = (args.out / "runs" / variant / f"seed{seed}").resolve()
    result_path = run_dir / "result.json"
    if result_path.is_file():
        print(f"[ablation] {variant} seed {seed}: done before, reading {result_path}")
        return json.loads(result_path.read_text())
    overrides = base_overrides(args) + [f"model={variant}", f"seed={seed}", f"paths.output_dir={run_dir}"]
    budget = int(compose("train", overrides).trainer.max_steps)
    # a checkpoint every k steps with k dividing the budget, so the final weights are always on disk
    overrides.append(f"callbacks.last_checkpoint.every_n_train_steps={math.gcd(budget, CHECKPOINT_EVERY)}")
    last = run_dir / "checkpoints" / "last.ckpt"
    resumed = last.is_file()
    if resumed:
        overrides.append(f"ckpt_path={last}")
        print(f"[ablation] {variant} seed {seed}: resuming from {last}")
    cfg = compose("train", overrides)
    trained = train(cfg)
    if trained["global_step"] != budget or not last.is_file():
        raise RuntimeError(f"{run_dir}: training stopped at step {trained['global_step']} of {budget} "
                           f"(or {last} is missing); rerun to resume")
    model = load_model(last)
    predictor = Predictor(model, device="auto", swap_check=False)
    result: dict[str, Any] = {
        "variant": variant, "seed": seed, "params": sum(p.numel() for p in model.parameters()),
        "train_seconds": trained["train/seconds"], "resumed": resumed, "steps": budget,
        "checkpoint": str(last), "overrides": overrides,
    }
    for split, (dataset, cap, names) in datasets.items():
        evaluation = evaluate_method(network_method(predictor), dataset, cap=cap, names=names, desc=f"{variant} {split}")
        result[split] = {"summary": evaluation["summary"], "rows": evaluation["rows"]}
    run_dir.mkdir(parents=True, exist_ok=True)
    result_path.write_text(json.dumps(result, indent=2) + "\n")
    return result


def evaluation_sets(args: argparse.Namespace) -> dict[str, tuple[Any, int, list[str] | None]]:
    """split name -> (raw dataset, max_disp cap, names or None); the synthetic TEST split is generated if needed."""
    cfg = compose("train", base_overrides(args))
    sets = {"synthetic": (raw_test_dataset(cfg.data), int(cfg.model.max_disp), None)}
    if not args.no_real:
        from stereo.data import load_real_samples

        sets["real"] = (load_real_samples(args.real_root), args.real_cap, args.real_names)
    return sets


def table_rows(results: list[dict[str, Any]], splits: list[str]) -> list[list[str]]:
    """One row per run, a mean ± std row per variant with several seeds, StereoSGBM last."""
    def cells(split_values: dict[str, list[float]]) -> list[str]:
        out = []
        for split in splits:
            for metric in METRICS:
                values = split_values[f"{split}/{metric}"]
                text = f"{statistics.fmean(values):.3f}" if metric == "epe" else f"{statistics.fmean(values):.2f}"
                if len(values) > 1:
                    text += f" ± {statistics.stdev(values):.{3 if metric == 'epe' else 2}f}"
                out.append(text)
        return out

    rows, by_variant = [], {}
    for r in results:
        by_variant.setdefault(r["variant"], []).append(r)
    for variant, runs in by_variant.items():
        for r in runs:
            values = {f"{s}/{m}": [r[s]["summary"][m]] for s in splits for m in METRICS if s in r}
            seconds = "-" if r["variant"] == "StereoSGBM" else f"{r['train_seconds']:.0f}" + (" (resumed)" if r.get("resumed") else "")
            rows.append([variant, str(r.get("seed", "-")), f"{r['params']:,}" if r.get("params") else "-", seconds, *cells(values)])
        if len(runs) > 1:
            values = {f"{s}/{m}": [r[s]["summary"][m] for r in runs] for s in splits for m in METRICS}
            rows.append([f"{variant} (mean ± std)", f"{len(runs)} seeds", "", "", *cells(values)])
    return rows


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    datasets = evaluation_sets(args)
    splits = list(datasets)
    sgbm: dict[str, Any] = {"variant": "StereoSGBM", "seed": "-", "params": None, "train_seconds": None}
    for split, (dataset, cap, names) in datasets.items():
        evaluation = evaluate_method(sgbm_method(), dataset, cap=cap, names=names, desc=f"SGBM {split}")
        sgbm[split] = {"summary": evaluation["summary"], "rows": evaluation["rows"], "protocol": evaluation["protocol"]}
    runs = [run_variant(args, variant, seed, datasets) for variant in args.variants for seed in args.seeds]
    header = ["variant", "seed", "params", "train s"] + [f"{s} {METRIC_LABELS[m]}" for s in splits for m in METRICS]
    rows = table_rows(runs + [sgbm], splits)
    table = markdown_table(header, rows)
    info = machine_info()
    command = "python -m stereo.evaluation.ablation " + " ".join(argv if argv is not None else sys.argv[1:])
    report = {"command": command, "machine": info, "overrides": base_overrides(args),
              "protocol": sgbm[splits[0]]["protocol"], "runs": runs, "sgbm": sgbm,
              "table": {"header": header, "rows": rows}}
    (args.out / "ablation.json").write_text(json.dumps(report, indent=2) + "\n")
    caption = (f"Measured with `{command}` on {info['processor']} ({info['cpu_count']} cores, torch {info['torch']}"
               f"{', ' + info['cuda'] if info['cuda'] else ''}). Synthetic: {len(datasets['synthetic'][0])} TEST pairs; "
               "real: mean over pairs. EPE in px, bad-τ and D1 in %. Train seconds are wall-clock on a shared machine.\n\n")
    (args.out / "ablation.md").write_text(caption + table)
    print(f"\n{caption}{table}\nwritten: {args.out / 'ablation.json'}, {args.out / 'ablation.md'}")
    return report


if __name__ == "__main__":
    main()
