"""Check a Scene Flow download: counts against the published lists, missing and unreadable files.

A Hydra command (options and their defaults: conf/check.yaml)::

    python -m stereo.data.check root=/data/sceneflow [passes=[clean,final]] [subsets=[flyingthings3d]]
                                [verify=true] [workers=4] [limit=200]

``verify=true`` also opens every image and disparity map to find truncated or corrupt files and
left/right/GT size mismatches. Exit code 0 when every checked split holds exactly the published
standard counts and nothing is missing or unreadable; 1 otherwise; 2 for bad arguments (one line).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from typing import Any

from omegaconf import DictConfig
from tqdm import tqdm

from stereo.cli import command

from stereo.data.base import load_record
from stereo.data.pairs import StereoPair
from stereo.data.sceneflow import PASSES, PUBLISHED_COUNTS, SPLITS, SUBSETS, index_sceneflow, locate_subset



@dataclass
class CheckReport:
    rows: list[tuple[str, str, str, int, int, int | None]] = field(default_factory=list)  # pass, split, subset, standard, on disk, published
    problems: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        counts_match = all(published is None or standard == published for *_, standard, _, published in self.rows)
        return counts_match and bool(self.rows) and not self.problems and not self.unreadable


def _names(value: Any, key: str, known: Sequence[str]) -> list[str]:
    """A list option given as a list or as one name; every name must be one of ``known``."""
    names = [value] if isinstance(value, str) else list(value)
    for name in names:
        if name not in known:
            raise ValueError(f"{key}: {name!r} is not one of {', '.join(known)}")
    return names


def _verify_one(record: StereoPair) -> str | None:
    try:
        load_record(record)
    except Exception as error:  # noqa: BLE001 - every failure is reported, none is fatal here
        return f"{record.name}: {error}"
    return None


def check_sceneflow(
    root: str | os.PathLike,
    passes: Sequence[str] | None = None,
    subsets: Sequence[str] = SUBSETS,
    verify: bool = False,
    workers: int | None = None,
) -> CheckReport:
    """Index every split of every pass (right-view GT included) and, with ``verify``, read every file."""
    root = Path(root)
    if passes is None:
        passes = [p for p in PASSES if any(locate_subset(root, s, p) for s in subsets)] or list(PASSES)
    report = CheckReport()
    to_verify: list[StereoPair] = []
    for pass_ in passes:
        for split in SPLITS:
            split_subsets = [s for s in subsets if s in PUBLISHED_COUNTS[split]]
            if not split_subsets:
                continue
            # Counts are of usable pairs (left/right image + left GT); a missing right-view GT is
            # reported as a problem but does not hide the pair from the counts.
            standard_counts = index_sceneflow(root, split, "standard", pass_, split_subsets).counts()
            usable = index_sceneflow(root, split, "all", pass_, split_subsets)
            disk_counts = usable.counts()
            on_disk = index_sceneflow(root, split, "all", pass_, split_subsets, right_disparity=True)
            for subset in split_subsets:
                report.rows.append((pass_, split, subset, standard_counts.get(subset, 0),
                                    disk_counts.get(subset, 0), PUBLISHED_COUNTS[split][subset]))
            report.problems.extend(f"{pass_}pass {split}: {problem}" for problem in on_disk.problems)
            # Verify every usable pair, with its right-view GT where that exists.
            complete = {record.name for record in on_disk.records}
            to_verify.extend(on_disk.records)
            to_verify.extend(record for record in usable.records if record.name not in complete)
    if verify and to_verify:
        workers = workers or os.cpu_count() or 1
        progress = dict(total=len(to_verify), desc="reading files", unit="pair")
        if workers == 1:
            report.unreadable = [r for r in tqdm(map(_verify_one, to_verify), **progress) if r]
        else:
            with ProcessPoolExecutor(workers) as pool:
                results = pool.map(_verify_one, to_verify, chunksize=32)
                report.unreadable = [r for r in tqdm(results, **progress) if r]
    return report


def format_report(report: CheckReport, limit: int = 200) -> str:
    lines = [f"{'pass':<6} {'split':<6} {'subset':<15} {'standard':>9} {'on disk':>9} {'published':>9}  status"]
    for pass_, split, subset, standard, on_disk, published in report.rows:
        status = "ok" if standard == published else f"MISMATCH ({standard - published:+d})"
        lines.append(f"{pass_:<6} {split:<6} {subset:<15} {standard:>9,} {on_disk:>9,} {published:>9,}  {status}")
    by_key = {}
    for pass_, split, _, standard, _, published in report.rows:
        total = by_key.setdefault((pass_, split), [0, 0])
        total[0], total[1] = total[0] + standard, total[1] + published
    for (pass_, split), (standard, published) in by_key.items():
        lines.append(f"{pass_:<6} {split:<6} {'total':<15} {standard:>9,} {'':>9} {published:>9,}")
    for title, items in (("missing", report.problems), ("unreadable", report.unreadable)):
        if items:
            lines.append(f"\n{len(items)} {title}:")
            shown = items if limit <= 0 else items[:limit]
            lines.extend(f"  {item}" for item in shown)
            if len(shown) < len(items):
                lines.append(f"  … and {len(items) - len(shown)} more (limit=0 lists all)")
    lines.append("\nOK: matches the published standard split" if report.ok else "\nFAILED: see above")
    return "\n".join(lines)


def run(cfg: DictConfig) -> int:
    """Check the tree ``cfg`` names, print the report; 0 when it matches the published split, else 1."""
    passes = _names(cfg.passes, "passes", PASSES) if cfg.passes is not None else None
    subsets = _names(cfg.subsets, "subsets", SUBSETS)
    workers = int(cfg.workers) if cfg.workers is not None else None
    report = check_sceneflow(str(cfg.root), passes, subsets, bool(cfg.verify), workers)
    print(format_report(report, int(cfg.limit)))
    return 0 if report.ok else 1


@command("check")
def main(cfg: DictConfig) -> None:
    sys.exit(run(cfg))


if __name__ == "__main__":
    main()
