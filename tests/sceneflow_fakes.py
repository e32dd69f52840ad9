"""Fake Scene Flow trees for the tests: a virtual one of the full published shape, small real ones.

Full shape: FlyingThings3D TRAIN/TEST × A,B,C × 750/150 sequences × frames 0006–0015 (the excluded
sequences included); Driving 2 focal lengths × 2 directions × fast (300 frames) / slow (800); Monkaa
24 scenes × 361 frames. The standard exclusions leave 22,390 + 4,400 + 8,664 = 35,454 train and
4,370 test pairs. Creating those 120k files takes from 4 s to minutes on a busy shared disk, so the
full shape is served from memory by replacing the indexer's three listing functions; the small trees
are real folders with the same structure (excluded sequences included).
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

import numpy as np

from stereo.data import sceneflow
from stereo.data.io import write_image, write_pfm
from stereo.data.sceneflow import STANDARD_EXCLUDED

FOLDERS = {"flyingthings3d": "FlyingThings3D", "driving": "Driving", "monkaa": "Monkaa"}
Sequences = dict[str, list[tuple[tuple[str, ...], list[str]]]]


def full_sequences() -> Sequences:
    """Relative sequence folders and frame names per subset, in the published shape."""
    ft3d_frames = [f"{i:04d}" for i in range(6, 16)]
    result: Sequences = {"flyingthings3d": [], "driving": [], "monkaa": []}
    for split, count in (("TRAIN", 750), ("TEST", 150)):
        for letter in "ABC":
            result["flyingthings3d"] += [((split, letter, f"{n:04d}"), ft3d_frames) for n in range(count)]
    for focal in ("15mm_focallength", "35mm_focallength"):
        for direction in ("scene_backwards", "scene_forwards"):
            for speed, count in (("fast", 300), ("slow", 800)):
                result["driving"].append(((focal, direction, speed), [f"{i:04d}" for i in range(1, count + 1)]))
    result["monkaa"] = [((f"scene_{s:02d}_x2",), [f"{i:04d}" for i in range(361)]) for s in range(24)]
    return result


def small_sequences(frames: int = 2) -> Sequences:
    """Same structure, few frames: every excluded FT3D sequence plus two regular ones per letter."""
    ft3d_frames = [f"{i:04d}" for i in range(6, 6 + frames)]
    result: Sequences = {"flyingthings3d": [], "driving": [], "monkaa": []}
    for split in ("TRAIN", "TEST"):
        excluded = STANDARD_EXCLUDED[split.lower()]
        for letter in "ABC":
            numbers = sorted({"0001", "0002"} | {item[2:] for item in excluded if item[0] == letter})
            result["flyingthings3d"] += [((split, letter, n), ft3d_frames) for n in numbers]
    for focal in ("15mm_focallength", "35mm_focallength"):
        for direction in ("scene_backwards", "scene_forwards"):
            for speed in ("fast", "slow"):
                result["driving"].append(((focal, direction, speed), [f"{i:04d}" for i in range(1, frames + 1)]))
    result["monkaa"] = [((scene,), [f"{i:04d}" for i in range(frames)]) for scene in ("a_rain_of_stones_x2", "eating_x2")]
    return result


def expected_counts(sequences: Sequences, split: str, files: str = "standard") -> dict[str, int]:
    """Pairs per subset the indexer must find, computed from the tree description."""
    counts: dict[str, int] = defaultdict(int)
    for subset, entries in sequences.items():
        for relative, frames in entries:
            if subset == "flyingthings3d":
                if relative[0].lower() != split or (files == "standard" and f"{relative[1]}/{relative[2]}" in STANDARD_EXCLUDED[split]):
                    continue
            elif split != "train":
                continue
            counts[subset] += len(frames)
    return dict(counts)


def _leaf_folders(sequences: Sequences, layout: str, pass_: str = "clean", right_disparity: bool = False):
    """(relative folder parts, file names) for every left/right image and disparity folder."""
    for subset, entries in sequences.items():
        for relative, frames in entries:
            if layout == "separate":
                frames_base, disparity_base = (FOLDERS[subset], f"frames_{pass_}pass"), (FOLDERS[subset], "disparity")
            else:
                prefix = () if subset == "flyingthings3d" else ("TRAIN",)
                frames_base, disparity_base = (f"frames_{pass_}pass", *prefix), ("disparity", *prefix)
            yield (*frames_base, *relative, "left"), [f"{f}.png" for f in frames]
            yield (*frames_base, *relative, "right"), [f"{f}.png" for f in frames]
            yield (*disparity_base, *relative, "left"), [f"{f}.pfm" for f in frames]
            if right_disparity:
                yield (*disparity_base, *relative, "right"), [f"{f}.pfm" for f in frames]


def install_virtual_tree(monkeypatch, root: Path, sequences: Sequences, layout: str, passes=("clean",),
                         right_disparity: bool = False) -> None:
    """Serve a tree from memory to the Scene Flow indexer (its only access to the disk is listing)."""
    subdirs: dict[str, set[str]] = defaultdict(set)
    files: dict[str, list[str]] = {}
    leaves = [leaf for pass_ in passes for leaf in _leaf_folders(sequences, layout, pass_, right_disparity)]
    for parts, names in leaves:
        path = root
        for part in parts:
            subdirs[str(path)].add(part)
            path = path / part
        subdirs.setdefault(str(path), set())
        files[str(path)] = names
    monkeypatch.setattr(sceneflow, "_subdirs", lambda path: sorted(subdirs.get(str(path), ())))
    monkeypatch.setattr(sceneflow, "_files", lambda path: files.get(str(path), [] if str(path) in subdirs else None))
    monkeypatch.setattr(sceneflow, "_is_dir", lambda path: str(path) in subdirs)


def build_tree(root: Path, sequences: Sequences, layout: str = "separate", right_disparity: bool = False,
               content: tuple[int, int] | None = None, pass_: str = "clean") -> Path:
    """Write a real tree: empty files, or with ``content=(height, width)`` tiny valid PNG/PFM files."""
    rng = np.random.default_rng(0)
    for parts, names in _leaf_folders(sequences, layout, pass_, right_disparity):
        folder = root.joinpath(*parts)
        os.makedirs(folder, exist_ok=True)
        for name in names:
            if content is None:
                os.close(os.open(folder / name, os.O_CREAT | os.O_WRONLY))
            elif name.endswith(".png"):
                write_image(folder / name, rng.integers(0, 256, (*content, 3), dtype=np.uint8))
            else:
                write_pfm(folder / name, rng.uniform(0, 8, content).astype(np.float32))
    return root
