"""One run, one consistent output folder.

A run builds its deliverables in ``OUT/.bgm-batch/staging`` and :func:`publish` moves them into
``OUT`` together at the end, so a failed or killed run leaves the previous complete output
untouched. Publishing removes ``manifest.json`` first and renames the new one in last: whatever
happens in between, a manifest never describes files of another run. Deliverables of the
previous run that this run does not produce (``scored.mp4`` after a rerun without ``--video``)
are removed. :func:`run_lock` stops a second run into the same folder with a message naming
the other run, and recognises the lock of a run killed with ``kill -9`` (its pid is gone); the
killed run's leftovers (its process group, and any process still writing into
``OUT/.bgm-batch``, like ffmpeg's temp output) are stopped then. Temporary files live in
``OUT/.bgm-batch/tmp`` (:func:`temp_files_under`) and are removed by the next run at the latest.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bgm_batch.atomic import write_text
from bgm_batch.errors import BgmError

PRIVATE = ".bgm-batch"
"""The run's own folder inside ``--out``: lock, staging, temp files, the published list."""

MANIFEST = "manifest.json"
EARLIER_DELIVERABLES = (
    "scored.mp4",
    "track.flac",
    "track-*.flac",
    "segments.parquet",
    "quarantine.parquet",
    "timeline.otio",
    "timeline-*.otio",
    MANIFEST,
)
"""What a run wrote before the published list existed: stale candidates in an old folder."""

_UNREADABLE_LOCK_GRACE_S = 10.0  # a lock still being written is not stale


class OutputLockedError(BgmError):
    """Another run is writing into the same output folder."""


def private_dir(out_dir: Path) -> Path:
    """``OUT/.bgm-batch``, created (an unwritable ``--out`` fails here, before any work)."""
    if Path(out_dir).exists() and not Path(out_dir).is_dir():
        raise BgmError(f"{out_dir}: --out must be a folder, and this is a file")
    path = Path(out_dir) / PRIVATE
    path.mkdir(parents=True, exist_ok=True)
    return path


def _fresh(path: Path) -> Path:
    """``path`` as a new empty folder; whatever a killed run left there goes."""
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def fresh_staging(out_dir: Path) -> Path:
    """An empty staging folder for this run's deliverables (inside ``out_dir``: same file
    system, so publishing is a rename)."""
    return _fresh(private_dir(out_dir) / "staging")


def _published_list(out_dir: Path) -> Path:
    return Path(out_dir) / PRIVATE / "published.json"


def _previous_deliverables(out_dir: Path) -> set[str]:
    """Names the last run published (or, in a folder from before publishing, the known ones)."""
    record = _published_list(out_dir)
    if record.is_file():
        return set(json.loads(record.read_text()))
    return {p.name for pattern in EARLIER_DELIVERABLES for p in Path(out_dir).glob(pattern)}


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _move(source: Path, target: Path) -> None:
    """Rename ``source`` over ``target``; a folder replaces a folder."""
    if target.is_dir() and not target.is_symlink():
        shutil.rmtree(target)
    os.replace(source, target)


def publish(staging: Path, out_dir: Path) -> list[str]:
    """Move everything in ``staging`` into ``out_dir`` and drop the earlier run's leftovers.

    Returns the names published, sorted. The manifest goes first (out) and last (in).
    """
    out_dir = Path(out_dir)
    names = sorted(p.name for p in Path(staging).iterdir())
    stale = _previous_deliverables(out_dir) - set(names)
    (out_dir / MANIFEST).unlink(missing_ok=True)
    for name in names:
        if name != MANIFEST:
            _move(Path(staging) / name, out_dir / name)
    for name in sorted(stale):
        _remove(out_dir / name)
    write_text(_published_list(out_dir), json.dumps(names))
    if MANIFEST in names:
        os.replace(Path(staging) / MANIFEST, out_dir / MANIFEST)
    Path(staging).rmdir()
    return names


# --- temporary files ----------------------------------------------------------------------


@contextlib.contextmanager
def temp_files_under(out_dir: Path) -> Iterator[Path]:
    """Point ``tempfile`` and child processes (``TMPDIR``) at ``OUT/.bgm-batch/tmp`` for the
    block, so a killed run's temp files lie where the next run removes them."""
    tmp = _fresh(private_dir(out_dir) / "tmp")
    previous_env, previous_dir = os.environ.get("TMPDIR"), tempfile.tempdir
    os.environ["TMPDIR"], tempfile.tempdir = str(tmp), str(tmp)
    try:
        yield tmp
    finally:
        tempfile.tempdir = previous_dir
        if previous_env is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = previous_env
        shutil.rmtree(tmp, ignore_errors=True)


# --- the lock -----------------------------------------------------------------------------


def _lock_info(command: list[str]) -> dict[str, Any]:
    return {
        "pid": os.getpid(),
        "pgid": os.getpgid(0),
        "host": socket.gethostname(),
        "command": " ".join(command),
        "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def _read_lock(lock: Path) -> dict[str, Any] | None:
    """The other run's lock, or None when it cannot be read (being written, or corrupt)."""
    try:
        info = json.loads(lock.read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) and isinstance(info.get("pid"), int) else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_stale(lock: Path, info: dict[str, Any] | None) -> bool:
    """A lock whose run is gone: its pid is dead on this host, or it stayed unreadable."""
    if info is None:
        with contextlib.suppress(FileNotFoundError):
            return time.time() - lock.stat().st_mtime > _UNREADABLE_LOCK_GRACE_S
        return True
    return info.get("host") == socket.gethostname() and not _alive(info["pid"])


def _stop_group(info: dict[str, Any]) -> None:
    """A command started from a shell leads its own process group; after ``kill -9`` its
    children keep that group id, and no new process can take the id while the group exists.
    So when the dead run led its group, signalling the group reaches exactly its leftovers."""
    pgid = info.get("pgid")
    if isinstance(pgid, int) and pgid == info.get("pid") and pgid != os.getpgid(0):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGTERM)


def _points_into(pid: int, folder: Path) -> bool:
    """Whether a process's command line names a path inside ``folder`` (relative paths taken
    from the process's own working directory)."""
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        cwd = Path(os.readlink(f"/proc/{pid}/cwd"))
    except OSError:
        return False
    named = [cwd / os.fsdecode(arg) for arg in args if PRIVATE.encode() in arg]
    return any(folder == path.resolve() or folder in path.resolve().parents for path in named)


def writers_into(out_dir: Path) -> list[int]:
    """Processes (not this one) whose command line names a file in ``OUT/.bgm-batch``: only a
    run writes there (ffmpeg's temp output, the mux's temp files), so with no live run they
    are a killed run's leftovers."""
    folder = (Path(out_dir) / PRIVATE).resolve()
    pids = [int(p.name) for p in Path("/proc").glob("[0-9]*")]
    return [pid for pid in pids if pid != os.getpid() and _points_into(pid, folder)]


def reap_orphans(info: dict[str, Any], out_dir: Path) -> list[int]:
    """Stop what a killed run left running (ffmpeg, FluidSynth, workers): its process group,
    and any process still writing into the output's private folder. Returns those pids."""
    _stop_group(info)
    leftovers = writers_into(out_dir)
    for pid in leftovers:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
    return leftovers


def _children(pid: int) -> list[int]:
    """Child pids of ``pid`` over all its threads (Linux ``/proc``; empty elsewhere)."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError):
            found += [int(child) for child in task.read_text().split()]
    return found


def _descendants(pid: int) -> list[int]:
    children = _children(pid)
    return children + [grandchild for child in children for grandchild in _descendants(child)]


def stop_children(keep: set[int] = frozenset(), grace_s: float = 5.0) -> list[int]:
    """End every process this one started (ffmpeg, FluidSynth, workers), except ``keep``,
    and reap them.

    A run that fails or is interrupted must not leave them writing on; ``subprocess.run``
    kills its child on an exception, but not every library waits that way. SIGTERM first,
    SIGKILL after ``grace_s``. Returns the pids that were signalled.
    """
    pids = [pid for pid in _descendants(os.getpid()) if pid not in keep]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any([_running(pid) for pid in pids]):
        time.sleep(0.05)
    for pid in filter(_running, pids):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return pids


def _running(pid: int) -> bool:
    """Alive and not a zombie; reaps ``pid`` when it is our exited child."""
    with contextlib.suppress(ChildProcessError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return _alive(pid)
    return state != "Z"


def _describe(info: dict[str, Any] | None) -> str:
    if info is None:
        return "a run whose lock file is being written"
    since = f"since {info.get('started')}"
    return f"pid {info['pid']} on {info.get('host')}, {since}: {info.get('command')}"


@contextlib.contextmanager
def run_lock(out_dir: Path, command: list[str]) -> Iterator[Path]:
    """Hold ``OUT/.bgm-batch/lock`` for the block; another live run's lock is an error."""
    lock = private_dir(out_dir) / "lock"
    mine = _lock_info(command)
    for _ in range(3):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            break
        except FileExistsError:
            other = _read_lock(lock)
            if not _is_stale(lock, other):
                raise OutputLockedError(
                    f"{out_dir}: another run is writing here ({_describe(other)}); wait for it, "
                    f"or remove {lock} if that run is gone"
                ) from None
            reap_orphans(other or {}, out_dir)
            lock.unlink(missing_ok=True)
    else:
        raise OutputLockedError(f"{out_dir}: could not take {lock}; try again")
    with os.fdopen(fd, "w") as file:
        json.dump(mine, file)
    older = set(_descendants(os.getpid()))  # a caller's own helpers are not the run's
    try:
        yield lock
    except BaseException:
        stop_children(keep=older)
        raise
    finally:
        if (_read_lock(lock) or {}).get("pid") == mine["pid"]:
            lock.unlink(missing_ok=True)
