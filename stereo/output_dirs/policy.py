"""The one policy every command applies to an earlier result in its output (see the package docstring).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from stereo.cli import OutputDirError
from stereo.output_dirs.cleanup import clear_earlier, rmdir_if_empty, say_kept
from stereo.output_dirs.lock import LOCK_NAME, claim
from stereo.output_dirs.manifest import MANIFEST_NAME, Run, listed_files, read_manifest
from stereo.output_dirs.orphans import remove_orphan_temporaries, remove_orphans_of
from stereo.output_dirs.provenance import differences, file_sha256


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
            rmdir_if_empty(folder)


@contextmanager
def _open_claimed(target: Path, folder: Path, option: str, lock_name: str, manifest_path: Path,
                  produced_by: Mapping[str, Any], record: dict[str, Any], overwrite: bool, resumable: bool,
                  is_file: bool, check: Callable[[], None] | None, will_write: Iterable[str | Path]) -> Iterator[Run]:
    """:func:`open_run` once its arguments are checked: the policy, under the folder's lock."""
    with claim(folder, option, lock_name) as folder:
        remove_orphan_temporaries(folder) if not is_file else remove_orphans_of(target)
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
            listed = listed_files(earlier, folder, manifest_path, protected) if not is_file else []
            listed_folders = listed_files(earlier, folder, manifest_path, protected, "folders") if not is_file else []
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
                kept = clear_earlier(earlier, folder, listed, listed_folders)
                manifest_path.unlink(missing_ok=True)
        if check is not None:
            check()
        run = Run(folder, option, manifest_path, record, files or ([target.name] if is_file else []),
                  overwrite, resumed, hashes, replaceable=kept.get("unverified", ()))
        run.folders = folders
        rewritten = set(run.check_free(will_write))
        say_kept(option, folder, {reason: [n for n in names if n not in rewritten] for reason, names in kept.items()})
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
