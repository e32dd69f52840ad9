"""ETH3D two-view training pairs (grey images, returned as 3 equal channels).

Layout: ``root/two_view_training/<scene>/{im0,im1}.png`` (+ ``calib.txt``) and
``root/two_view_training_gt/<scene>/{disp0GT.pfm,mask0nocc.png}``. ETH3D has no official validation
split; all 27 training scenes are the usual evaluation set (bad-1.0 is its headline metric).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from stereo.data.base import StereoPairDataset, require_files, require_nonempty
from stereo.data.pairs import SCENE, StereoPair


class ETH3DDataset(StereoPairDataset):
    """ETH3D two-view training scenes (optionally only ``scenes``)."""

    def __init__(
        self,
        root: str | os.PathLike,
        scenes: Sequence[str] | None = None,
        transform: Callable[[dict[str, Any]], Any] | None = None,
    ):
        root = Path(root)
        images, gt = root / "two_view_training", root / "two_view_training_gt"
        if not images.is_dir():
            raise FileNotFoundError(f"{images}: ETH3D two_view_training folder not found (root={root})")
        available = sorted(entry.name for entry in os.scandir(images) if entry.is_dir())
        unknown = sorted(set(scenes or ()) - set(available))
        if unknown:
            raise FileNotFoundError(f"{images}: no scene(s) {', '.join(unknown)}")
        records = []
        for scene in scenes or available:
            mask = gt / scene / SCENE.noc
            records.append(
                StereoPair(
                    name=f"eth3d/{scene}",
                    left=str(images / scene / SCENE.left),
                    right=str(images / scene / SCENE.right),
                    disparity=str(gt / scene / SCENE.disparity),
                    noc=str(mask) if mask.is_file() else None,
                )
            )
        what = f"{root} (ETH3D two-view training)"
        require_nonempty(records, what)
        require_files(records, what)
        super().__init__(records, transform)
