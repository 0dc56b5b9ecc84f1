"""Names taken from input data are never paths.

A recording id comes from a capture file's name or a Parquet column and ends up in output file
names (``track-<id>.flac``, ``<id>.parquet``). Input is hostile until checked: ``../../x``
would write outside the output folder. So ids must match :data:`RECORDING_ID` (checked at
ingest, where a bad id quarantines its window), and every path built from one is checked again
with :func:`inside` right before it is written.
"""

from __future__ import annotations

import re
from pathlib import Path

from bgm_batch.errors import BgmError

RECORDING_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
"""A letter or digit, then up to 127 letters, digits, ``.``, ``_`` or ``-``: never a separator,
never ``.``/``..``, never hidden, always a valid file name on every platform we ship to."""

RECORDING_ID_RULE = "1-128 characters: letters, digits, '.', '_', '-', starting with a letter/digit"


class UnsafePathError(BgmError):
    """A path built from data would land outside the folder it belongs in."""


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a recording id (None when it can)."""
    if RECORDING_ID.fullmatch(name):
        return None
    shown = name if len(name) <= 80 else f"{name[:80]}..."
    return f"recording id {shown!r} is not a safe name ({RECORDING_ID_RULE})"


def inside(root: Path, path: Path) -> Path:
    """``path`` if it lies under ``root`` once both are resolved; raise otherwise.

    Called on every output path built from a name, as the last line of defence after the
    ingest check: a symlinked output folder is fine, an escape through ``..`` or a link is not.
    """
    resolved_root = Path(root).resolve()
    resolved = Path(path).resolve()
    if resolved != resolved_root and resolved_root not in resolved.parents:
        raise UnsafePathError(f"{path}: refusing to write outside {root}")
    return Path(path)
