"""Checkpoints against StereoSGBM on every real pair with ground truth (../shared/data/real), per pair.

    python -m stereo.evaluation.compare_real                                 # StereoSGBM alone: the bar to beat
    python -m stereo.evaluation.compare_real --checkpoint demo.ckpt --out compare_real   # + our network(s)

(``python scripts/compare_real.py ...`` is the same command.)

Same routine and rule as the ablation (stereo.evaluation.methods): full resolution, per-pair max_disp =
GT maximum rounded up past a multiple of 16 (≤ --cap), all pixels with GT, mean over pairs. Prints a
per-pair table (EPE, bad-2, bad-3, D1, SGBM's raw coverage) and writes JSON + Markdown to --out.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from stereo.data import load_real_samples
from stereo.evaluation.methods import DEFAULT_CAP, evaluate_method, network_method, sgbm_method
from stereo.evaluation.reports import machine_info, markdown_table

COLUMNS = ("epe", "bad2", "bad3", "d1")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, action="append", default=[], help="our or the authors' checkpoint (repeatable)")
    parser.add_argument("--real-root", type=Path, default=None, help="default ../shared/data/real or $STEREO_REAL_DATA")
    parser.add_argument("--names", nargs="+", default=None, help="only these pairs")
    parser.add_argument("--cap", type=int, default=DEFAULT_CAP, help="largest per-pair max_disp")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=Path("compare_real"))
    args = parser.parse_args(argv)

    from stereo.inference import Predictor

    dataset = load_real_samples(args.real_root)
    methods = {"StereoSGBM": sgbm_method()}
    for path in args.checkpoint:
        methods[path.name] = network_method(Predictor.from_checkpoint(path, device=args.device, swap_check=False))
    results = {name: evaluate_method(method, dataset, cap=args.cap, names=args.names, desc=name)
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
    command = "python -m stereo.evaluation.compare_real " + " ".join(argv if argv is not None else sys.argv[1:])
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"command": command, "machine": machine, "protocol": results["StereoSGBM"]["protocol"],
              "methods": {name: {"summary": r["summary"], "rows": r["rows"]} for name, r in results.items()}}
    (args.out / "compare_real.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "compare_real.md").write_text(table)
    print(f"{machine}\n{table}\nwritten: {args.out / 'compare_real.json'}, {args.out / 'compare_real.md'}")
    return report


if __name__ == "__main__":
    main()
