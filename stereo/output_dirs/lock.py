"""One run at a time per folder: the lock file (host, pid, start time), created complete in one step,
taken over only from a run that is provably gone.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from stereo.cli import OutputDirError

LOCK_NAME = ".stereo-run.lock"
EMPTY_LOCK_GRACE_S = 10.0  # an empty lock this old cannot belong to a run that is still starting


def _owner() -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid(), "started": time.strftime("%Y-%m-%dT%H:%M:%S")}


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def _read_owner(lock: Path) -> dict[str, Any] | None:
    """The lock's owner; None when the file is empty or unreadable."""
    try:
        owner = json.loads(lock.read_text())
    except (OSError, ValueError):
        return None
    return owner if isinstance(owner, dict) else None


def _dead_lock_reason(lock: Path, owner: dict[str, Any] | None) -> str | None:
    """Why ``lock`` belongs to no live run (None: it may be live)."""
    if owner is None:
        try:
            age = time.time() - lock.stat().st_mtime
        except FileNotFoundError:
            return "gone"
        return f"empty or unreadable for {age:.0f} s" if age > EMPTY_LOCK_GRACE_S else None
    pid = owner.get("pid")
    if owner.get("host") == socket.gethostname() and isinstance(pid, int) and not pid_alive(pid):
        return f"pid {pid} no longer exists"
    return None


def no_space_hint(error: OSError) -> str:
    if error.errno == errno.ENOSPC:
        return "the disk is full: free space or choose a folder on another disk"
    if error.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return "the location is read-only or not writable by you: choose a writable folder"
    return str(error.strerror or error)


def _create_lock(lock: Path) -> bool:
    """Create ``lock`` holding this process as owner, complete or not at all; False if it exists."""
    content = json.dumps(_owner()).encode()
    temporary = lock.with_name(f"{lock.name}.{os.getpid()}.tmp")
    try:
        temporary.write_bytes(content)
        try:
            os.link(temporary, lock)  # atomic, fails if the lock exists, and the lock is never empty
            return True
        except FileExistsError:
            return False
        except OSError as error:
            if error.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
                raise
        try:  # a file system without hard links: exclusive create, then fill (empty for an instant)
            descriptor = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        try:
            os.write(descriptor, content)
        except OSError:
            os.close(descriptor)
            lock.unlink(missing_ok=True)
            raise
        os.close(descriptor)
        return True
    except OSError as error:
        if isinstance(error, FileExistsError):
            return False
        raise OutputDirError(f"{lock}: cannot create the run's lock file: {no_space_hint(error)}") from None
    finally:
        temporary.unlink(missing_ok=True)


@contextmanager
def claim(directory: str | Path, option: str = "output_dir", lock_name: str = LOCK_NAME) -> Iterator[Path]:
    """Hold ``directory`` (created if needed) exclusively for this run; ``option`` names it in errors."""
    directory = Path(directory)
    check_is_folder(directory, option)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputDirError(f"{option}={directory}: cannot create the folder: {no_space_hint(error)}") from None
    lock = directory / lock_name
    if lock.is_symlink():  # this module creates plain files only: never read, judge or take over a link
        raise OutputDirError(f"{option}={directory}: the lock file {lock} is a symbolic link (to {os.readlink(lock)}), "
                             "not a lock of this project: remove the link or choose another folder")
    for _ in range(3):  # retries after taking over a dead run's lock
        if _create_lock(lock):
            break
        owner = _read_owner(lock)
        reason = _dead_lock_reason(lock, owner)
        if reason is None:
            if owner is None:
                raise OutputDirError(f"{option}={directory}: the lock file {lock} is empty (a run is starting, or one "
                                     "crashed while creating it): retry in a few seconds")
            raise OutputDirError(
                f"{option}={directory} is in use by another run (pid {owner.get('pid', '?')} on "
                f"{owner.get('host', '?')}, since {owner.get('started', '?')}; lock file {lock}): wait for it "
                f"or choose another {option}; delete the lock file only if that run is no longer active"
            )
        _take_over(lock, owner)
    else:
        raise OutputDirError(f"{option}={directory}: could not take the lock file {lock}; another run is starting")
    try:
        yield directory
    finally:
        owner = _read_owner(lock) or {}
        if owner.get("pid") == os.getpid() and owner.get("host") == socket.gethostname():
            lock.unlink(missing_ok=True)  # only our own lock: never one a later run took over


def _take_over(lock: Path, owner: dict[str, Any] | None) -> None:
    """Remove a dead run's lock, unless another run replaced it since it was read."""
    aside = lock.with_name(f"{lock.name}.{os.getpid()}.stale")
    try:
        os.replace(lock, aside)
    except FileNotFoundError:
        return
    if _read_owner(aside) != owner:  # not the lock we judged dead: put it back if the place is still free
        try:
            os.link(aside, lock)
        except OSError:
            pass
    aside.unlink(missing_ok=True)


def check_is_folder(directory: Path, option: str) -> None:
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise OutputDirError(f"{option}={directory} is an existing file, not a folder; choose a folder path")
