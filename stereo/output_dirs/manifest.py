"""The manifest: what produced a folder's results, every file the run wrote (with size and sha256) and
the folders it created, and its status, kept current while the run writes.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from stereo.cli import OutputDirError
from stereo.data.io import atomic_write, json_bytes
from stereo.output_dirs.cleanup import remove_empty_folders, remove_empty_parents, unchanged
from stereo.output_dirs.lock import LOCK_NAME, no_space_hint
from stereo.output_dirs.orphans import TEMPORARY
from stereo.output_dirs.provenance import file_sha256, remember_hash

MANIFEST_NAME = "manifest.json"
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


def listed_files(manifest: Mapping[str, Any], folder: Path, manifest_path: Path, protected: Iterable[str],
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
        self._before = all_files(folder)

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
            remember_hash(self.folder / name, hashlib.sha256(data).hexdigest())
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
        if name is not None and name in self.files and unchanged(target, self.hashes.get(name)):
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
        now = all_files(self.folder)
        fresh = sorted(name for name, state in now.items() if self._before.get(name) != state)
        self.plan([self.folder / name for name in fresh if Path(name).name not in lock_names
                   and not TEMPORARY.match(Path(name).name)], written=True)

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
            hint = no_space_hint(error)
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
            if unchanged(path, self.hashes.get(name)):
                path.unlink()
                remove_empty_parents(path.parent, root)
        for name in self.folders:
            remove_empty_folders(root / name)
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


def all_files(folder: Path) -> dict[str, tuple[int, int, int]]:
    """Every file (and link) under ``folder`` by name, with what tells a rewrite: inode, size, mtime."""
    if not folder.is_dir():
        return {}
    found = {}
    for path in folder.rglob("*"):
        if path.is_file() or path.is_symlink():
            stat = path.lstat()
            found[path.relative_to(folder).as_posix()] = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
    return found
