"""Attention ablation under one CPU budget, with StereoSGBM computed in the same run (conf/ablation.yaml).

    python -m stereo.ablation                                     # every variant, seed 1, 300 steps
    python -m stereo.ablation seeds=[1,2] budget_steps=600        # repeats where differences are small
    python -m stereo.ablation quick=true                          # tiny smoke run (tests)
    python -m stereo.ablation variants=[psmnet,ea_psmnet] 'train_overrides=["data.num_workers=2"]'

Each (variant, seed) is the training command ``python -m stereo.train experiment=ablation
model=<variant> seed=<s>`` (same data, crop, batch, optimiser, schedule, steps and seed for every
variant; run as its own process, exactly as a user would run one arm by hand), then its final weights
are scored with :func:`stereo.evaluation.methods.evaluate_method` on the held-out synthetic TEST split
and on every real pair (../shared/data/real), exactly like StereoSGBM.

Resumable: run directories are ``<output_dir>/runs/<variant>/seed<seed>``; a run with ``result.json`` is
not redone, an interrupted one resumes from its ``checkpoints/last.ckpt``. Writes
``<output_dir>/ablation.json`` and ``<output_dir>/ablation.md`` and prints the same table.
"""

from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from stereo.cli import command
from stereo.config import CONFIG_DIR, compose
from stereo.evaluation.methods import evaluate_method, network_method, raw_test_dataset, sgbm_method
from stereo.evaluation.reports import command_line, machine_info, markdown_table

VARIANTS = ("psmnet", "ea_psmnet_feature", "ea_psmnet_volume", "ea_psmnet", "dp_psmnet_hourglass")
METRICS = ("epe", "bad2", "bad3", "d1")
METRIC_LABELS = {"epe": "EPE", "bad2": "bad-2", "bad3": "bad-3", "d1": "D1"}
CHECKPOINT_EVERY = 50
# quick=true: one training step on a 4-pair 256×256 tree, a 16-level search, one small real pair.
QUICK = {"budget_steps": 1, "max_disp": 16, "real_names": ["middlebury2001/tsukuba"]}
QUICK_OVERRIDES = [
    "data.generate.num_train=4", "data.generate.num_test=2", "data.generate.height=256",
    "data.generate.width=256", "data.generate.max_disp=32", "data.num_workers=0",
    "data.augment.color=false", "trainer.log_every_n_steps=1",
]


def check_options(cfg: DictConfig) -> None:
    """Refuse unknown variants (naming the config folder) and budgets below one step."""
    unknown = sorted(set(cfg.variants) - {p.stem for p in (Path(CONFIG_DIR) / "model").glob("*.yaml")})
    if unknown:
        raise ValueError(f"variants: unknown model config(s) {unknown}; see {Path(CONFIG_DIR) / 'model'}")
    if cfg.budget_steps is not None and int(cfg.budget_steps) < 1:
        raise ValueError(f"budget_steps must be >= 1, got {cfg.budget_steps}")


def _option(cfg: DictConfig, key: str) -> Any:
    """An option, or its quick-run value when ``quick=true`` leaves it unset."""
    value = cfg[key]
    return QUICK.get(key) if value is None and cfg.quick else value


def base_overrides(cfg: DictConfig) -> list[str]:
    """What every run shares (the equal budget); the variant and seed are added per run."""
    out = Path(cfg.output_dir).resolve()
    overrides = ["experiment=ablation", f"paths.log_dir={out / 'logs'}"]
    if cfg.quick:  # its own tiny tree: never regenerate the shared default one with tiny parameters
        overrides += [f"paths.data_dir={out / 'data'}", *QUICK_OVERRIDES]
    budget, max_disp = _option(cfg, "budget_steps"), _option(cfg, "max_disp")
    if budget is not None:
        overrides.append(f"trainer.max_steps={int(budget)}")
    if cfg.crop is not None:
        overrides.append(f"data.crop_size=[{int(cfg.crop[0])},{int(cfg.crop[1])}]")
    if max_disp is not None:
        overrides.append(f"model.max_disp={int(max_disp)}")
    return overrides + [str(o) for o in cfg.train_overrides]


def train_arm(overrides: list[str], run_dir: Path) -> float:
    """Run one arm as the training command; its wall-clock seconds (process start included)."""
    argv = [sys.executable, "-m", "stereo.train", *overrides, f"hydra.run.dir={run_dir}"]
    started = time.perf_counter()
    done = subprocess.run(argv, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{run_dir}: the training command failed with status {done.returncode} (its output is "
                           f"above): {' '.join(argv[1:])}; rerun to resume")
    return time.perf_counter() - started


def run_variant(cfg: DictConfig, variant: str, seed: int, datasets: dict[str, Any]) -> dict[str, Any]:
    """Train (or resume) one arm, then score its final weights; cached in the run's result.json."""
    from stereo.inference import Predictor
    from stereo.models import load_model
    from stereo.models.checkpoints import read_checkpoint

    run_dir = (Path(cfg.output_dir) / "runs" / variant / f"seed{seed}").resolve()
    result_path = run_dir / "result.json"
    if result_path.is_file():
        print(f"[ablation] {variant} seed {seed}: done before, reading {result_path}")
        return json.loads(result_path.read_text())
    overrides = base_overrides(cfg) + [f"model={variant}", f"seed={seed}", f"paths.output_dir={run_dir}"]
    budget = int(compose("train", overrides).trainer.max_steps)
    # a checkpoint every k steps with k dividing the budget, so the final weights are always on disk
    overrides.append(f"callbacks.last_checkpoint.every_n_train_steps={math.gcd(budget, CHECKPOINT_EVERY)}")
    last = run_dir / "checkpoints" / "last.ckpt"
    resumed = last.is_file()
    if resumed:
        overrides.append(f"ckpt_path={last}")
        print(f"[ablation] {variant} seed {seed}: resuming from {last}")
    seconds = train_arm(overrides, run_dir)
    step = int(read_checkpoint(last)["global_step"]) if last.is_file() else 0
    if step != budget:
        raise RuntimeError(f"{run_dir}: training stopped at step {step} of {budget} (checkpoints/last.ckpt); rerun to resume")
    model = load_model(last)
    predictor = Predictor(model, device="auto", swap_check=False, max_memory_gb=float(cfg.max_memory_gb))
    result: dict[str, Any] = {
        "variant": variant, "seed": seed, "params": sum(p.numel() for p in model.parameters()),
        "train_seconds": seconds, "resumed": resumed, "steps": step,
        "checkpoint": str(last), "overrides": overrides,
    }
    for split, (dataset, cap, names) in datasets.items():
        evaluation = evaluate_method(network_method(predictor, allow_strips=bool(cfg.allow_strips)), dataset, cap=cap,
                                     names=names, desc=f"{variant} {split}")
        result[split] = {"summary": evaluation["summary"], "rows": evaluation["rows"]}
    run_dir.mkdir(parents=True, exist_ok=True)
    result_path.write_text(json.dumps(result, indent=2) + "\n")
    return result


def evaluation_sets(cfg: DictConfig) -> dict[str, tuple[Any, int, list[str] | None]]:
    """split name -> (raw dataset, max_disp cap, names or None); the synthetic TEST split is generated if needed."""
    train_cfg = compose("train", base_overrides(cfg))
    sets = {"synthetic": (raw_test_dataset(train_cfg.data), int(train_cfg.model.max_disp), None)}
    if cfg.real:
        from stereo.data.real_samples import load_real_samples

        names = _option(cfg, "real_names")
        sets["real"] = (load_real_samples(cfg.real_root), int(cfg.real_cap), list(names) if names else None)
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


def run(cfg: DictConfig) -> dict[str, Any]:
    """Train and score every (variant, seed), score StereoSGBM, write and print the table."""
    check_options(cfg)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    datasets = evaluation_sets(cfg)
    splits = list(datasets)
    sgbm: dict[str, Any] = {"variant": "StereoSGBM", "seed": "-", "params": None, "train_seconds": None}
    for split, (dataset, cap, names) in datasets.items():
        evaluation = evaluate_method(sgbm_method(), dataset, cap=cap, names=names, desc=f"SGBM {split}")
        sgbm[split] = {"summary": evaluation["summary"], "rows": evaluation["rows"], "protocol": evaluation["protocol"]}
    runs = [run_variant(cfg, str(variant), int(seed), datasets) for variant in cfg.variants for seed in cfg.seeds]
    header = ["variant", "seed", "params", "train s"] + [f"{s} {METRIC_LABELS[m]}" for s in splits for m in METRICS]
    rows = table_rows(runs + [sgbm], splits)
    table = markdown_table(header, rows)
    info = machine_info()
    typed = command_line("stereo.ablation")
    report = {"command": typed, "machine": info, "options": OmegaConf.to_container(cfg, resolve=True),
              "overrides": base_overrides(cfg),
              "protocol": sgbm[splits[0]]["protocol"], "runs": runs, "sgbm": sgbm,
              "table": {"header": header, "rows": rows}}
    (out / "ablation.json").write_text(json.dumps(report, indent=2) + "\n")
    caption = (f"Measured with `{typed}` on {info['processor']} ({info['cpu_count']} cores, torch {info['torch']}"
               f"{', ' + info['cuda'] if info['cuda'] else ''}). Synthetic: {len(datasets['synthetic'][0])} TEST pairs; "
               "real: mean over pairs. EPE in px, bad-τ and D1 in %. Train seconds: wall clock of each arm's training "
               "command, process start included.\n\n")
    (out / "ablation.md").write_text(caption + table)
    print(f"\n{caption}{table}\nwritten: {out / 'ablation.json'}, {out / 'ablation.md'}")
    return report


@command("ablation")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
