"""Checkpoints against StereoSGBM on every real pair with ground truth (../shared/data/real), per pair.

    python -m stereo.compare_real                                             # StereoSGBM alone: the bar to beat
    python -m stereo.compare_real checkpoints=[demo.ckpt] output_dir=compare_real   # + our network(s)

Same routine and rule as the ablation (stereo.evaluation.methods, protocol ``pairs``): full resolution,
per-pair max_disp = GT maximum rounded up past a multiple of 16 (<= cap), all pixels with GT, mean over
pairs. Prints a per-pair table (EPE, bad-2, bad-3, D1, SGBM's raw coverage) and writes JSON + Markdown
to output_dir. Options: conf/compare_real.yaml.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from omegaconf import DictConfig

from stereo.cli import command
from stereo.data.io import atomic_write
from stereo.data.real_samples import load_real_samples
from stereo.evaluation.methods import evaluate_method, network_method, sgbm_method
from stereo.evaluation.reports import command_line, machine_info, markdown_table
from stereo.models.pretrained import is_shipped, resolve_checkpoint

COLUMNS = ("epe", "bad2", "bad3", "d1")


def checkpoint_labels(checkpoints: list) -> dict[str, str]:
    """Each listed checkpoint -> its column in the tables: a shipped name as it is, a file by its name, or
    by its path as given where two files share a name (two runs' last.ckpt), so that no result replaces
    another. One file listed twice is refused, before anything is loaded."""
    seen: set[Path] = set()
    short: dict[str, str] = {}
    for name in map(str, checkpoints):
        path = resolve_checkpoint(name)
        if path.resolve() in seen:
            raise ValueError(f"checkpoints: {name} is listed twice; list each checkpoint once")
        seen.add(path.resolve())
        short[name] = name if is_shipped(name) else path.name
    uses = Counter(short.values())
    return {name: name if uses[label] > 1 else label for name, label in short.items()}


def run(cfg: DictConfig) -> dict:
    """Score StereoSGBM and every checkpoint on the same pairs; write and print the table."""
    from stereo.inference import Predictor

    labels = checkpoint_labels(list(cfg.checkpoints))
    dataset = load_real_samples(cfg.real_root)
    methods = {"StereoSGBM": sgbm_method()}
    for name, label in labels.items():
        predictor = Predictor.from_checkpoint(resolve_checkpoint(name), device=str(cfg.device), swap_check=False,
                                              max_memory_gb=float(cfg.max_memory_gb), min_width=cfg.min_width)
        methods[label] = network_method(predictor, str(cfg.search_range), bool(cfg.allow_strips))
    names = list(cfg.names) if cfg.names else None
    results = {name: evaluate_method(method, dataset, cap=int(cfg.cap), names=names, desc=name)
               for name, method in methods.items()}

    header = ["pair", "max_disp"] + [f"{m} {c}" for m in methods for c in ("EPE", "bad-2", "bad-3", "D1")] + ["SGBM coverage %"]
    rows = []
    first = next(iter(results.values()))["rows"]
    for i, pair in enumerate(first):
        cells = [pair["name"], str(pair["max_disp"])]
        for name in methods:
            row = results[name]["rows"][i]
            cells += [f"{row['epe']:.3f}"] + [f"{row[c]:.2f}" for c in COLUMNS[1:]]
        rows.append(cells + [f"{results['StereoSGBM']['rows'][i]['coverage']:.1f}"])
    mean = ["**mean over pairs**", ""]
    for name in methods:
        summary = results[name]["summary"]
        mean += [f"**{summary['epe']:.3f}**"] + [f"**{summary[c]:.2f}**" for c in COLUMNS[1:]]
    rows.append(mean + [f"{results['StereoSGBM']['summary']['coverage']:.1f}"])
    table = markdown_table(header, rows)

    machine = machine_info()
    typed = command_line("stereo.compare_real")
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = {"command": typed, "machine": machine, "protocol": results["StereoSGBM"]["protocol"],
              "search_range": str(cfg.search_range),
              "methods": {name: {"summary": r["summary"], "rows": r["rows"]} for name, r in results.items()}}
    atomic_write(out / "compare_real.json", (json.dumps(report, indent=2) + "\n").encode())
    atomic_write(out / "compare_real.md", table.encode())
    print(f"{machine}\n{table}\nwritten: {out / 'compare_real.json'}, {out / 'compare_real.md'}")
    return report


@command("compare_real")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
