"""Tiny KITTI / MiddEval3 / ETH3D folder trees made from the real samples (shared/data/real).

Each benchmark's official layout, training or testing side, with the real images linked (never
copied into the repository) under several frame numbers or scene names. Middlebury and ETH3D GT is
converted from the 2003 Cones sample (8-bit, value / 4, 0 = unknown) to their PFM (inf = unknown).
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from stereo.data.io import read_disparity, read_image, write_image, write_pfm

KITTI_SAMPLES = {  # year -> (sample folder, left, right, GT all pixels)
    2015: ("kitti2015/000046_10/training", "image_2", "image_3", "disp_occ_0"),
    2012: ("kitti2012/000000_10/training", "colored_0", "colored_1", "disp_occ"),
}


def kitti_tree(real: Path, root: Path, year: int, frames: list[int], side: str = "training") -> Path:
    """``root/<side>/{left,right[,gt]}/<frame>_10.png`` for each frame number (the same real pair)."""
    sample, *folders = KITTI_SAMPLES[year]
    source = real / sample
    for folder in folders if side == "training" else folders[:2]:
        (root / side / folder).mkdir(parents=True, exist_ok=True)
        for frame in frames:
            os.symlink(source / folder / "000046_10.png" if year == 2015 else source / folder / "000000_10.png",
                       root / side / folder / f"{frame:06d}_10.png")
    return root


def _cones(real: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    folder = real / "middlebury2003" / "cones"
    disparity, valid = read_disparity(folder / "disp2.png", scale=4)
    return read_image(folder / "im2.png"), read_image(folder / "im6.png"), np.where(valid, disparity, np.inf)


def _calib(path: Path, width: int, height: int, ndisp: int) -> None:
    path.write_text(f"cam0=[1000 0 {width / 2}; 0 1000 {height / 2}; 0 0 1]\n"
                    f"cam1=[1000 0 {width / 2}; 0 1000 {height / 2}; 0 0 1]\n"
                    f"doffs=0\nbaseline=100\nwidth={width}\nheight={height}\nndisp={ndisp}\n")


def middlebury_tree(real: Path, root: Path, scenes: dict[str, int], folder: str = "trainingH") -> Path:
    """``root/MiddEval3/<folder>/<scene>/{im0,im1}.png + calib.txt`` (+ disp0GT.pfm for training);
    ``scenes`` maps each scene name to its calib.txt ndisp."""
    left, right, gt = _cones(real)
    for scene, ndisp in scenes.items():
        path = root / "MiddEval3" / folder / scene
        path.mkdir(parents=True)
        write_image(path / "im0.png", left)
        write_image(path / "im1.png", right)
        _calib(path / "calib.txt", left.shape[1], left.shape[0], ndisp)
        if folder.startswith("training"):
            write_pfm(path / "disp0GT.pfm", gt)
    return root


def eth3d_tree(real: Path, root: Path, scenes: list[str], side: str = "training") -> Path:
    """``root/two_view_<side>/<scene>/{im0,im1}.png + calib.txt`` (grey, as ETH3D ships them),
    + ``two_view_training_gt/<scene>/disp0GT.pfm`` for training."""
    left, right, gt = _cones(real)
    for scene in scenes:
        path = root / f"two_view_{side}" / scene
        path.mkdir(parents=True)
        write_image(path / "im0.png", cv2.cvtColor(left, cv2.COLOR_RGB2GRAY))
        write_image(path / "im1.png", cv2.cvtColor(right, cv2.COLOR_RGB2GRAY))
        _calib(path / "calib.txt", left.shape[1], left.shape[0], 64)
        if side == "training":
            (root / "two_view_training_gt" / scene).mkdir(parents=True)
            write_pfm(root / "two_view_training_gt" / scene / "disp0GT.pfm", gt)
    return root
