"""Deleting an earlier run's results: only files still as that run wrote them (size and sha256), then
the folders it created once empty; everything kept is named in one line.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from stereo.output_dirs.provenance import file_sha256


def unchanged(path: Path, recorded: Any) -> bool:
    """``path`` is a plain file with the size and sha256 a manifest ``recorded`` for it."""
    if not isinstance(recorded, Mapping) or path.is_symlink() or not path.is_file():
        return False
    return path.stat().st_size == recorded.get("size") and file_sha256(path) == recorded.get("sha256")


def clear_earlier(earlier: Mapping[str, Any], folder: Path, files: list[Path], folders: list[Path]) -> dict[str, list[str]]:
    """Delete the earlier run's files that are unchanged since it wrote them, then the folders it created
    once empty. Returns what was kept, by reason: ``changed`` (since it wrote them), ``unverified``
    (listed without a recorded hash: an older version's manifest, a killed run's last files) and
    ``foreign`` (in its folders, not listed: not written by it)."""
    hashes = earlier.get("hashes") if isinstance(earlier.get("hashes"), Mapping) else {}
    root = folder.resolve()
    kept: dict[str, list[str]] = {"changed": [], "unverified": [], "foreign": []}
    for path in files:
        name = path.relative_to(root).as_posix()
        if unchanged(path, hashes.get(name)):
            path.unlink()
            remove_empty_parents(path.parent, root)
        elif path.exists() or path.is_symlink():
            kept["changed" if name in hashes else "unverified"].append(name)
    listed = set(kept["changed"]) | set(kept["unverified"])
    for path in folders:
        remove_empty_folders(path)
        if path.is_dir() and not path.is_symlink():
            kept["foreign"] += [p.relative_to(root).as_posix() for p in sorted(path.rglob("*"))
                                if (p.is_file() or p.is_symlink()) and p.relative_to(root).as_posix() not in listed]
    return kept


def say_kept(option: str, folder: Path, kept: Mapping[str, list[str]]) -> None:
    """One line naming the files an overwrite or redo did not delete, and why."""
    reasons = {"changed": "changed since the earlier run wrote them",
               "unverified": "no size and hash recorded for them (a manifest of an older version, or a run killed "
                             "before it recorded them), so they cannot be verified",
               "foreign": "in the earlier run's folders but not recorded by it (not written by it, or by a run "
                          "killed before it recorded them)"}
    parts = [f"{reasons[key]}: {_names(sorted(names))}" for key, names in kept.items() if names]
    if parts:
        count = sum(len(names) for names in kept.values())
        print(f"warning: {option}={folder}: kept {count} file(s) not deleted with the earlier run's results, "
              f"{'; '.join(parts)}; move or delete them by hand if they are not needed", file=sys.stderr)


def _names(names: list[str], shown: int = 5) -> str:
    more = f" (+{len(names) - shown} more)" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def remove_empty_folders(folder: Path) -> None:
    """Remove ``folder`` and the folders under it that hold nothing (never a link, never a file)."""
    if folder.is_symlink() or not folder.is_dir():
        return
    for root, dirs, _ in os.walk(folder, topdown=False, followlinks=False):
        for name in dirs:
            if not Path(root, name).is_symlink():
                rmdir_if_empty(Path(root, name))
    rmdir_if_empty(folder)


def remove_empty_parents(folder: Path, root: Path) -> None:
    """Remove ``folder`` and its parents up to (not including) ``root`` while they are empty."""
    while folder != root and root in folder.parents:
        if not rmdir_if_empty(folder):
            return
        folder = folder.parent


def rmdir_if_empty(path: Path) -> bool:
    try:
        path.rmdir()
        return True
    except OSError:
        return False
