"""The one exception base class the CLI prints as a single line.

Raise :class:`BgmError` (or a subclass) for anything the user can fix: a bad path, a bad setting,
an unusable input. ``bgm-batch`` turns it into ``bgm-batch: error: <message>`` and a non-zero exit,
with a traceback only under ``--debug``. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class BgmError(Exception):
    """An error the user can fix; printed as one line."""
