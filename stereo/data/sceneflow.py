"""Scene Flow (FlyingThings3D, Driving, Monkaa): find the frames of a split, in any common layout.

Indexing only lists folders (``os.scandir``), never opens an image, so the full 40k-pair set is
indexed in seconds. Missing right images or ground truth are found at index time and reported
with their paths, instead of surfacing as a crash hours into training.

Accepted layouts (``root`` is the folder you pass), per subset and pass:

* separate roots: ``root/FlyingThings3D/frames_cleanpass/{TRAIN,TEST}/{A,B,C}/NNNN/{left,right}/*.png``
  with ``root/FlyingThings3D/disparity/...``; ``root/Driving/frames_cleanpass/{15mm,35mm}_focallength/
  scene_{backwards,forwards}/{fast,slow}/{left,right}/``; ``root/Monkaa/frames_cleanpass/<scene>/{left,right}/``
  (folder names matched case-insensitively);
* download folders: ``root/<subset>__frames_cleanpass[/frames_cleanpass]`` and
  ``root/<subset>__disparity[/disparity]`` (``<subset>`` = flyingthings3d, driving or monkaa; one or
  two underscores), i.e. each archive extracted into a folder named after it;
* merged: ``root/frames_cleanpass/TRAIN/{A,B,C,15mm_focallength,35mm_focallength,<monkaa scenes>}``,
  ``root/frames_cleanpass/TEST/{A,B,C}`` and ``root/disparity/...`` alike.

The first layout that has a subset's frames is used for that subset. Images may be PNG or WebP
(the WebP archives' ``frames_<pass>pass_webp`` folder name is accepted in place of ``frames_<pass>pass``).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stereo.data.base import StereoPairDataset, require_nonempty
from stereo.data.io import DataError
from stereo.data.pairs import StereoPair

SUBSETS = ("flyingthings3d", "driving", "monkaa")
PASSES = ("clean", "final")
SPLITS = ("train", "test")
FT3D_LETTERS = ("A", "B", "C")
IMAGE_EXTENSIONS = (".png", ".webp")

# FlyingThings3D sequences that the standard lists (DispNet/PSMNet/GwcNet…) leave out.
STANDARD_EXCLUDED = {
    "train": frozenset("A/0018 A/0132 A/0653 A/0676 B/0018 B/0172 B/0316 B/0400 C/0398 C/0419 C/0651".split()),
    "test": frozenset(
        "A/0004 A/0072 A/0084 A/0096 A/0139 A/0142 B/0031 B/0115 B/0132 C/0018 C/0043 C/0074 C/0142".split()
    ),
}
# Left frames in the standard lists: train 35,454, test 4,370 (Driving and Monkaa are train-only).
PUBLISHED_COUNTS = {
    "train": {"flyingthings3d": 22390, "monkaa": 8664, "driving": 4400},
    "test": {"flyingthings3d": 4370},
}


@dataclass(frozen=True)
class SubsetLocation:
    """Where one subset's frames and disparities of one pass live. For FlyingThings3D ``frames``
    holds ``TRAIN/`` and ``TEST/``; for Driving and Monkaa it holds their sequence folders."""

    subset: str
    frames: Path
    disparity: Path
    layout: str


@dataclass
class SceneFlowIndex:
    """Result of indexing: the records found, and every problem (missing file or folder) met."""

    records: list[StereoPair] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return dict(Counter(record.name.split("/", 1)[0] for record in self.records))


def _subdirs(path: Path) -> list[str]:
    try:
        with os.scandir(path) as entries:
            return sorted(entry.name for entry in entries if entry.is_dir())
    except (FileNotFoundError, NotADirectoryError):
        return []


def _files(path: Path) -> list[str] | None:
    """File names in a folder, or None if the folder does not exist."""
    try:
        with os.scandir(path) as entries:
            return sorted(entry.name for entry in entries if not entry.is_dir())
    except (FileNotFoundError, NotADirectoryError):
        return None


def _is_dir(path: Path) -> bool:
    return os.path.isdir(path)


def _descend(path: Path, name: str) -> Path:
    return path / name if _is_dir(path / name) else path


def locate_subset(root: Path, subset: str, pass_: str) -> SubsetLocation | None:
    """Find ``subset``'s ``pass_`` frames under ``root`` in one of the accepted layouts."""
    for frames_name in (f"frames_{pass_}pass", f"frames_{pass_}pass_webp"):
        location = _locate_frames(root, subset, frames_name)
        if location is not None:
            return location
    return None


def _locate_frames(root: Path, subset: str, frames_name: str) -> SubsetLocation | None:
    by_lower = {name.lower().replace("__", "_"): name for name in _subdirs(root)}
    if subset in by_lower:
        folder = root / by_lower[subset]
        if _is_dir(folder / frames_name):
            return SubsetLocation(subset, folder / frames_name, folder / "disparity", "separate")
    download = by_lower.get(f"{subset}_{frames_name}")
    if download is not None:
        disparity = by_lower.get(f"{subset}_disparity", f"{subset}__disparity")
        return SubsetLocation(
            subset, _descend(root / download, frames_name), _descend(root / disparity, "disparity"), "download"
        )
    merged = root / frames_name
    if subset == "flyingthings3d":
        if any(set(_subdirs(merged / split)) & set(FT3D_LETTERS) for split in ("TRAIN", "TEST")):
            return SubsetLocation(subset, merged, root / "disparity", "merged")
    elif any(_belongs_to(subset, name) for name in _subdirs(merged / "TRAIN")):
        return SubsetLocation(subset, merged / "TRAIN", root / "disparity" / "TRAIN", "merged")
    return None


def _belongs_to(subset: str, top_folder: str) -> bool:
    """Which subset a folder under a merged ``TRAIN/`` belongs to."""
    if top_folder in FT3D_LETTERS:
        return subset == "flyingthings3d"
    if top_folder.endswith("_focallength"):
        return subset == "driving"
    return subset == "monkaa"


def _sequences(location: SubsetLocation, split: str) -> Iterable[tuple[str, ...]]:
    """Relative sequence folders (each holding left/ and right/) of a subset's split."""
    if location.subset == "flyingthings3d":
        split_folder = split.upper()
        for letter in _subdirs(location.frames / split_folder):
            if letter in FT3D_LETTERS:
                for sequence in _subdirs(location.frames / split_folder / letter):
                    yield (split_folder, letter, sequence)
    elif split == "train":
        for top in _subdirs(location.frames):
            if not _belongs_to(location.subset, top):
                continue
            if location.subset == "monkaa":
                yield (top,)
            else:  # driving: focal length / direction / speed
                for direction in _subdirs(location.frames / top):
                    for speed in _subdirs(location.frames / top / direction):
                        yield (top, direction, speed)


def _index_sequence(
    location: SubsetLocation, relative: tuple[str, ...], right_disparity: bool, index: SceneFlowIndex
) -> None:
    frames = location.frames.joinpath(*relative)
    disparity = location.disparity.joinpath(*relative)
    left_files = _files(frames / "left")
    if left_files is None:
        index.problems.append(f"{frames / 'left'}: missing folder")
        return
    images = [name for name in left_files if name.lower().endswith(IMAGE_EXTENSIONS)]
    if not images:
        index.problems.append(f"{frames / 'left'}: no PNG/WebP images")
        return
    listings = {"right image": (frames / "right", set(_files(frames / "right") or ()))}
    listings["left disparity"] = (disparity / "left", set(_files(disparity / "left") or ()))
    if right_disparity:
        listings["right disparity"] = (disparity / "right", set(_files(disparity / "right") or ()))
    name_prefix = "/".join((location.subset, *relative))
    # Plain string paths: Path arithmetic per frame would dominate indexing 40k pairs.
    left_folder, right_folder = str(frames / "left"), str(frames / "right")
    disparity_left, disparity_right = str(disparity / "left"), str(disparity / "right")
    for image in images:
        stem = image.rsplit(".", 1)[0]
        wanted = {"right image": image, "left disparity": f"{stem}.pfm", "right disparity": f"{stem}.pfm"}
        missing = [
            f"{folder / wanted[what]}: missing {what} for {frames / 'left' / image}"
            for what, (folder, names) in listings.items()
            if wanted[what] not in names
        ]
        if missing:
            index.problems.extend(missing)
            continue
        index.records.append(
            StereoPair(
                name=f"{name_prefix}/{stem}",
                left=f"{left_folder}{os.sep}{image}",
                right=f"{right_folder}{os.sep}{image}",
                disparity=f"{disparity_left}{os.sep}{stem}.pfm",
                disparity_right=f"{disparity_right}{os.sep}{stem}.pfm" if right_disparity else None,
            )
        )


def _check_choice(value: str, choices: Sequence[str], what: str) -> str:
    value = str(value).lower()
    if value not in choices:
        raise ValueError(f"{what} must be one of {', '.join(choices)}, got {value!r}")
    return value


def index_sceneflow(
    root: str | os.PathLike,
    split: str = "train",
    files: str = "standard",
    passes: str = "clean",
    subsets: Sequence[str] = SUBSETS,
    right_disparity: bool = False,
) -> SceneFlowIndex:
    """List the pairs of a split without opening any file; problems are collected, not raised."""
    root = Path(root)
    split = _check_choice(split, SPLITS, "split")
    pass_ = _check_choice(passes, PASSES, "passes")
    subsets = [_check_choice(subset, SUBSETS, "each of subsets") for subset in subsets]
    list_file = None if str(files) in ("standard", "all") else Path(files)
    splits = SPLITS if list_file is not None else (split,)
    index = SceneFlowIndex()
    if not _is_dir(root):
        index.problems.append(f"{root}: Scene Flow root folder does not exist")
        return index
    for subset in subsets:
        if subset != "flyingthings3d" and splits == ("test",):
            continue  # Driving and Monkaa have no test split
        location = locate_subset(root, subset, pass_)
        if location is None:
            index.problems.append(
                f"{root}: no {subset} {pass_}pass frames found (see stereo.data.sceneflow for the accepted "
                f"layouts; pass subsets=[...] to use only the subsets you downloaded)"
            )
            continue
        if not _is_dir(location.disparity):
            index.problems.append(f"{location.disparity}: missing {subset} disparity folder")
            continue
        for current_split in splits:
            excluded = STANDARD_EXCLUDED[current_split] if files == "standard" else frozenset()
            for relative in _sequences(location, current_split):
                if subset == "flyingthings3d" and f"{relative[1]}/{relative[2]}" in excluded:
                    continue
                _index_sequence(location, relative, right_disparity, index)
    if list_file is not None:
        index.records = _select_listed(index.records, list_file)
    return index


def sample_name_from_path(text: str) -> str | None:
    """Stable sample name ("flyingthings3d/TEST/A/0000/0006") from a left-image path in any layout,
    or the text itself when it already is a sample name; None when it is neither."""
    parts = Path(text.strip().replace("\\", "/")).parts
    if "left" not in parts:
        return text.strip().strip("/") if parts and parts[0] in SUBSETS and len(parts) >= 3 else None
    position = len(parts) - 1 - parts[::-1].index("left")
    if position + 1 >= len(parts):
        return None
    frame = parts[position + 1].rsplit(".", 1)[0]
    sequence = parts[:position]
    if len(sequence) >= 3 and sequence[-3] in ("TRAIN", "TEST") and sequence[-2] in FT3D_LETTERS:
        return f"flyingthings3d/{'/'.join(sequence[-3:])}/{frame}"
    if len(sequence) >= 3 and sequence[-3].endswith("_focallength"):
        return f"driving/{'/'.join(sequence[-3:])}/{frame}"
    if sequence:
        return f"monkaa/{sequence[-1]}/{frame}"
    return None


def _select_listed(records: list[StereoPair], list_file: Path) -> list[StereoPair]:
    """Keep the records a list file names (first column of each line; blank and # lines ignored)."""
    try:
        lines = list_file.read_text().splitlines()
    except FileNotFoundError:
        raise FileNotFoundError(f"{list_file}: Scene Flow list file does not exist (files= expects "
                                "'standard', 'all' or the path of a list file)") from None
    by_name = {record.name: record for record in records}
    selected = []
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name = sample_name_from_path(line.split()[0])
        if name is None:
            raise DataError(f"{list_file}:{number}: cannot tell which Scene Flow frame {line.split()[0]!r} is")
        if name not in by_name:
            raise DataError(f"{list_file}:{number}: {name} is not on disk (or lacks its right image/GT)")
        selected.append(by_name[name])
    return selected


class SceneFlowDataset(StereoPairDataset):
    """Scene Flow pairs of one split and pass; ``files`` = "standard" (the published 35,454 / 4,370
    lists), "all" (everything on disk) or a list file of left-image paths / sample names.

    Samples follow docs/data.md#sample-format; ``right_disparity=True`` adds ``disparity_right``/``valid_right``.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        files: str = "standard",
        passes: str = "clean",
        subsets: Sequence[str] = SUBSETS,
        transform: Callable[[dict[str, Any]], Any] | None = None,
        right_disparity: bool = False,
    ):
        index = index_sceneflow(root, split, files, passes, subsets, right_disparity)
        if index.problems:
            shown = "\n  ".join(index.problems[:5])
            more = f"\n  … and {len(index.problems) - 5} more" if len(index.problems) > 5 else ""
            raise DataError(
                f"{root}: Scene Flow {split} ({passes}pass) is incomplete:\n  {shown}{more}\n"
                f"Run `python -m stereo.data.check root={root} passes={passes}` for the full report."
            )
        require_nonempty(index.records, f"{root} (Scene Flow {split}, {passes}pass, subsets {list(subsets)})")
        super().__init__(index.records, transform)
        self._counts = index.counts()

    def describe(self) -> dict[str, int]:
        """Pairs per subset, e.g. {"flyingthings3d": 22390, "monkaa": 8664, "driving": 4400}."""
        return dict(self._counts)
