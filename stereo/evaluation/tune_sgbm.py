"""Choose StereoSGBM's few free parameters on the *synthetic* TEST split (never on the real pairs).

    python -m stereo.evaluation.tune_sgbm [--out sgbm_tuning.json] [hydra overrides of conf/train.yaml, e.g. paths.data_dir=data]

(``python scripts/tune_sgbm.py ...`` is the same command.)

Grid: block size × mode × uniqueness ratio (5 or 15) × left padding (P1/P2 follow OpenCV's 8·3·bs² / 32·3·bs²,
speckle filter and disp12MaxDiff fixed). Ranked by mean dense EPE, then bad-3; prints the table and
writes it as JSON. The winner is what ``stereo.evaluation.sgbm.SGBMParams`` defaults to.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

from tqdm import tqdm

from stereo.evaluation.sgbm import SGBMParams
from stereo.config import compose
from stereo.evaluation.methods import evaluate_method, raw_test_dataset, sgbm_method
from stereo.evaluation.reports import machine_info

GRID = {
    "block_size": (3, 5, 7),
    "mode": ("sgbm_3way", "hh"),
    "uniqueness_ratio": (5, 15),
    "pad_left": (True, False),
}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("sgbm_tuning.json"))
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for conf/train.yaml (data=..., paths.data_dir=...)")
    args = parser.parse_args(argv)
    cfg = compose("train", args.overrides)
    dataset = raw_test_dataset(cfg.data)
    results = []
    combos = list(itertools.product(*GRID.values()))
    for values in tqdm(combos, desc="SGBM grid", unit="setting"):
        params = SGBMParams(**dict(zip(GRID, values)))
        summary = evaluate_method(sgbm_method(params), dataset, progress=False)["summary"]
        results.append({"params": params.to_dict(), **{k: summary[k] for k in ("epe", "bad2", "bad3", "d1", "coverage", "seconds")}})
        tqdm.write(f"{params}: EPE {summary['epe']:.3f} bad-3 {summary['bad3']:.2f}")
    results.sort(key=lambda r: (r["epe"], r["bad3"]))
    machine = machine_info()
    print(f"machine: {machine['processor']}, {machine['torch_threads']} threads, OpenCV {machine['opencv']}")
    print(f"{len(dataset)} synthetic TEST pairs; ranked by mean EPE")
    print(f"{'bs':>3} {'mode':>10} {'uniq':>4} {'pad':>5} | {'EPE':>6} {'bad2':>6} {'bad3':>6} {'D1':>6} {'cov%':>6} {'s':>6}")
    for r in results:
        p = r["params"]
        print(f"{p['block_size']:>3} {p['mode']:>10} {p['uniqueness_ratio']:>4} {str(p['pad_left']):>5} | "
              f"{r['epe']:6.3f} {r['bad2']:6.2f} {r['bad3']:6.2f} {r['d1']:6.2f} {r['coverage']:6.1f} {r['seconds']:6.2f}")
    args.out.write_text(json.dumps({"dataset": f"synthetic TEST ({len(dataset)} pairs)", "grid": GRID,
                                    "results": results, "machine": machine,
                                    "command": "python -m stereo.evaluation.tune_sgbm " + " ".join(argv if argv is not None else sys.argv[1:])}, indent=2) + "\n")
    print(f"written: {args.out}")
    return results


if __name__ == "__main__":
    main()
