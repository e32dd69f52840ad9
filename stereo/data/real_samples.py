"""Every real pair with ground truth in the shared sample folder, each read with its documented encoding.

The folder (``../shared/data/real`` beside the checkout, or ``$STEREO_REAL_DATA``) holds single
samples copied from public repositories (see its SOURCES.md). Disparity-only entries (Scene Flow
Driving/Monkaa samplers) have no images and are skipped. Used to evaluate on real pairs.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stereo.data.base import StereoPairDataset
from stereo.data.kitti import KITTIDataset
from stereo.data.middlebury import LegacyMiddleburyDataset
from stereo.data.pairs import StereoPair
from stereo.data.sceneflow import SceneFlowDataset


def default_real_data_dir() -> Path:
    """``$STEREO_REAL_DATA`` or ``shared/data/real`` beside the repository checkout."""
    return Path(os.environ.get("STEREO_REAL_DATA", Path(__file__).resolve().parents[3] / "shared" / "data" / "real"))


def _sceneflow_sttr_sample(folder: Path) -> StereoPair:
    """STTR's copy keeps left/right in sibling folders under one file name, with occlusion maps."""
    name = f"{folder.name}.png"
    return StereoPair(
        name=f"flyingthings3d/{folder.name}",
        left=str(folder / "RGB_cleanpass" / "left" / name),
        right=str(folder / "RGB_cleanpass" / "right" / name),
        disparity=str(folder / "disparity" / "left" / f"{folder.name}.pfm"),
        disparity_right=str(folder / "disparity" / "right" / f"{folder.name}.pfm"),
        noc=str(folder / "occlusion" / "left" / name),
        noc_from="occlusion",
    )


def load_real_samples(
    root: str | os.PathLike | None = None, transform: Callable[[dict[str, Any]], Any] | None = None
) -> StereoPairDataset:
    """One dataset over all real pairs: Scene Flow (2), KITTI 2012/2015, Middlebury 2001–2006 (6)."""
    root = Path(root) if root is not None else default_real_data_dir()
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: real sample folder not found (set STEREO_REAL_DATA)")
    ft3d = root / "sceneflow_flyingthings3d"
    records = [_sceneflow_sttr_sample(ft3d / "A-0032-0006")]
    records += SceneFlowDataset(ft3d / "TEST_A_0000_0006", split="test", files="all",
                                subsets=["flyingthings3d"]).records
    records += KITTIDataset(root / "kitti2012" / "000000_10", year=2012, split="all").records
    records += KITTIDataset(root / "kitti2015" / "000046_10", year=2015, split="all").records
    for year in ("2001", "2003", "2005", "2006"):
        records += LegacyMiddleburyDataset(root / f"middlebury{year}", size="half", right_disparity=True,
                                           prefix=f"middlebury{year}").records
    return StereoPairDataset(records, transform)
