"""Command-line stereo calibration: ``python -m stereo.calibrate left=... right=... board.square_size=...``.

Config: ``conf/calibrate.yaml``. Chessboard pairs in, one calibration file out (OpenCV FileStorage
YAML, written atomically) plus a JSON report, and the report's table on stdout. An untrustworthy
calibration (too few usable pairs, reprojection RMS too high: see ``stereo.calibration.calibrate``)
is refused with one line and nothing is written. Use the file with ``stereo.infer calib=<file>``.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from stereo.calibration.board import Board
from stereo.calibration.calibrate import calibrate_pairs
from stereo.calibration.diagnostics import swapped_views_message
from stereo.calibration.storage import write_opencv
from stereo.cli import command
from stereo.data.io import atomic_write, json_bytes, read_image
from stereo.inference.inputs import IMAGE_SUFFIXES, PairError, pairs_from_files, pairs_from_folder, pairs_from_list


def calibration_pairs(cfg: DictConfig) -> list[tuple[Path, Path]]:
    """The (left, right) pairs named by exactly one of left+right, input_dir, list_file."""
    given = [k for k in ("left", "input_dir", "list_file") if cfg.get(k) is not None]
    if len(given) != 1 or (cfg.left is None) != (cfg.right is None):
        raise PairError("give the chessboard pairs as left=... right=... (two folders, files or glob patterns), "
                        f"input_dir=... (left/ and right/ sub-folders) or list_file=... (got {given or 'none'})")
    if cfg.left is not None and Path(str(cfg.left)).is_dir() and Path(str(cfg.right)).is_dir():
        pairs = folder_pairs(Path(str(cfg.left)), Path(str(cfg.right)))
    elif cfg.left is not None:
        pairs = [(Path(p.left), Path(p.right)) for p in pairs_from_files(str(cfg.left), str(cfg.right))]
    else:
        found = pairs_from_folder(cfg.input_dir) if cfg.input_dir is not None else pairs_from_list(cfg.list_file)
        pairs = [(Path(p.left), Path(p.right)) for p in found]
    same_images(pairs)
    return pairs


def folder_pairs(left: Path, right: Path) -> list[tuple[Path, Path]]:
    """Every image of two folders, paired in sorted order (calibration shots are often named left01, right01)."""
    lefts, rights = ([p for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES] for folder in (left, right))
    if not lefts or len(lefts) != len(rights):
        raise PairError(f"left={left} holds {len(lefts)} images and right={right} {len(rights)}: "
                        "the folders must hold one right image per left image")
    return list(zip(lefts, rights))


def check_file_destination(path: Path, key: str) -> None:
    """Refuse, before the calibration runs, a destination that cannot become a file: a folder, or a
    path below an existing file."""
    if path.is_dir():
        example = path / ("rig.yaml" if key == "output" else "rig_report.json")
        raise IsADirectoryError(f"{key}={path}: is a folder; give the file to write, e.g. {key}={example}")
    parent = next(p for p in path.absolute().parents if p.exists())
    if not parent.is_dir():
        raise NotADirectoryError(f"{key}={path}: {parent} is a file, not a folder; choose another path")


def same_images(pairs: list[tuple[Path, Path]]) -> None:
    """Refuse pairs whose left and right are one file (the same folder given twice): the rig would
    have no baseline, and the calibration would only find that out at the end."""
    same = [left for left, right in pairs if Path(left).resolve() == Path(right).resolve()]
    if same:
        raise PairError(f"{same[0]}: is both the left and the right image of a pair ({len(same)} of {len(pairs)} "
                        "pairs); give the left camera's images as left and the right camera's as right")


def checked(value: object, key: str, kind: type = float, least: float = 0.0) -> float:
    """A user-typed number: of ``kind`` (an int is a float too) and above ``least``, or one line naming ``key``."""
    allowed = (int, float) if kind is float else (int,)
    if isinstance(value, bool) or not isinstance(value, allowed) or not least < value < float("inf"):  # NaN too
        raise ValueError(f"{key}={value}: must be {'a whole number' if kind is int else 'a number'} above {least:g}")
    return value


def run(cfg: DictConfig) -> dict:
    """Calibrate and write the calibration file and the report; returns the report as a dict."""
    board = Board(checked(cfg.board.columns, "board.columns", int, 1), checked(cfg.board.rows, "board.rows", int, 1),
                  float(checked(cfg.board.square_size, "board.square_size")))
    alpha = cfg.alpha
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1:
        raise ValueError(f"alpha={alpha}: must be a number from 0 (valid pixels only) to 1 (every source pixel)")
    output = Path(str(cfg.output))
    report_path = Path(str(cfg.report)) if cfg.report is not None else output.with_name(f"{output.stem}_report.json")
    for path, key in ((output, "output"), (report_path, "report")):
        check_file_destination(path, key)
        if path.exists() and not cfg.overwrite:
            raise FileExistsError(f"{key}={path}: exists; choose another path or set overwrite=true")
    min_pairs, max_rms = checked(cfg.min_pairs, "min_pairs", int), checked(cfg.max_rms, "max_rms")
    pairs = calibration_pairs(cfg)
    rig, report = calibrate_pairs(pairs, board, unit=str(cfg.unit), read=read_image, min_pairs=min_pairs,
                                  max_rms=max_rms, alpha=float(alpha), source=str(output))
    write_opencv(output, rig)
    result = report.to_dict() | {"calibration": str(output)}
    atomic_write(report_path, json_bytes(result))
    print(report.table())
    if rig.views_swapped:
        print(f"\nnote: {swapped_views_message(rig)}")
    print(f"\ncalibration -> {output}\nreport      -> {report_path}")
    return result


@command("calibrate")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
