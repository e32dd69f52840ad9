"""KITTI 2012 and 2015 stereo training pairs with the split most papers use (PSMNet's).

The first 160 frames (000000–000159, ``_10`` images) train, the rest (2015: 000160–000199, 2012:
000160–000193) validate. Ground truth is ``disp_occ[_0]`` (all pixels with GT); when ``disp_noc[_0]``
exists its valid pixels become the sample's ``noc`` mask. ``root`` is the folder holding
``training/`` (or the ``training`` folder itself).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stereo.data.base import StereoPairDataset, require_files, require_nonempty
from stereo.data.pairs import FOLDER_LAYOUTS, KITTI_FRAME, StereoPair

TRAIN_FRAMES = 160


class KITTIDataset(StereoPairDataset):
    """KITTI ``year`` (2012 or 2015) training pairs of ``split`` = "train" | "val" | "all"."""

    def __init__(
        self,
        root: str | os.PathLike,
        year: int = 2015,
        split: str = "train",
        transform: Callable[[dict[str, Any]], Any] | None = None,
    ):
        if f"kitti{int(year)}" not in FOLDER_LAYOUTS:
            raise ValueError(f"KITTI year must be 2012 or 2015, got {year}")
        if split not in ("train", "val", "all"):
            raise ValueError(f"KITTI split must be train, val or all, got {split!r}")
        year = int(year)
        root = Path(root)
        training = root / "training" if (root / "training").is_dir() else root
        layout = FOLDER_LAYOUTS[f"kitti{year}"]
        left, right = training / layout.left, training / layout.right
        occ, noc = training / layout.disparity, training / layout.noc
        if not left.is_dir():
            raise FileNotFoundError(f"{left}: KITTI {year} left-image folder not found (root={root})")
        has_noc = noc.is_dir()
        records = []
        for name in sorted(os.listdir(left)):
            match = KITTI_FRAME.match(name)
            if match is None:
                continue
            number = int(match.group(1))
            if (split == "train" and number >= TRAIN_FRAMES) or (split == "val" and number < TRAIN_FRAMES):
                continue
            records.append(
                StereoPair(
                    name=f"kitti{year}/{name[:-4]}",
                    left=str(left / name),
                    right=str(right / name),
                    disparity=str(occ / name),
                    noc=str(noc / name) if has_noc else None,
                    noc_from="disparity",
                )
            )
        what = f"{root} (KITTI {year} {split})"
        require_nonempty(records, what)
        require_files(records, what)
        super().__init__(records, transform)
