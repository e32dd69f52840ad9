"""Middlebury stereo: the 2014 / MiddEval3 layout, and the older 2001–2006 sets.

MiddEval3 (v3 evaluation): ``root/training{F,H,Q}/<scene>/{im0.png, im1.png, disp0GT.pfm,
mask0nocc.png, calib.txt}`` — F full, H half, Q quarter resolution; ``inf`` in the PFM marks unknown
pixels; ``mask0nocc.png`` is 255 where non-occluded. ``root`` may be the ``MiddEval3`` folder or its
parent. A folder of Middlebury 2014 scenes (``<scene>-perfect/{im0,im1}.png, disp0.pfm``) is read
too when no ``training<R>`` folder is there. There is no official validation split: the training
scenes are the usual evaluation set.

Older sets store 8-bit disparities whose scale differs per set (see ``LegacyMiddleburyDataset``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from stereo.calibration.readers import read_middlebury
from stereo.data.base import StereoPairDataset, require_files, require_nonempty
from stereo.data.io import Calibration
from stereo.data.pairs import SCENE, StereoPair

RESOLUTIONS = ("F", "H", "Q")


def _scene_folders(folder: Path) -> list[str]:
    return sorted(entry.name for entry in os.scandir(folder) if entry.is_dir())


class MiddleburyDataset(StereoPairDataset):
    """MiddEval3 training scenes at ``resolution`` F, H or Q (optionally only ``scenes``)."""

    def __init__(
        self,
        root: str | os.PathLike,
        resolution: str = "H",
        scenes: Sequence[str] | None = None,
        transform: Callable[[dict[str, Any]], Any] | None = None,
    ):
        resolution = str(resolution).upper()
        if resolution not in RESOLUTIONS:
            raise ValueError(f"Middlebury resolution must be F, H or Q, got {resolution!r}")
        root = Path(root)
        if (root / "MiddEval3").is_dir():
            root = root / "MiddEval3"
        folder = root / f"training{resolution}"
        if not folder.is_dir():
            folder = root  # a plain folder of Middlebury 2014 scenes
        if not folder.is_dir():
            raise FileNotFoundError(f"{root}: Middlebury folder not found")
        available = _scene_folders(folder)
        unknown = sorted(set(scenes or ()) - set(available))
        if unknown:
            raise FileNotFoundError(f"{folder}: no scene(s) {', '.join(unknown)}")
        records = []
        for scene in scenes or available:
            path = folder / scene
            gt = path / SCENE.disparity if (path / SCENE.disparity).is_file() else path / SCENE.disparity_perfect
            mask = path / SCENE.noc
            records.append(
                StereoPair(
                    name=f"middlebury/{resolution}/{scene}",
                    left=str(path / SCENE.left),
                    right=str(path / SCENE.right),
                    disparity=str(gt),
                    noc=str(mask) if mask.is_file() else None,
                )
            )
        what = f"{folder} (Middlebury)"
        require_nonempty(records, what)
        require_files(records, what)
        super().__init__(records, transform)

    def calibration(self, index: int) -> Calibration:
        """The scene's ``calib.txt`` (focal, baseline, doffs, ndisp …), e.g. for depth or ndisp."""
        return read_middlebury(Path(self.records[index].left).parent / SCENE.calib).depth_geometry()


# Older sets: (left, right, left GT, right GT) file stems; the extension may be .png, .ppm or .pgm.
_LEGACY_NAMES = (
    ("scene1.row3.col3", "scene1.row3.col4", "truedisp.row3.col3", None),  # Tsukuba (2001)
    ("im2", "im6", "disp2", "disp6"),  # 2001 (Venus, Sawtooth, …) and 2003 (Cones, Teddy)
    ("view1", "view5", "disp1", "disp5"),  # 2005 / 2006
)
# GT disparity = stored value / scale. 2001: ×8 (Tsukuba ×16); 2003 quarter size: ×4.
LEGACY_SCALES = {"tsukuba": 16, "venus": 8, "sawtooth": 8, "bull": 8, "poster": 8, "barn1": 8, "barn2": 8,
                 "map": 8, "cones": 4, "teddy": 4}
# 2005/2006 GT is in full-size pixels whatever the image size, so the scale follows the size.
SIZE_SCALES = {"full": 1, "half": 2, "third": 3}
_EXTENSIONS = (".png", ".ppm", ".pgm")


class LegacyMiddleburyDataset(StereoPairDataset):
    """Middlebury 2001/2003/2005/2006 scenes in ``root`` (one folder per scene, original file names).

    The GT scale comes from the scene name (``LEGACY_SCALES``) or, for the 2005/2006 ``view1/view5``
    sets, from ``size`` ("full", "half" — the common download — or "third"). ``scale`` overrides both.
    ``right_disparity=True`` adds the right-view GT where the set has one.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        scenes: Sequence[str] | None = None,
        size: str = "half",
        scale: float | None = None,
        right_disparity: bool = False,
        prefix: str = "middlebury",
        transform: Callable[[dict[str, Any]], Any] | None = None,
    ):
        root = Path(root)
        if size not in SIZE_SCALES:
            raise ValueError(f"size must be one of {', '.join(SIZE_SCALES)}, got {size!r}")
        if not root.is_dir():
            raise FileNotFoundError(f"{root}: Middlebury folder not found")
        records = []
        for scene in scenes or _scene_folders(root):
            folder = root / scene
            files = {name.rsplit(".", 1)[0]: name for name in os.listdir(folder) if name.lower().endswith(_EXTENSIONS)}
            names = next((names for names in _LEGACY_NAMES if names[0] in files and names[2] in files), None)
            if names is None:
                raise FileNotFoundError(f"{folder}: no Middlebury image/GT files (im2/im6/disp2, view1/view5/disp1, …)")
            if scale is not None:
                scene_scale = scale
            elif names[0] == "view1":
                scene_scale = SIZE_SCALES[size]
            elif scene.lower() in LEGACY_SCALES:
                scene_scale = LEGACY_SCALES[scene.lower()]
            else:
                raise ValueError(f"{folder}: unknown GT scale for scene {scene!r}; pass scale=")
            left, right, gt, gt_right = names
            records.append(
                StereoPair(
                    name=f"{prefix}/{scene}",
                    left=str(folder / files[left]),
                    right=str(folder / files.get(right, right + ".png")),
                    disparity=str(folder / files[gt]),
                    disparity_scale=float(scene_scale),
                    disparity_right=str(folder / files.get(gt_right, f"{gt_right}.png"))
                    if right_disparity and gt_right is not None
                    else None,
                )
            )
        what = f"{root} (Middlebury 2001–2006)"
        require_nonempty(records, what)
        require_files(records, what)
        super().__init__(records, transform)
