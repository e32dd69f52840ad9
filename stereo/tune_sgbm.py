"""Choose StereoSGBM's few free parameters on the *synthetic* TEST split (never on the real pairs).

    python -m stereo.tune_sgbm [output=sgbm_tuning.json] [paths.data_dir=data] [data.*=...]   (conf/tune_sgbm.yaml)

Grid (``grid`` in the config, every combination of its lists): block size × mode × uniqueness ratio ×
left padding (P1/P2 follow OpenCV's 8·3·bs² / 32·3·bs², speckle filter and disp12MaxDiff fixed).
Ranked by mean dense EPE, then bad-3; prints the table and writes it as JSON. The winner of the
default grid is what ``stereo.evaluation.sgbm.SGBMParams`` defaults to.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from stereo.cli import command
from stereo.evaluation.methods import evaluate_method, raw_test_dataset, sgbm_method
from stereo.evaluation.reports import command_line, machine_info
from stereo.evaluation.sgbm import SGBMParams

def run(cfg: DictConfig) -> list[dict]:
    """Score every grid setting, print the ranking and write it to ``cfg.output``."""
    grid = OmegaConf.to_container(cfg.grid, resolve=True)
    dataset = raw_test_dataset(cfg.data)
    results = []
    combos = list(itertools.product(*grid.values()))
    for values in tqdm(combos, desc="SGBM grid", unit="setting"):
        params = SGBMParams(**dict(zip(grid, values)))
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
    out = Path(cfg.output)
    out.write_text(json.dumps({"dataset": f"synthetic TEST ({len(dataset)} pairs)", "grid": grid, "results": results,
                               "machine": machine, "command": command_line("stereo.tune_sgbm")}, indent=2) + "\n")
    print(f"written: {out}")
    return results


@command("tune_sgbm")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
