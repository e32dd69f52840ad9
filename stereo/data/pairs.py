"""One stereo pair type and one table of the datasets' folder layouts.

The dataset readers (``stereo.data``), the inference inputs (``stereo.inference.inputs``) and the
benchmark submissions (``stereo.evaluation.submission``) all find the same kinds of folders and hand
on the same thing: a :class:`StereoPair`. The folder and file names of each layout are written here
once, so a reader, ``stereo.infer input_dir=`` and ``stereo.submit`` can never disagree on them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class StereoPair:
    """Files of one stereo pair. ``name`` names it in outputs and messages (a dataset's sample name, an
    inference output's file stem, a benchmark frame or scene). Paths are strings as found on disk: a
    Scene Flow index holds 35 000 pairs and builds their paths by joining strings.

    Ground truth, where there is some: ``disparity`` (divided by ``disparity_scale`` when the format
    stores scaled integers), ``disparity_right``, and ``noc``, the non-occluded pixels, read as
    ``noc_from`` says: "mask" (Middlebury/ETH3D ``mask0nocc.png``, 255 = non-occluded), "occlusion"
    (Scene Flow occlusion maps, non-zero = occluded) or "disparity" (KITTI ``disp_noc``: its valid
    pixels). ``calib``: the scene's ``calib.txt`` when one sits beside the images; ``max_disp``: the
    pair's own search range (a benchmark scene's ``ndisp``; None = the network's)."""

    name: str
    left: str
    right: str
    disparity: str | None = None
    disparity_scale: float | None = None
    noc: str | None = None
    noc_from: str = "mask"
    disparity_right: str | None = None
    calib: str | None = None
    max_disp: int | None = None


@dataclass(frozen=True)
class FolderLayout:
    """Pairs in sibling folders matched by file name: the folders of the left and right images and of
    the ground truth, all pixels with GT (``disparity``) and the non-occluded ones (``noc``)."""

    left: str
    right: str
    disparity: str | None = None
    noc: str | None = None


# In the order inference looks for them in an input folder.
FOLDER_LAYOUTS = {
    "left_right": FolderLayout("left", "right"),
    "kitti2015": FolderLayout("image_2", "image_3", "disp_occ_0", "disp_noc_0"),
    "kitti2012": FolderLayout("colored_0", "colored_1", "disp_occ", "disp_noc"),
}
# A KITTI stereo frame: the ``_10`` image of a six-digit frame number (group 1).
KITTI_FRAME = re.compile(r"^(\d{6})_10\.png$")


@dataclass(frozen=True)
class SceneLayout:
    """One folder per scene, the same file names in each (Middlebury 2014 / MiddEval3, ETH3D two-view;
    ETH3D keeps ``disparity`` and ``noc`` in a parallel ``_gt`` tree). ``disparity_perfect``: the
    ground truth's name in Middlebury 2014's full download (``<scene>-perfect/``)."""

    left: str = "im0.png"
    right: str = "im1.png"
    disparity: str = "disp0GT.pfm"
    disparity_perfect: str = "disp0.pfm"
    noc: str = "mask0nocc.png"
    calib: str = "calib.txt"


SCENE = SceneLayout()
