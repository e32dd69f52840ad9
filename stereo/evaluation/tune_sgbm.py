"""Choose StereoSGBM's few free parameters on the *synthetic* TEST split (never on the real pairs).

    python scripts/tune_sgbm.py [--out sgbm_tuning.json] [hydra overrides of conf/train.yaml, e.g. paths.data_dir=data]

Grid: block size × mode × uniqueness ratio (5 or 15) × left padding (P1/P2 follow OpenCV's 8·3·bs² / 32·3·bs²,
speckle filter and disp12MaxDiff fixed). Ranked by mean dense EPE, then bad-3; prints the table and
writes it as JSON. The winner is what ``stereo.baselines.SGBMParams`` defaults to.
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import sys
from pathlib import Path

import cv2
import hydra
import torch
from tqdm import tqdm

from stereo.baselines import SGBMParams
from stereo.config import CONFIG_DIR
from stereo.evaluation.pairs import evaluate_method, raw_test_dataset, sgbm_method

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
    with hydra.initialize_config_dir(version_base="1.3", config_dir=CONFIG_DIR):
        cfg = hydra.compose("train", overrides=args.overrides)
    dataset = raw_test_dataset(cfg.data)
    results = []
    combos = list(itertools.product(*GRID.values()))
    for values in tqdm(combos, desc="SGBM grid", unit="setting"):
        params = SGBMParams(**dict(zip(GRID, values)))
        summary = evaluate_method(sgbm_method(params), dataset, progress=False)["summary"]
        results.append({"params": params.to_dict(), **{k: summary[k] for k in ("epe", "bad2", "bad3", "d1", "coverage", "seconds")}})
        tqdm.write(f"{params}: EPE {summary['epe']:.3f} bad-3 {summary['bad3']:.2f}")
    results.sort(key=lambda r: (r["epe"], r["bad3"]))
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, OpenCV {cv2.__version__}")
    print(f"{len(dataset)} synthetic TEST pairs; ranked by mean EPE")
    print(f"{'bs':>3} {'mode':>10} {'uniq':>4} {'pad':>5} | {'EPE':>6} {'bad2':>6} {'bad3':>6} {'D1':>6} {'cov%':>6} {'s':>6}")
    for r in results:
        p = r["params"]
        print(f"{p['block_size']:>3} {p['mode']:>10} {p['uniqueness_ratio']:>4} {str(p['pad_left']):>5} | "
              f"{r['epe']:6.3f} {r['bad2']:6.2f} {r['bad3']:6.2f} {r['d1']:6.2f} {r['coverage']:6.1f} {r['seconds']:6.2f}")
    args.out.write_text(json.dumps({"dataset": f"synthetic TEST ({len(dataset)} pairs)", "grid": GRID,
                                    "results": results, "command": " ".join(sys.argv)}, indent=2) + "\n")
    print(f"written: {args.out}")
    return results


if __name__ == "__main__":
    main()
