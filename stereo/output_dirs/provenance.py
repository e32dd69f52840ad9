"""What produced a result: the command, the checkpoint's path and sha256, the settings, and how two
producers differ, said in one line a user can act on.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from stereo.data.io import json_bytes

_HASH_CACHE: dict[tuple[str, int, int], str] = {}


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


def remember_hash(path: Path, digest: str) -> None:
    """Seed :func:`file_sha256`'s cache with the digest of bytes just written to ``path``."""
    path = path.resolve()
    stat = path.stat()
    _HASH_CACHE[(str(path), stat.st_size, stat.st_mtime_ns)] = digest


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
