"""What makes an archive run incremental and safe: fingerprints, state files and the lock.

A recording's fingerprint is a sha256 over everything that decides its outputs: the content
of its input files and its video, the video offset, the settings (minus those that change how
a run goes, never what it makes: ``progress``, ``archive``, ``keep_work``, cache folders), the
game profile and the text and audio backends' identities (model ids, revisions, adapter
hashes, composer revision). It is written to ``DIR/<recording>/archive_state.json`` after
every deliverable of the recording is in place (and before its render work files are
removed), so a state file always describes complete outputs: a run killed before that point
redoes the recording (its finished segments come back from the render work folder), one
killed after it skips the recording.

``archive_lock`` takes an exclusive ``flock`` on ``DIR/.archive.lock``: a second run on the
same DIR fails at once instead of writing the same files. The kernel drops the lock when the
process dies, even by SIGKILL, so a killed run never leaves a stale lock behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bgm_batch.atomic import write_text
from bgm_batch.data.archive import inputs_hash
from bgm_batch.settings import Settings

STATE_FILE = "archive_state.json"
LOCK_FILE = ".archive.lock"
# settings that never change what a run makes (where caches live, whether work files stay)
_RUN_ONLY = {
    "progress": True,
    "archive": True,
    "keep_work": True,
    "offline": True,
    "cache_dir": True,
    "text": {"cache_dir"},
}


class ArchiveLockedError(RuntimeError):
    """Another archive run holds the output folder."""


def settings_identity(settings: Settings) -> dict[str, Any]:
    """The settings and the profile, as they decide outputs (JSON-ready)."""
    return {
        "settings": settings.model_dump(mode="json", exclude=_RUN_ONLY),
        "profile": settings.profile_model.model_dump(mode="json"),
    }


def fingerprint_parts(
    row: dict[str, Any], settings_id: dict[str, Any], models: dict[str, dict[str, str]]
) -> dict[str, Any]:
    """The parts of one recording's fingerprint (kept in the state file to explain a redo)."""
    return {
        "inputs": inputs_hash(row["inputs"]),
        "video": inputs_hash([row["video"]]) if row["video"] else None,
        "video_offset_s": row["video_offset_s"],
        "settings": _digest(settings_id["settings"]),
        "profile": _digest(settings_id["profile"]),
        "models": _digest(models),
    }


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def fingerprint(parts: dict[str, Any]) -> str:
    """One hash over the parts."""
    return _digest(parts)


def read_state(recording_dir: Path) -> dict[str, Any] | None:
    """The last successful run's state, or None (never run, or unreadable)."""
    try:
        return json.loads((recording_dir / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None


def is_current(recording_dir: Path, digest: str) -> bool:
    """True when the recording's last successful run had this fingerprint."""
    state = read_state(recording_dir)
    return state is not None and state.get("fingerprint") == digest


def write_state(recording_dir: Path, digest: str, parts: dict[str, Any]) -> None:
    """Mark the recording done (atomically; call after every deliverable is written)."""
    write_text(
        recording_dir / STATE_FILE,
        json.dumps({"fingerprint": digest, "parts": parts}, indent=2, sort_keys=True),
    )


@contextlib.contextmanager
def archive_lock(out_dir: Path) -> Iterator[None]:
    """Hold ``out_dir``'s lock for the block; raise ``ArchiveLockedError`` if it is taken."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / LOCK_FILE, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise ArchiveLockedError(f"{out_dir}: another archive run is writing here") from exc
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
