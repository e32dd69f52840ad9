"""Lightning checkpoint files written atomically and recorded, read as data only, deleted only when ours.

Lightning's own writer stages the file through fsspec's transaction, whose temporary file lives in
the system temp folder: on another file system the final move is a copy, and a crash during it leaves
a truncated ``last.ckpt`` under the real name. This writer serialises to memory, writes a temporary
file in the checkpoint's own folder and renames it into place (``stereo.data.io.atomic_write``), so
the name always holds a complete checkpoint, and records it (size, sha256) in the run's manifest at
once (``stereo.output_dirs.Run.record_written``): even a killed run's checkpoints can be verified.

A checkpoint is data we never trust, and that includes the Lightning state inside it. Lightning's
``ModelCheckpoint`` restores the file paths of its saved state (``best_model_path``,
``last_model_path``, ``kth_best_model_path``, ``best_k_models``, ``dirpath``) and deletes them when it
rotates checkpoints; its "inside dirpath" test does not resolve ``..``. So, on loading, a callback state
naming any path that does not resolve strictly inside this run's folder is not restored
(:func:`drop_foreign_paths`), and every deletion Lightning asks for goes through
``Run.delete_written``: only a file this run (or the run it resumes) wrote and that is unchanged since.
Reading goes through ``stereo.models.checkpoints.read_checkpoint`` (``weights_only=True``, one-line
errors naming the file). Local paths only (remote URLs are not supported by the rename).
"""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from stereo.data.io import atomic_write
from stereo.models.checkpoints import read_checkpoint

if TYPE_CHECKING:
    from stereo.output_dirs import Run

# The entries of a ModelCheckpoint state that name files or folders (best_k_models: its keys).
PATH_KEYS = ("dirpath", "best_model_path", "last_model_path", "kth_best_model_path", "best_k_models")
SCORE_KEYS = ("best_model_score", "kth_value", "current_score")


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` with a same-folder temporary file + rename, weights-only loading, and the
    run's record (``run``: rank 0 of a training run; None elsewhere) deciding what may be deleted."""

    def __init__(self, run: Run | None = None) -> None:
        super().__init__()
        self.run = run

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options, got {storage_options!r}")
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        atomic_write(path, buffer.getvalue())
        if self.run is not None:
            self.run.record_written(path, buffer.getvalue())

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        checkpoint = read_checkpoint(path, map_location if map_location is not None else "cpu")
        if self.run is not None:
            drop_foreign_paths(checkpoint, path, self.run.folder)
        return checkpoint

    def remove_checkpoint(self, path: Any) -> None:
        """Lightning's checkpoint rotation: see the module docstring (never ``fs.rm(recursive=True)``)."""
        if self.run is not None:
            self.run.delete_written(path, "Lightning's checkpoint rotation")
        else:
            print(f"warning: {path}: kept, not deleted for Lightning's checkpoint rotation: no run record to "
                  "verify it against", file=sys.stderr)


def drop_foreign_paths(checkpoint: dict[str, Any], path: Any, folder: Path) -> list[str]:
    """Remove from ``checkpoint["callbacks"]`` every callback state that names a path not strictly inside
    ``folder`` (resolved: ``..`` and links followed) or that is not plain data of the expected types;
    such a state is not restored (the callback starts afresh). Says so in one line; returns the keys."""
    states = checkpoint.get("callbacks")
    if states is None:
        return []
    if not isinstance(states, Mapping):
        checkpoint["callbacks"] = {}
        print(f"warning: {path}: its callback states are a {type(states).__name__}, not a mapping: not restored",
              file=sys.stderr)
        return []
    root = Path(os.path.realpath(folder))
    dropped = [key for key, state in states.items() if not _paths_inside(state, root)]
    if dropped:
        checkpoint["callbacks"] = {key: state for key, state in states.items() if key not in dropped}
        names = ", ".join(str(key).split("{")[0] for key in dropped)  # ModelCheckpoint{'monitor': ...} -> ModelCheckpoint
        print(f"warning: {path}: the saved state of {len(dropped)} callback(s) ({names}) names files outside this run's "
              f"folder {folder} (or holds values that are not paths and scores): not restored; the run tracks its own best and last "
              "checkpoints from here (a checkpoint never decides which files are deleted)", file=sys.stderr)
    return dropped


def _paths_inside(state: Any, root: Path) -> bool:
    """A callback state whose path entries are all strings naming places strictly inside ``root`` and
    whose scores are numbers (Lightning compares them: anything else fails deep inside it)."""
    if not isinstance(state, Mapping):
        return False
    names: list[Any] = []
    scores: list[Any] = [state.get(key) for key in SCORE_KEYS]
    for key in PATH_KEYS:
        value = state.get(key)
        if key == "best_k_models":
            if value is not None and not isinstance(value, Mapping):
                return False
            names += list(value or {})
            scores += list((value or {}).values())
        elif value not in (None, ""):
            names.append(value)
    return (all(isinstance(name, str) and "\0" not in name and root in Path(os.path.realpath(name)).parents
                for name in names)
            and all(score is None or _is_score(score) for score in scores))


def _is_score(value: Any) -> bool:
    if isinstance(value, torch.Tensor):
        return value.numel() == 1 and (value.is_floating_point() or not value.dtype.is_complex)
    return isinstance(value, (int, float)) and not isinstance(value, bool)
