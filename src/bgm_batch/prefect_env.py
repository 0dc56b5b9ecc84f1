"""Run Prefect quietly and offline, with its state inside the project.

Prefect reads its settings from the environment when it is first imported, so the CLI and the
tests call ``configure_prefect`` before importing any flow. Values already set by the user win.
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULTS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "PREFECT_LOGGING_LEVEL": "WARNING",
    # the temporary local server can take long to start on a busy 2-core machine
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    "HF_HUB_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


def configure_prefect(home: Path | None = None) -> None:
    """Set Prefect's home (default ``./.prefect``) and the quiet, offline defaults."""
    os.environ.setdefault("PREFECT_HOME", str((home or Path(".prefect")).resolve()))
    for key, value in DEFAULTS.items():
        os.environ.setdefault(key, value)
