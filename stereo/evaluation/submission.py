"""Benchmark submissions: find each benchmark's test frames and write exactly the files it accepts.

| benchmark    | reads (data_root)                                  | writes (output)                                              |
|--------------|----------------------------------------------------|--------------------------------------------------------------|
| ``kitti2015`` | ``testing/image_2,image_3/<frame>_10.png``        | ``disp_0/<frame>_10.png`` uint16, d·256, every pixel > 0; zip |
| ``kitti2012`` | ``testing/colored_0,colored_1/<frame>_10.png``    | ``disp_0/<frame>_10.png`` as above; zip                       |
| ``middlebury`` | ``MiddEval3/test<R>/<scene>/im0,im1.png, calib.txt`` | ``<scene>/disp0<METHOD>.pfm`` + ``<scene>/time<METHOD>.txt`` |
| ``eth3d``    | ``two_view_test/<scene>/im0,im1.png, calib.txt``   | ``low_res_two_view/<scene>.pfm`` + ``<scene>.txt`` (``runtime <s>``); zip |

Search range: KITTI uses the network's (PSMNet: 192); Middlebury and ETH3D use each scene's
``calib.txt`` ``ndisp`` rounded up to a multiple of 16 (the network's granularity). Every file is
written atomically; ``stereo.submit`` skips the frames a run of the same producer already wrote.
"""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path

import numpy as np

from stereo.calibration.readers import read_middlebury
from stereo.data.io import atomic_write, write_disparity_png16, write_pfm
from stereo.data.pairs import FOLDER_LAYOUTS, KITTI_FRAME, SCENE, StereoPair
from stereo.evaluation.protocols import round_max_disp

BENCHMARKS = ("kitti2015", "kitti2012", "middlebury", "eth3d")
KITTI = ("kitti2015", "kitti2012")  # their test folders have the training folders' layout (FOLDER_LAYOUTS)
_METHOD = re.compile(r"^[A-Za-z0-9_-]+$")


class SubmissionError(ValueError):
    """The data root does not hold the benchmark's test layout, or an option is unusable."""


def round_up_disparity(ndisp: int) -> int:
    """The smallest multiple of 16 >= ``ndisp`` (the network's cost volume works in steps of 16): for
    whole ``ndisp``, the multiple strictly above ``ndisp - 1``."""
    return round_max_disp(max(int(ndisp) - 1, 0))


def _first_dir(candidates: list[Path], what: str) -> Path:
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    raise SubmissionError(f"{candidates[0].parent}: no {what} folder (looked for {', '.join(map(str, candidates))})")


def find_frames(benchmark: str, data_root: str | Path, resolution: str = "H") -> list[StereoPair]:
    """The benchmark's test pairs under ``data_root`` (the extracted download), sorted by name."""
    root = Path(data_root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: data_root folder not found")
    if benchmark in KITTI:
        left_name, right_name = FOLDER_LAYOUTS[benchmark].left, FOLDER_LAYOUTS[benchmark].right
        testing = _first_dir([root / "testing", root], f"KITTI testing/{left_name}")
        left_dir, right_dir = testing / left_name, testing / right_name
        if not left_dir.is_dir() or not right_dir.is_dir():
            raise SubmissionError(f"{testing}: expected {left_name}/ and {right_name}/ (the {benchmark} testing folder)")
        names = sorted(p.name for p in left_dir.iterdir() if KITTI_FRAME.match(p.name))
        frames = [StereoPair(name[:-4], str(left_dir / name), str(right_dir / name)) for name in names]
        missing = [f.right for f in frames if not Path(f.right).is_file()]
        if missing:
            raise SubmissionError(f"{missing[0]}: right image missing ({len(missing)} frame(s) without one)")
    elif benchmark in ("middlebury", "eth3d"):
        if benchmark == "middlebury":
            resolution = str(resolution).upper()
            if resolution not in ("F", "H", "Q"):
                raise SubmissionError(f"resolution must be F, H or Q (MiddEval3 test set), got {resolution!r}")
            folder = _first_dir([root / "MiddEval3" / f"test{resolution}", root / f"test{resolution}", root],
                                f"MiddEval3 test{resolution}")
        else:
            folder = _first_dir([root / "two_view_test", root], "ETH3D two_view_test")
        frames = []
        for scene in sorted(p for p in folder.iterdir() if p.is_dir()):
            left, right, calib = scene / SCENE.left, scene / SCENE.right, scene / SCENE.calib
            if not left.is_file():
                continue
            for path in (right, calib):
                if not path.is_file():
                    raise SubmissionError(f"{path}: missing (every {benchmark} test scene has {SCENE.left}, "
                                          f"{SCENE.right}, {SCENE.calib})")
            ndisp = read_middlebury(calib).ndisp
            frames.append(StereoPair(scene.name, str(left), str(right), calib=str(calib),
                                     max_disp=round_up_disparity(ndisp) if ndisp else None))
    else:
        raise SubmissionError(f"benchmark must be one of {', '.join(BENCHMARKS)}, got {benchmark!r}")
    if not frames:
        raise SubmissionError(f"{root}: no {benchmark} test pairs found (see docs/submission.md for the layout)")
    return frames


class SubmissionWriter:
    """Writes one benchmark's files for each frame into ``output`` and, at the end, its archive."""

    def __init__(self, benchmark: str, output: str | Path, method: str = "PSMNet") -> None:
        if benchmark not in BENCHMARKS:
            raise SubmissionError(f"benchmark must be one of {', '.join(BENCHMARKS)}, got {benchmark!r}")
        if not _METHOD.match(method):
            raise SubmissionError(f"method={method!r}: use letters, digits, '_' or '-' (it becomes part of file names)")
        self.benchmark, self.output, self.method = benchmark, Path(output), method

    def files(self, frame: StereoPair) -> list[Path]:
        """Every file the benchmark expects for ``frame``, relative to ``output``."""
        if self.benchmark in KITTI:
            return [Path("disp_0") / f"{frame.name}.png"]
        if self.benchmark == "middlebury":
            return [Path(frame.name) / f"disp0{self.method}.pfm", Path(frame.name) / f"time{self.method}.txt"]
        return [Path("low_res_two_view") / f"{frame.name}.pfm", Path("low_res_two_view") / f"{frame.name}.txt"]

    def write(self, frame: StereoPair, disparity: np.ndarray, seconds: float) -> None:
        disparity = np.asarray(disparity, np.float32)
        if not np.isfinite(disparity).all():
            raise SubmissionError(f"{frame.left}: the prediction has non-finite pixels; nothing written for {frame.name}")
        paths = [self.output / f for f in self.files(frame)]
        if self.benchmark in KITTI:
            # every pixel valid (stored >= 1): a 0 would mean "no prediction" and the devkit would interpolate it
            write_disparity_png16(paths[0], np.maximum(disparity, 0.0), valid=np.ones(disparity.shape, bool))
            return
        write_pfm(paths[0], disparity)
        text = f"{seconds:.6f}\n" if self.benchmark == "middlebury" else f"runtime {seconds:.6f}\n"
        atomic_write(paths[1], text.encode("ascii"))

    @property
    def archive_path(self) -> Path:
        return self.output / f"{self.benchmark}_submission.zip"

    def archive(self, frames: list[StereoPair]) -> Path | None:
        """The zip KITTI and ETH3D take as upload (Middlebury's SDK builds its own: ``makezip``)."""
        if self.benchmark == "middlebury":
            return None
        path = self.archive_path
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for frame in frames:
                for relative in self.files(frame):
                    archive.write(self.output / relative, relative.as_posix())
        atomic_write(path, buffer.getvalue())
        return path
