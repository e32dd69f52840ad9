"""Results that two runs can never mix or destroy: one mechanism for every command's output.

Every result a command writes (a folder for ``stereo.infer``, ``stereo.submit``, ``stereo.evaluate`` and
``stereo.train``; a file for ``stereo.export``) carries a manifest saying what produced it: the
command, the checkpoint's path and content hash (sha256) and the settings that decide the result,
and the list of files that run wrote. :func:`open_run` applies one policy to an earlier result:

- none there: a new run (a file already at a destination that no recorded run wrote is refused
  unless ``overwrite=true``: it may be the user's);
- the same producer: a command that can resume (submit, train) continues from its own results; the
  others (infer, evaluate, export) redo them: the earlier run's files are deleted and written again;
- another producer: refused in one line naming the difference (checkpoint hash, a setting); a
  manifest another command or tool wrote is refused even with ``overwrite=true`` (never trusted to delete);
- ``overwrite=true``: the files the earlier run wrote are deleted first. Only those: every manifest
  entry must be a relative path inside the folder that is neither the lock nor the manifest (a manifest
  listing ``../x`` or the lock is treated as tampered and nothing is deleted), only while this run
  holds the folder's lock, and only a file whose size and sha256 are still those the manifest
  recorded when the run wrote it. A listed file that changed since, or that has no recorded hash (a
  manifest of an older version, a run killed before it recorded the file), and anything else in the
  folders the run created (a user's file copied into ``checkpoints/``) is kept and named in one line;
  the folders themselves are removed only when empty. The same producer redoing its results may write
  over a listed file without a hash (a killed run's partial file) but not over one that changed.

A run that fails before it wrote a result (only its own ``.hydra/`` record) removes what it wrote
and its manifest, so a corrected rerun is not refused as another producer; a run that wrote results
records ``failed``. When the disk is full the final status is written in place of the old one, and the
error says what the manifest holds.

The lock (``.stereo-run.lock``: host, pid, start time) is created complete in one step (written to a
temporary file, then hard-linked into place), so a crash or a full disk never leaves an empty lock
behind this module's back. A lock naming a process of this host that no longer exists is taken over,
and so is an empty or unreadable one older than :data:`EMPTY_LOCK_GRACE_S`; a lock from another host
is refused with the file to delete. Temporary files of dead processes (``.NAME.<pid>[.x].tmp``, the
names ``stereo.data.io.atomic_write`` and the exporter use) are removed once the lock is held.
Nothing is written into the folder before these checks pass.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import socket
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from stereo.cli import OutputDirError
from stereo.data.io import atomic_write, json_bytes

LOCK_NAME = ".stereo-run.lock"
MANIFEST_NAME = "manifest.json"
EMPTY_LOCK_GRACE_S = 10.0  # an empty lock this old cannot belong to a run that is still starting
# .NAME.<pid>.tmp (export), .NAME.<pid>.<random>.tmp (atomic_write), .STEM.<pid>.partial.SUFFIX (videos)
_TEMPORARY = re.compile(r"^\..+\.(\d+)(?:\.[A-Za-z0-9_]+)?\.tmp$|^\..+\.(\d+)\.partial\.[A-Za-z0-9]+$")
_HASH_CACHE: dict[tuple[str, int, int], str] = {}


# --------------------------------------------------------------------------- producers


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes, streamed; computed once per file state (path, size, mtime) per process."""
    path = Path(path).resolve()
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _HASH_CACHE:
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            while block := handle.read(1 << 20):
                digest.update(block)
        _HASH_CACHE[key] = digest.hexdigest()
    return _HASH_CACHE[key]


def producer(command: str, checkpoint: str | Path | None, settings: Mapping[str, Any]) -> dict[str, Any]:
    """What decides a result: the command, the checkpoint (path and content hash) and ``settings``
    (plain JSON values). Two runs with equal producers write the same result."""
    record: dict[str, Any] = {"command": command, "checkpoint": None, "checkpoint_sha256": None}
    if checkpoint is not None:
        record["checkpoint"] = str(Path(checkpoint).resolve())
        record["checkpoint_sha256"] = file_sha256(checkpoint)
    record["settings"] = json.loads(json_bytes(dict(settings)))  # as the manifest stores them (inf -> null)
    return record


def differences(earlier: Mapping[str, Any], now: Mapping[str, Any]) -> list[str]:
    """Human-readable differences between two producers of one command (empty when equal): for a nested
    setting, the first key path that differs and both values there (``optim.optimizer.lr=0.001 there,
    0.0002 now``), not the whole setting cut off before the difference."""
    found = []
    if earlier.get("checkpoint_sha256") != now.get("checkpoint_sha256"):
        def describe(p: Mapping[str, Any]) -> str:
            digest = p.get("checkpoint_sha256")
            return f"{p.get('checkpoint')} (sha256 {digest[:12]})" if digest else str(p.get("checkpoint"))
        found.append(f"checkpoint {describe(earlier)} there, {describe(now)} now")
    old, new = earlier.get("settings") or {}, now.get("settings") or {}
    if not isinstance(old, Mapping):
        return [*found, f"settings={_short(old)} there (not a mapping)"]
    for key in sorted(set(old) | set(new), key=str):
        if old.get(key, _ABSENT) != new.get(key, _ABSENT):
            where, there, here = _first_difference(str(key), old.get(key, _ABSENT), new.get(key, _ABSENT))
            found.append(f"{where}={_short(there)} there, {_short(here)} now")
    return found


_ABSENT = object()  # a key one producer has and the other lacks


def _first_difference(where: str, old: Any, new: Any) -> tuple[str, Any, Any]:
    """The first key path below ``where`` at which ``old`` and ``new`` differ, and both values there."""
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        for key in sorted(set(old) | set(new), key=str):
            if old.get(key, _ABSENT) != new.get(key, _ABSENT):
                return _first_difference(f"{where}.{key}", old.get(key, _ABSENT), new.get(key, _ABSENT))
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        for index, (a, b) in enumerate(zip(old, new)):
            if a != b:
                return _first_difference(f"{where}[{index}]", a, b)
    return where, old, new


def _short(value: Any, limit: int = 60) -> str:
    if value is _ABSENT:
        return "(not set)"
    text = json.dumps(value, default=str)
    return text if len(text) <= limit else text[:limit - 3] + "..."


# --------------------------------------------------------------------------- locks


def _owner() -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid(), "started": time.strftime("%Y-%m-%dT%H:%M:%S")}


def _pid_alive(pid: int) -> bool:
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
    if owner.get("host") == socket.gethostname() and isinstance(pid, int) and not _pid_alive(pid):
        return f"pid {pid} no longer exists"
    return None


def _no_space_hint(error: OSError) -> str:
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
        raise OutputDirError(f"{lock}: cannot create the run's lock file: {_no_space_hint(error)}") from None
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
        raise OutputDirError(f"{option}={directory}: cannot create the folder: {_no_space_hint(error)}") from None
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


def remove_orphan_temporaries(directory: Path) -> list[Path]:
    """Delete ``.NAME.<pid>...tmp`` files under ``directory`` whose process is gone (killed writers)."""
    removed = []
    for path in directory.rglob(".*"):
        if _is_orphan(path):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _is_orphan(path: Path) -> bool:
    """A temporary file of this project's writers whose process no longer exists."""
    match = _TEMPORARY.match(path.name)
    pid = match and int(match.group(1) or match.group(2))
    return bool(pid) and path.is_file() and not path.is_symlink() and not _pid_alive(pid)


# --------------------------------------------------------------------------- manifests

MAX_MANIFEST_BYTES = 256 << 20  # far above any run's manifest (a hundred thousand files take ~20 MB)
HYDRA_RECORD = ".hydra"  # write_hydra_record's folder: the run's own bookkeeping, not a result
_STATUS_WIDTH = len('"complete"')  # the status is padded to this width: it can be rewritten in place


def read_manifest(path: Path) -> dict[str, Any] | None:
    """An earlier run's manifest (None when there is none), refused in one line when it cannot be one."""
    if path.is_symlink() or (path.exists() and not path.is_file()):
        raise OutputDirError(f"{path} is not a plain file (a link or a folder), so it is not a manifest of this "
                             "project; move it, or choose another folder")
    if not path.is_file():
        return None
    size = path.stat().st_size
    if size > MAX_MANIFEST_BYTES:
        raise OutputDirError(f"{path}: {size} bytes, too large for a manifest of this project; move or delete it and "
                             "the results beside it by hand")
    try:
        manifest = json.loads(path.read_bytes())
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise OutputDirError(f"{path}: unreadable manifest of an earlier run; move or delete it and the results "
                             "beside it by hand") from None
    if not isinstance(manifest, dict):
        raise OutputDirError(f"{path}: not a manifest of this project; move or delete it by hand")
    return manifest


def _listed_files(manifest: Mapping[str, Any], folder: Path, manifest_path: Path, protected: Iterable[str],
                  key: str = "files") -> list[Path]:
    """The earlier run's files (or ``key="folders"``: sub-folders it created), each checked to lie inside
    ``folder`` (resolving symlinks) and to be neither the lock nor the manifest; any other entry means
    the manifest was tampered with."""
    files = manifest.get(key, [])
    if not isinstance(files, list):
        raise OutputDirError(f"{manifest_path}: '{key}' is not a list; the manifest was edited: nothing was deleted")
    root = folder.resolve()
    protected = {(root / name) for name in protected}
    checked = []
    for name in files:
        path = Path(name) if isinstance(name, str) and name not in ("", ".") and "\0" not in name else None
        target = (root / path).resolve() if path is not None and not path.is_absolute() and ".." not in path.parts else None
        inside = target is not None and root in target.parents
        if not inside or target in protected or (root / path) in protected:
            raise OutputDirError(
                f"{manifest_path} lists {name!r}, which is not a result file inside {folder} (outside it, a link "
                "out of it, the lock or the manifest): the manifest was edited or corrupted; nothing was deleted: "
                "remove the earlier results by hand or choose another folder")
        checked.append(root / path)
    return checked


def _fingerprint(path: Path) -> dict[str, Any] | None:
    """Size and sha256 of a plain file; None for a link, a folder or nothing."""
    if path.is_symlink() or not path.is_file():
        return None
    return {"size": path.stat().st_size, "sha256": file_sha256(path)}


def _unchanged(path: Path, recorded: Any) -> bool:
    """``path`` is a plain file with the size and sha256 a manifest ``recorded`` for it."""
    if not isinstance(recorded, Mapping) or path.is_symlink() or not path.is_file():
        return False
    return path.stat().st_size == recorded.get("size") and file_sha256(path) == recorded.get("sha256")


def _remember_hash(path: Path, digest: str) -> None:
    """Seed :func:`file_sha256`'s cache with the digest of bytes just written to ``path``."""
    path = path.resolve()
    stat = path.stat()
    _HASH_CACHE[(str(path), stat.st_size, stat.st_mtime_ns)] = digest


def _names(names: list[str], shown: int = 5) -> str:
    more = f" (+{len(names) - shown} more)" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


class Run:
    """One run's record in its folder: the producer, every file it writes (with its size and sha256 once
    written), the folders it created, its status."""

    def __init__(self, folder: Path, option: str, manifest_path: Path, record: dict[str, Any],
                 files: list[str], overwrite: bool, resumed: bool, hashes: Mapping[str, Any] | None = None,
                 replaceable: Iterable[str] = ()) -> None:
        self.folder, self.option, self.manifest_path = folder, option, manifest_path
        self.record, self.overwrite, self.resumed = record, overwrite, resumed
        self.files: list[str] = list(files)
        self.hashes: dict[str, Any] = {name: value for name, value in (hashes or {}).items() if name in self.files}
        self.folders: list[str] = []
        self._known = set(self.files) | set(replaceable)
        self._written: set[str] = set()  # planned by this run: hashed again by the final save
        self._unhashed: set[str] = set()  # planned since they were last hashed: hashed once they exist
        self._before = _all_files(folder)

    def name_of(self, path: str | Path) -> str:
        """``path`` relative to the folder, refusing one that would write through a link or outside it."""
        path = Path(path)
        relative = Path(os.path.relpath(os.path.abspath(path), os.path.abspath(self.folder)))
        if relative.is_absolute() or ".." in relative.parts or relative == Path("."):
            raise OutputDirError(f"{path}: not inside {self.option}={self.folder}")
        current = self.folder
        for part in relative.parts:
            current = current / part
            if current.is_symlink():
                raise OutputDirError(f"{current} is a symbolic link (to {os.readlink(current)}): results are written only "
                                     f"as plain files inside {self.option}={self.folder}; remove the link or choose another {self.option}")
        return relative.as_posix()

    def owns(self, path: str | Path) -> bool:
        return self.name_of(path) in self._known

    def check_free(self, paths: Iterable[str | Path]) -> list[str]:
        """Names of ``paths`` in the folder; refuses one that exists and no recorded run wrote (it may be
        the user's), unless ``overwrite=true``, and one that would be written through a link."""
        names = []
        for path in paths:
            name = self.name_of(path)
            if name not in self._known and (self.folder / name).exists() and not self.overwrite:
                raise OutputDirError(f"{self.folder / name} exists and no recorded run of {self.option}={self.folder} wrote "
                                     f"it (or it changed since): move it, choose another {self.option}, or pass "
                                     "overwrite=true to replace it")
            names.append(name)
        return names

    def plan(self, paths: Iterable[str | Path], written: bool = False) -> None:
        """Record files before writing them (a killed run's manifest then names its partial files), each
        checked by :meth:`check_free` first. ``written``: files this run has just written (no check).
        Their sizes and hashes are recorded by the next :meth:`save` that finds them written."""
        paths = list(paths)
        for name in ([self.name_of(p) for p in paths] if written else self.check_free(paths)):
            if name not in self.files:
                self.files.append(name)
            self._known.add(name)
            self._written.add(name)
            self._unhashed.add(name)

    def record_written(self, path: str | Path, data: bytes | None = None) -> None:
        """Record a file that a writer this module does not drive has just written (Lightning's
        checkpoints), with its size and hash at once: a killed run's checkpoints stay verifiable.
        ``data``: the bytes written (hashed from memory). A file outside the folder is not in its record."""
        try:
            name = self.name_of(path)
        except OutputDirError:
            return
        if data is not None:
            _remember_hash(self.folder / name, hashlib.sha256(data).hexdigest())
        self.plan([self.folder / name], written=True)
        self.save("running")

    def delete_written(self, path: str | Path, who: str) -> bool:
        """Delete ``path`` for ``who`` (e.g. Lightning's checkpoint rotation) only if it is a file this run,
        or the run it resumes, wrote and it is unchanged since; otherwise keep it and say so in one line."""
        try:
            name = self.name_of(path)
        except OutputDirError:
            name = None
        target = self.folder / name if name is not None else Path(path)
        if name is not None and name in self.files and _unchanged(target, self.hashes.get(name)):
            target.unlink()
            self.files.remove(name)
            self.hashes.pop(name, None)
            self._known.discard(name)
            self._written.discard(name)
            self._unhashed.discard(name)
            self.save("running")
            return True
        print(f"warning: {path}: kept, not deleted for {who}: it is not a file this run (or the run it resumes) "
              f"wrote inside {self.option}={self.folder}, or it changed since", file=sys.stderr)
        return False

    def own_folders(self, paths: Iterable[str | Path]) -> None:
        """Sub-folders this run creates, which writers this module does not drive fill (Lightning's
        checkpoints and loggers): recorded so that they are removed with the run's files once empty.
        Only folders that do not exist yet are claimed; files in them count only once recorded."""
        for path in paths:
            name = self.name_of(path)
            if name not in self.folders and not (self.folder / name).exists():
                self.folders.append(name)
        self.save("running")

    def adopt_new_files(self) -> None:
        """List every file that appeared or was rewritten in the folder during this run (writers this
        module does not drive, e.g. Lightning's loggers, which replace a log of the same name)."""
        lock_names = {LOCK_NAME, self.manifest_path.name}
        now = _all_files(self.folder)
        fresh = sorted(name for name, state in now.items() if self._before.get(name) != state)
        self.plan([self.folder / name for name in fresh if Path(name).name not in lock_names
                   and not _TEMPORARY.match(Path(name).name)], written=True)

    def _hash(self, names: Iterable[str]) -> None:
        for name in list(names):
            fingerprint = _fingerprint(self.folder / name)
            if fingerprint is not None:
                self.hashes[name] = fingerprint
                self._unhashed.discard(name)

    def save(self, status: str, **extra: Any) -> None:
        """Atomically write the manifest (the producer, extra fields, the files with their sizes and
        hashes, the folders, the status). A final status is hashed over every file this run wrote; when
        the disk is full it is written in place of the old status (which needs no new disk space)."""
        self._hash(self._written if status != "running" else self._unhashed)
        body = {**self.record, **extra, "files": sorted(self.files),
                "hashes": {name: self.hashes[name] for name in sorted(self.hashes)},
                "folders": sorted(self.folders), "status": status}
        text = json_bytes(body).decode().rstrip("\n")  # strict JSON: no bare NaN
        text = text[:-2] + " " * (_STATUS_WIDTH - len(json.dumps(status))) + "\n}\n"
        try:
            atomic_write(self.manifest_path, text.encode())
        except OSError as error:
            hint = _no_space_hint(error)
            if status != "running" and _set_status_in_place(self.manifest_path, status):
                raise OutputDirError(f"{self.manifest_path}: {hint}; the run ended with status {status!r}, written "
                                     "in place in its manifest, but the sizes and hashes of its last files are not "
                                     "recorded (a later overwrite=true keeps those files)") from None
            earlier = self._status_on_disk()
            said = f"; it still says {earlier!r}, not {status!r}" if earlier is not None else ""
            raise OutputDirError(f"{self.manifest_path}: cannot write the manifest: {hint}{said}") from None

    def _status_on_disk(self) -> str | None:
        try:
            return str(json.loads(self.manifest_path.read_bytes()).get("status"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, AttributeError):
            return "(unreadable)"

    def fail(self) -> None:
        """Record that the run failed. A run that wrote no result (only its ``.hydra/`` record, empty
        folders) removes what it wrote and its manifest instead: a corrected rerun then starts afresh
        rather than being refused as another producer."""
        self._hash(self._written)
        results = [name for name in self.files if not name.startswith(f"{HYDRA_RECORD}/")
                   and ((self.folder / name).exists() or (self.folder / name).is_symlink())]
        results += [name for name in self.folders
                    if any(p.is_file() or p.is_symlink() for p in (self.folder / name).rglob("*"))]
        if self.resumed or results:
            self.save("failed")
            return
        root = self.folder.resolve()
        for name in self.files:
            path = root / name
            if _unchanged(path, self.hashes.get(name)):
                path.unlink()
                _remove_empty_parents(path.parent, root)
        for name in self.folders:
            _remove_empty_folders(root / name)
        self.manifest_path.unlink(missing_ok=True)


def _set_status_in_place(manifest: Path, status: str) -> bool:
    """Overwrite the padded status at the end of a manifest :meth:`Run.save` wrote, in place."""
    try:
        with manifest.open("r+b") as handle:
            text = handle.read()
            start = text.rfind(b'"status": ') + len(b'"status": ')
            end = text.rfind(b"\n}")
            if start < len(b'"status": ') or end - start != _STATUS_WIDTH:
                return False
            handle.seek(start)
            handle.write(json.dumps(status).ljust(_STATUS_WIDTH).encode())
            handle.flush()
            os.fsync(handle.fileno())
        return True
    except OSError:
        return False


def _all_files(folder: Path) -> dict[str, tuple[int, int, int]]:
    """Every file (and link) under ``folder`` by name, with what tells a rewrite: inode, size, mtime."""
    if not folder.is_dir():
        return {}
    found = {}
    for path in folder.rglob("*"):
        if path.is_file() or path.is_symlink():
            stat = path.lstat()
            found[path.relative_to(folder).as_posix()] = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
    return found


def _clear_earlier(earlier: Mapping[str, Any], folder: Path, files: list[Path], folders: list[Path]) -> dict[str, list[str]]:
    """Delete the earlier run's files that are unchanged since it wrote them, then the folders it created
    once empty. Returns what was kept, by reason: ``changed`` (since it wrote them), ``unverified``
    (listed without a recorded hash: an older version's manifest, a killed run's last files) and
    ``foreign`` (in its folders, not listed: not written by it)."""
    hashes = earlier.get("hashes") if isinstance(earlier.get("hashes"), Mapping) else {}
    root = folder.resolve()
    kept: dict[str, list[str]] = {"changed": [], "unverified": [], "foreign": []}
    for path in files:
        name = path.relative_to(root).as_posix()
        if _unchanged(path, hashes.get(name)):
            path.unlink()
            _remove_empty_parents(path.parent, root)
        elif path.exists() or path.is_symlink():
            kept["changed" if name in hashes else "unverified"].append(name)
    listed = set(kept["changed"]) | set(kept["unverified"])
    for path in folders:
        _remove_empty_folders(path)
        if path.is_dir() and not path.is_symlink():
            kept["foreign"] += [p.relative_to(root).as_posix() for p in sorted(path.rglob("*"))
                                if (p.is_file() or p.is_symlink()) and p.relative_to(root).as_posix() not in listed]
    return kept


def _say_kept(option: str, folder: Path, kept: Mapping[str, list[str]]) -> None:
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


@contextmanager
def open_run(target: str | Path, option: str, produced_by: Mapping[str, Any], *, overwrite: bool = False,
             resumable: bool = False, is_file: bool = False, extra: Mapping[str, Any] | None = None,
             check: Callable[[], None] | None = None, will_write: Iterable[str | Path] = ()) -> Iterator[Run]:
    """Claim ``target`` (a folder, or one file when ``is_file``) for a run of ``produced_by``
    (:func:`producer`), apply the policy of the module docstring, and keep the manifest current:
    ``running`` now, ``complete`` or ``failed`` at the end. ``extra``: more fields for the manifest
    (e.g. the resolved config, the command line); ``check``: a last test of the folder, run under the
    lock after an earlier run was cleared and before anything is written; ``will_write``: files the run
    knows it will write, checked (:meth:`Run.check_free`) before anything is written."""
    target = Path(target)
    if is_file:
        if target.is_dir():
            raise OutputDirError(f"{option}={target} is a folder; give a file path (e.g. {target / 'model.onnx'})")
        if target.is_symlink():
            raise OutputDirError(f"{option}={target} is a symbolic link (to {os.readlink(target)}): give a plain file path")
        folder, lock_name, manifest_path = target.parent, f".{target.name}.lock", target.with_name(f"{target.name}.manifest.json")
    else:
        folder, lock_name, manifest_path = target, LOCK_NAME, target / MANIFEST_NAME
    record = {**produced_by, **(extra or {})}
    created = not folder.exists()
    try:
        with _open_claimed(target, folder, option, lock_name, manifest_path, produced_by, record, overwrite,
                           resumable, is_file, check, will_write) as run:
            yield run
    finally:
        if created:  # a run that failed before it wrote anything leaves no empty folder behind
            _rmdir_if_empty(folder)


@contextmanager
def _open_claimed(target: Path, folder: Path, option: str, lock_name: str, manifest_path: Path,
                  produced_by: Mapping[str, Any], record: dict[str, Any], overwrite: bool, resumable: bool,
                  is_file: bool, check: Callable[[], None] | None, will_write: Iterable[str | Path]) -> Iterator[Run]:
    """:func:`open_run` once its arguments are checked: the policy, under the folder's lock."""
    with claim(folder, option, lock_name) as folder:
        remove_orphan_temporaries(folder) if not is_file else _remove_orphans_of(target)
        earlier = read_manifest(manifest_path)
        files: list[str] = []
        folders: list[str] = []
        hashes: Mapping[str, Any] = {}
        kept: dict[str, list[str]] = {}
        found: list[str] = []
        resumed = False
        if is_file and earlier is not None and target.exists() and earlier.get("file_sha256") != file_sha256(target):
            earlier = None  # the file changed after its manifest was written: it is not that run's result
        if is_file and earlier is None and target.exists() and not overwrite:
            raise OutputDirError(f"{option}={target} already exists and has no {manifest_path.name} saying this project "
                                 f"wrote it: choose another {option} or pass overwrite=true to replace it")
        if earlier is not None and earlier.get("command") != produced_by["command"]:
            raise OutputDirError(f"{option}={target}: {manifest_path} was not written by {produced_by['command']} "
                                 f"(it names {earlier.get('command')!r}), so it is never used to delete anything; "
                                 f"choose another {option}")
        if earlier is not None:
            found = differences(earlier, produced_by)
            protected = [lock_name, manifest_path.name]
            listed = _listed_files(earlier, folder, manifest_path, protected) if not is_file else []
            listed_folders = _listed_files(earlier, folder, manifest_path, protected, "folders") if not is_file else []
            if found and not overwrite:
                shown = "; ".join(found)
                status = earlier.get("status")
                state = f", a run that ended {status!r}" if status != "complete" else ""
                raise OutputDirError(f"{option}={target} holds results of another producer ({manifest_path}{state}): "
                                     f"{shown}. Choose another {option} or pass overwrite=true to replace them")
            if resumable and not found:
                root = folder.resolve()  # the listed paths are resolved; the folder may be given relative
                files, resumed = [p.relative_to(root).as_posix() for p in listed], True
                folders = [p.relative_to(root).as_posix() for p in listed_folders]
                hashes = earlier.get("hashes") if isinstance(earlier.get("hashes"), Mapping) else {}
            else:  # overwrite, or the same producer redoing its own results
                kept = _clear_earlier(earlier, folder, listed, listed_folders)
                manifest_path.unlink(missing_ok=True)
        if check is not None:
            check()
        run = Run(folder, option, manifest_path, record, files or ([target.name] if is_file else []),
                  overwrite, resumed, hashes, replaceable=kept.get("unverified", ()))
        run.folders = folders
        rewritten = set(run.check_free(will_write))
        _say_kept(option, folder, {reason: [n for n in names if n not in rewritten] for reason, names in kept.items()})
        if is_file:  # the manifest describes the file in place: written once the new file is there
            yield run
            run.save("complete", file_sha256=file_sha256(target))
            return
        run.save("running")
        try:
            yield run
        except BaseException:
            try:
                run.fail()
            except OutputDirError as error:  # the run's own error is the one to report; this one is a note
                print(f"warning: {error}", file=sys.stderr)
            raise
        run.save("complete")


def _remove_empty_folders(folder: Path) -> None:
    """Remove ``folder`` and the folders under it that hold nothing (never a link, never a file)."""
    if folder.is_symlink() or not folder.is_dir():
        return
    for root, dirs, _ in os.walk(folder, topdown=False, followlinks=False):
        for name in dirs:
            if not Path(root, name).is_symlink():
                _rmdir_if_empty(Path(root, name))
    _rmdir_if_empty(folder)


def _remove_empty_parents(folder: Path, root: Path) -> None:
    """Remove ``folder`` and its parents up to (not including) ``root`` while they are empty."""
    while folder != root and root in folder.parents:
        if not _rmdir_if_empty(folder):
            return
        folder = folder.parent


def _rmdir_if_empty(path: Path) -> bool:
    try:
        path.rmdir()
        return True
    except OSError:
        return False


def _remove_orphans_of(target: Path) -> None:
    """Temporary files of dead processes exporting to ``target`` (``.NAME.<pid>.tmp``)."""
    for path in target.parent.glob(f".{target.name}.*"):
        if _is_orphan(path):
            path.unlink(missing_ok=True)


def config_record(cfg: Any) -> dict[str, Any]:
    """The resolved config and the command line's overrides, for a manifest."""
    from omegaconf import OmegaConf

    return {"config": OmegaConf.to_container(cfg, resolve=True), "overrides": _overrides()}


def _overrides() -> list[str]:
    from hydra.core.hydra_config import HydraConfig

    try:
        return list(HydraConfig.get().overrides.task)
    except ValueError:  # not under @hydra.main (tests, notebooks)
        return []


def write_hydra_record(run: Run, cfg: Any) -> None:
    """Hydra's record of a run (``.hydra/config.yaml``, ``hydra.yaml``, ``overrides.yaml``), written
    here, after the folder's checks passed: the configs set ``hydra.output_subdir: null`` so that Hydra
    does not write it before a run that is then refused (it would describe results it did not make)."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    try:
        hydra_cfg = HydraConfig.get()
    except ValueError:
        return
    texts = {"config.yaml": OmegaConf.to_yaml(cfg), "hydra.yaml": OmegaConf.to_yaml({"hydra": hydra_cfg}),
             "overrides.yaml": OmegaConf.to_yaml(list(hydra_cfg.overrides.task))}
    paths = {name: run.folder / ".hydra" / name for name in texts}
    run.plan(paths.values())
    run.save("running")
    for name, text in texts.items():
        atomic_write(paths[name], text.encode())
