"""The one exception base class the CLI prints as a single line, and the one-line wording of
the other errors a user can fix (a full disk, a read-only folder, a bad setting).

Raise :class:`BgmError` (or a subclass) for anything the user can fix: a bad path, a bad setting,
an unusable input. ``bgm-batch`` turns it into ``bgm-batch: error: <message>`` and a non-zero exit,
with a traceback only under ``--debug``. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import errno
import shutil
from pathlib import Path


class BgmError(Exception):
    """An error the user can fix; printed as one line."""


def _free_space(path: Path) -> str:
    """Free space on the filesystem holding ``path`` (or its nearest existing parent)."""
    existing = next((p for p in (path, *path.parents) if p.exists()), Path("."))
    return f"{shutil.disk_usage(existing).free / 1e6:.1f} MB free"


def _os_error_line(exc: OSError, hint: Path | None) -> str:
    """One line for a file system error, naming the path and, for a full disk, the free space."""
    path = Path(exc.filename) if exc.filename else hint
    where = f"{path}: " if path else ""
    if exc.errno == errno.ENOSPC:
        free = f" ({_free_space(path)})" if path else ""
        return f"{where}disk full{free}; free some space and rerun the same command to resume"
    if exc.errno == errno.EROFS:
        return f"{where}read-only file system; choose another output folder"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"{where}permission denied"
    if exc.errno == errno.ENOTDIR:
        return f"{where}a part of this path is a file, not a folder"
    if exc.errno == errno.EISDIR:
        return f"{where}is a folder, expected a file"
    return f"{where}{exc.strerror or exc}"


def _validation_lines(exc: Exception) -> list[str]:
    """A pydantic validation error as one line per field (``audio.batch_size: ...``)."""
    lines = []
    for error in exc.errors():  # type: ignore[attr-defined]
        got = repr(error.get("input"))
        got = got if len(got) <= 60 else f"{got[:60]}..."
        where = ".".join(str(p) for p in error["loc"]) or "(top level)"
        lines.append(f"setting {where}: {error['msg']} (got {got})")
    return lines


def user_error_lines(exc: BaseException, hint: Path | None = None) -> list[str] | None:
    """The lines the CLI prints for an error the user can fix, or None for a bug.

    ``hint`` is the output folder, named when a file system error carries no path.
    """
    from polars.exceptions import PolarsError
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):
        return _validation_lines(exc)
    if isinstance(exc, BgmError):
        return [str(exc)]
    if isinstance(exc, OSError):
        return [_os_error_line(exc, hint)]
    if isinstance(exc, UnicodeDecodeError):
        return [f"input is not UTF-8 text ({exc.reason} at byte {exc.start})"]
    if isinstance(exc, PolarsError):
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return [f"cannot read the input: {first}"]
    return None
