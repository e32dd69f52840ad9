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

One concern a module: :mod:`.provenance` (what produced a result, how two producers differ),
:mod:`.lock` (one run a folder), :mod:`.orphans` (killed writers' temporary files), :mod:`.manifest`
(the record a run keeps of its files), :mod:`.cleanup` (deleting an earlier run's unchanged files),
:mod:`.policy` (:func:`open_run`: the rules above) and :mod:`.hydra_record` (``.hydra/``).
"""

from stereo.output_dirs.hydra_record import config_record, write_hydra_record
from stereo.output_dirs.lock import EMPTY_LOCK_GRACE_S, LOCK_NAME, check_is_folder, claim
from stereo.output_dirs.manifest import HYDRA_RECORD, MANIFEST_NAME, MAX_MANIFEST_BYTES, Run, read_manifest
from stereo.output_dirs.orphans import remove_orphan_temporaries
from stereo.output_dirs.policy import open_run
from stereo.output_dirs.provenance import differences, file_sha256, producer

__all__ = ["EMPTY_LOCK_GRACE_S", "HYDRA_RECORD", "LOCK_NAME", "MANIFEST_NAME", "MAX_MANIFEST_BYTES", "Run",
           "check_is_folder", "claim", "config_record", "differences", "file_sha256", "open_run", "producer",
           "read_manifest", "remove_orphan_temporaries", "write_hydra_record"]
