"""Run Prefect quietly and offline, with its state in the user's cache folder.

Prefect reads its settings from the environment when it is first imported, so the CLI and the
tests call ``configure_prefect`` before importing any flow. Values already set by the user win.
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

DEFAULTS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "PREFECT_LOGGING_LEVEL": "CRITICAL",  # Prefect's own logs only when asked (set it lower)
    # the temporary local server can take long to start on a busy 2-core machine
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    "TOKENIZERS_PARALLELISM": "false",
}


def configure_prefect(home: Path | None = None) -> None:
    """Set Prefect's home (default: the user cache folder, never the current directory) and
    the quiet, offline defaults. The model hub is not forced offline: that is ``--offline``."""
    home = home or Path(platformdirs.user_cache_dir("bgm-batch")) / "prefect"
    os.environ.setdefault("PREFECT_HOME", str(home.resolve()))
    Path(os.environ["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)  # its database lives here
    for key, value in DEFAULTS.items():
        os.environ.setdefault(key, value)
