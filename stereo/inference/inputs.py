"""Find the stereo pairs a user means: two files, two globs, a dataset-style folder, or a list file.

Every pair (``stereo.data.pairs.StereoPair``) gets a ``name`` (the base of its output file names)
that is unique within the run, and the ``calib.txt`` of its scene folder when one sits beside the
images (Middlebury 2014 / ETH3D). Dataset-style folders are those of ``stereo.data.pairs``' layouts.
"""

from __future__ import annotations

import glob
from pathlib import Path

from stereo.data.pairs import FOLDER_LAYOUTS, SCENE, StereoPair

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".ppm", ".pgm", ".bmp", ".tif", ".tiff", ".webp")


class PairError(ValueError):
    """The inputs do not describe a set of stereo pairs (missing files, unequal counts, ...)."""


def _is_glob(pattern: str) -> bool:
    return any(ch in pattern for ch in "*?[")


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _calib_beside(image: Path) -> str | None:
    calib = image.parent / SCENE.calib
    return str(calib) if calib.is_file() else None


def _require_file(path: Path, role: str) -> Path:
    if not path.exists():
        raise PairError(f"{path}: {role} image not found")
    if not path.is_file():
        raise PairError(f"{path}: {role} image is not a file")
    return path


def pairs_from_files(left: str, right: str) -> list[StereoPair]:
    """Two paths, or two glob patterns matched in sorted order (their counts must match)."""
    if _is_glob(left) != _is_glob(right):
        raise PairError(f"left={left!r} and right={right!r}: give two files or two glob patterns, not one of each")
    if not _is_glob(left):
        left_path = _require_file(Path(left), "left")
        right_path = _require_file(Path(right), "right")
        return [StereoPair(left_path.stem, str(left_path), str(right_path), calib=_calib_beside(left_path))]
    lefts, rights = sorted(glob.glob(left)), sorted(glob.glob(right))
    if not lefts:
        raise PairError(f"left={left!r}: the pattern matches no file")
    if len(lefts) != len(rights):
        raise PairError(
            f"left={left!r} matches {len(lefts)} files but right={right!r} matches {len(rights)}: "
            "the two patterns must match one right image per left image"
        )
    return _with_unique_stems([(Path(l), Path(r)) for l, r in zip(lefts, rights)])


def pairs_from_folder(folder: str | Path) -> list[StereoPair]:
    """A folder with left/right (image_2/image_3, colored_0/colored_1: ``FOLDER_LAYOUTS``) sub-folders
    paired by file name, or scene folders holding im0/im1 in any image format (the folder itself or its
    sub-folders)."""
    folder = Path(folder)
    if folder.is_file():
        raise PairError(f"input_dir={folder} is a file, not a folder: give the folder holding the pairs, "
                        "or left=<file> right=<file> for one pair")
    if not folder.is_dir():
        raise PairError(f"{folder}: input folder not found")
    for layout in FOLDER_LAYOUTS.values():
        if (folder / layout.left).is_dir() and (folder / layout.right).is_dir():
            return _pairs_by_name(folder / layout.left, folder / layout.right)
    scenes = [folder] + sorted(p for p in folder.iterdir() if p.is_dir())
    left_stem, right_stem = Path(SCENE.left).stem, Path(SCENE.right).stem
    found = []
    for scene in scenes:
        left = _find_stem(scene, left_stem)
        right = _find_stem(scene, right_stem)
        if left and right:
            found.append(StereoPair(scene.name, str(left), str(right), calib=_calib_beside(left)))
    if not found:
        layouts = ", ".join(f"{layout.left}/ + {layout.right}/" for layout in FOLDER_LAYOUTS.values())
        raise PairError(f"{folder}: no stereo pairs found (expected sub-folders {layouts}, or {left_stem}.* + "
                        f"{right_stem}.* per scene folder)")
    return found


def pairs_from_list(list_file: str | Path) -> list[StereoPair]:
    """A text file with ``left right`` per line (paths relative to the list file's folder); # comments."""
    list_file = Path(list_file)
    if not list_file.is_file():
        raise PairError(f"{list_file}: list file not found")
    raw = []
    for number, line in enumerate(list_file.read_text().splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        fields = line.split()
        if len(fields) != 2:
            raise PairError(f"{list_file}:{number}: expected 'left right' (two paths), got {line!r}")
        left, right = (p if Path(p).is_absolute() else list_file.parent / p for p in map(Path, fields))
        raw.append((_require_file(left, "left"), _require_file(right, "right")))
    if not raw:
        raise PairError(f"{list_file}: list file holds no pairs")
    return _with_unique_stems(raw)


def _find_stem(folder: Path, stem: str) -> Path | None:
    matches = [p for p in _images(folder) if p.stem == stem]
    return matches[0] if matches else None


def _pairs_by_name(left_dir: Path, right_dir: Path) -> list[StereoPair]:
    lefts = _images(left_dir)
    if not lefts:
        raise PairError(f"{left_dir}: no images found")
    right_names = {p.name for p in _images(right_dir)}
    missing = [p.name for p in lefts if p.name not in right_names]
    if missing:
        raise PairError(f"{right_dir}: no right image for {len(missing)} left image(s), e.g. {missing[0]}")
    return _with_unique_stems([(p, right_dir / p.name) for p in lefts])


def _with_unique_stems(paths: list[tuple[Path, Path]]) -> list[StereoPair]:
    """Stems are file stems; if two left files share one, prefix with their parent folders' names."""
    stems = [left.stem for left, _ in paths]
    if len(set(stems)) != len(stems):
        stems = ["_".join(left.with_suffix("").parts[-3:]) for left, _ in paths]
    if len(set(stems)) != len(stems):
        raise PairError("several left images map to the same output name; rename them or use a list file")
    return [StereoPair(s, str(l), str(r), calib=_calib_beside(l)) for (l, r), s in zip(paths, stems)]
