"""Lightning checkpoint files written atomically and read as data only.

Lightning's own writer stages the file through fsspec's transaction, whose temporary file lives in
the system temp folder: on another file system the final move is a copy, and a crash during it leaves
a truncated ``last.ckpt`` under the real name. This writer serialises to memory, writes a temporary
file in the checkpoint's own folder and renames it into place (``stereo.data.io.atomic_write``), so
the name always holds a complete checkpoint. Reading goes through
``stereo.models.checkpoints.read_checkpoint`` (``weights_only=True``, one-line errors naming the file).
Local paths only (remote URLs are not supported by the rename).
"""

from __future__ import annotations

import io
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from stereo.data.io import atomic_write
from stereo.models.checkpoints import read_checkpoint


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` with a same-folder temporary file + rename, and weights-only loading."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options, got {storage_options!r}")
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        atomic_write(path, buffer.getvalue())

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        return read_checkpoint(path, map_location if map_location is not None else "cpu")
