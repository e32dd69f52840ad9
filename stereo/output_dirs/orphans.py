"""Temporary files of writers that were killed (``.NAME.<pid>[.x].tmp``, ``.STEM.<pid>.partial.SUFFIX``):
removed once the folder's lock is held, and only when their process no longer exists.
"""

from __future__ import annotations

import re
from pathlib import Path

from stereo.output_dirs.lock import pid_alive

# .NAME.<pid>.tmp (export), .NAME.<pid>.<random>.tmp (atomic_write), .STEM.<pid>.partial.SUFFIX (videos)
TEMPORARY = re.compile(r"^\..+\.(\d+)(?:\.[A-Za-z0-9_]+)?\.tmp$|^\..+\.(\d+)\.partial\.[A-Za-z0-9]+$")


def remove_orphan_temporaries(directory: Path) -> list[Path]:
    """Delete ``.NAME.<pid>...tmp`` files under ``directory`` whose process is gone (killed writers)."""
    removed = []
    for path in directory.rglob(".*"):
        if is_orphan(path):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def remove_orphans_of(target: Path) -> None:
    """Temporary files of dead processes exporting to ``target`` (``.NAME.<pid>.tmp``)."""
    for path in target.parent.glob(f".{target.name}.*"):
        if is_orphan(path):
            path.unlink(missing_ok=True)


def is_orphan(path: Path) -> bool:
    """A temporary file of this project's writers whose process no longer exists."""
    match = TEMPORARY.match(path.name)
    pid = match and int(match.group(1) or match.group(2))
    return bool(pid) and path.is_file() and not path.is_symlink() and not pid_alive(pid)
