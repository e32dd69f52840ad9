"""What every stereo dataset shares: a list of file records and one way to load a record.

Each dataset module only finds its files (by listing folders, never opening images, with the folder
layouts of ``stereo.data.pairs``) and fills ``StereoPair``s; loading, the size checks and the sample
dict (docs/data.md#sample-format) live here once.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from stereo.data.io import DataError, read_disparity_counted, read_image, read_mask
from stereo.data.pairs import StereoPair

Sample = dict[str, Any]


def load_record(record: StereoPair) -> Sample:
    """Read a record's files into a raw sample; sizes that disagree raise an error naming the files."""
    left = read_image(record.left)
    right = read_image(record.right)
    if right.shape != left.shape:
        raise DataError(
            f"{record.right}: right image is {right.shape[1]}x{right.shape[0]} but the left image "
            f"{record.left} is {left.shape[1]}x{left.shape[0]}"
        )
    sample: Sample = {"left": left, "right": right, "name": record.name}
    sample["disparity"], sample["valid"], sample["nonfinite_gt"] = _read_matching(
        record.disparity, record.disparity_scale, record.left, left, counted=True)
    if record.disparity_right is not None:
        sample["disparity_right"], sample["valid_right"] = _read_matching(
            record.disparity_right, record.disparity_scale, record.left, left
        )
    if record.noc is not None:
        if record.noc_from == "disparity":
            noc = _read_matching(record.noc, record.disparity_scale, record.left, left)[1]
        else:
            mask = read_mask(record.noc)
            _check_size(record.noc, mask, record.left, left)
            noc = mask == 255 if record.noc_from == "mask" else mask == 0
        sample["noc"] = noc & sample["valid"]
    return sample


def _read_matching(path: str, scale: float | None, left_path: str, left: np.ndarray, counted: bool = False) -> tuple:
    """(disparity, valid[, NaN/inf pixel count: the reader masks them, evaluation reports them])."""
    disparity, valid, nonfinite = read_disparity_counted(path, scale)
    _check_size(path, disparity, left_path, left)
    return (disparity, valid, nonfinite) if counted else (disparity, valid)


def _check_size(path: str, array: np.ndarray, left_path: str, left: np.ndarray) -> None:
    if array.shape[:2] != left.shape[:2]:
        raise DataError(
            f"{path}: is {array.shape[1]}x{array.shape[0]} but the left image {left_path} "
            f"is {left.shape[1]}x{left.shape[0]}"
        )


class StereoPairDataset(Dataset):
    """A map-style dataset over ``StereoPair``s (``stereo.data.pairs``, with the folder layouts); ``transform`` (if any) maps the raw sample dict."""

    def __init__(self, records: Sequence[StereoPair], transform: Callable[[Sample], Any] | None = None):
        self.records = list(records)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> Any:
        sample = load_record(self.records[index])
        return self.transform(sample) if self.transform is not None else sample

    @property
    def names(self) -> list[str]:
        return [record.name for record in self.records]


def require_files(records: Sequence[StereoPair], what: str) -> None:
    """Fail at construction, naming every missing file, rather than mid-epoch (stat only, no reads)."""
    missing = [
        f"{path}: missing ({record.name})"
        for record in records
        for path in (record.left, record.right, record.disparity, record.noc, record.disparity_right)
        if path is not None and not os.path.isfile(path)
    ]
    if missing:
        raise DataError(f"{what}: {len(missing)} file(s) missing:\n  " + "\n  ".join(missing))


def require_nonempty(records: Sequence[StereoPair], what: str) -> None:
    """An empty dataset is always a wrong path or an empty folder; say so instead of training on nothing."""
    if not records:
        raise DataError(f"{what}: no stereo pairs found")
