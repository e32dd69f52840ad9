"""Output folders that two runs can never share silently.

- :func:`claim` takes a folder for one run: it refuses a path that is a file, and creates a lock
  file with ``O_EXCL`` (atomic on local and NFSv3+ file systems) holding the owner's host and pid.
  A second run into the same folder fails with a message naming the folder and the owner. A lock
  left by a killed run on this host (its pid is gone) is taken over; one from another host must be
  deleted by hand, as the message says.
- :func:`write_manifest` records what a run wrote (config, inputs, every file) atomically; inference
  refuses a folder that holds an earlier run's manifest unless ``overwrite=true``, which first
  deletes the files that manifest lists, so old and new results never mix.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from stereo.cli import OutputDirError
from stereo.data.io import atomic_write

LOCK_NAME = ".stereo-run.lock"
MANIFEST_NAME = "manifest.json"


def _owner() -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid(), "started": time.strftime("%Y-%m-%dT%H:%M:%S")}


def _is_stale(owner: Mapping[str, Any]) -> bool:
    """A lock from this host whose process no longer exists."""
    if owner.get("host") != socket.gethostname() or not isinstance(owner.get("pid"), int):
        return False
    try:
        os.kill(owner["pid"], 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # exists, owned by another user
        return False
    return False


def _read_owner(lock: Path) -> dict[str, Any]:
    try:
        owner = json.loads(lock.read_text())
        return owner if isinstance(owner, dict) else {}
    except (OSError, ValueError):
        return {}


def check_is_folder(directory: Path, option: str) -> None:
    if directory.exists() and not directory.is_dir():
        raise OutputDirError(f"{option}={directory} is an existing file, not a folder; choose a folder path")


@contextmanager
def claim(directory: str | Path, option: str = "output_dir") -> Iterator[Path]:
    """Hold ``directory`` (created if needed) exclusively for this run; ``option`` names it in errors."""
    directory = Path(directory)
    check_is_folder(directory, option)
    directory.mkdir(parents=True, exist_ok=True)
    lock = directory / LOCK_NAME
    for _ in range(2):  # second try after removing a stale lock
        try:
            descriptor = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            break
        except FileExistsError:
            owner = _read_owner(lock)
            if not _is_stale(owner):
                raise OutputDirError(
                    f"{option}={directory} is in use by another run (pid {owner.get('pid', '?')} on "
                    f"{owner.get('host', '?')}, since {owner.get('started', '?')}; lock file {lock}): wait for it "
                    f"or choose another {option}; delete the lock file only if that run is no longer active"
                ) from None
            lock.unlink(missing_ok=True)
    else:
        raise OutputDirError(f"{option}={directory}: could not take the lock file {lock}; another run is starting")
    with os.fdopen(descriptor, "w") as handle:
        json.dump(_owner(), handle)
    try:
        yield directory
    finally:
        lock.unlink(missing_ok=True)


def read_manifest(directory: Path) -> dict[str, Any] | None:
    path = directory / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except ValueError:
        raise OutputDirError(f"{path}: unreadable manifest of an earlier run; move or delete the folder") from None
    return manifest if isinstance(manifest, dict) else {}


def clear_earlier_run(directory: Path, overwrite: bool, command: str, option: str = "output_dir") -> None:
    """Refuse a folder holding an earlier run's manifest, or (``overwrite``) delete what that run wrote.

    Only a manifest that ``command`` wrote is trusted to list deletable files: a ``manifest.json`` of
    anything else (a dataset's, another tool's) is refused even with ``overwrite``."""
    manifest = read_manifest(directory)
    if manifest is None:
        return
    if manifest.get("command") != command:
        raise OutputDirError(
            f"{option}={directory} holds a {MANIFEST_NAME} that {command} did not write; "
            f"choose another {option} (nothing was deleted)"
        )
    if not overwrite:
        raise OutputDirError(
            f"{option}={directory} holds the results of an earlier run ({directory / MANIFEST_NAME}, "
            f"status {manifest.get('status', '?')}); choose another {option} or pass overwrite=true to replace them"
        )
    for name in manifest.get("files", []):
        target = (directory / str(name)).resolve()
        if target.parent == directory.resolve() or directory.resolve() in target.parents:
            target.unlink(missing_ok=True)  # only files inside the folder, as the manifest lists them
    (directory / MANIFEST_NAME).unlink()


def write_manifest(directory: Path, record: Mapping[str, Any], files: list[Path], status: str) -> Path:
    """Atomically write ``manifest.json``: ``record`` + status + every file written (relative names)."""
    names = sorted({str(Path(f).resolve().relative_to(directory.resolve())) for f in files})
    path = directory / MANIFEST_NAME
    atomic_write(path, (json.dumps({**record, "status": status, "files": names}, indent=2) + "\n").encode())
    return path
