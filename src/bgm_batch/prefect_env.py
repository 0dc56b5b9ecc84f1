"""Run Prefect quietly and offline, with its state in the user's cache folder.

Prefect reads its settings from the environment when it is first imported, so the CLI and the
tests call ``configure_prefect`` before importing any flow. Values already set by the user win.

Which Prefect a run uses (``run_flow``): the server or Prefect Cloud workspace the user
configured (``PREFECT_API_URL`` in the environment or the active Prefect profile), or a
temporary local server when they ask for one (``PREFECT_SERVER_ALLOW_EPHEMERAL_MODE=true`` in
the environment). Otherwise none: the flow's function runs directly and its tasks as plain
calls (``bgm_batch.flows.local``), without Prefect's retries and run history, and no server
process is started (so none can be orphaned by a kill). A one-window run then costs its
stages plus Python's imports, not the seconds a temporary server takes to start.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import platformdirs

DEFAULTS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "PREFECT_LOGGING_LEVEL": "CRITICAL",  # Prefect's own logs only when asked (set it lower)
    # the temporary local server can take long to start on a busy 2-core machine
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    "TOKENIZERS_PARALLELISM": "false",
}
EPHEMERAL_VARS = ("PREFECT_SERVER_ALLOW_EPHEMERAL_MODE", "PREFECT_SERVER_EPHEMERAL_ENABLED")


def configure_prefect(home: Path | None = None) -> None:
    """Set Prefect's home (default: the user cache folder, never the current directory) and
    the quiet, offline defaults. The model hub is not forced offline: that is ``--offline``."""
    home = home or Path(platformdirs.user_cache_dir("bgm-batch")) / "prefect"
    os.environ.setdefault("PREFECT_HOME", str(home.resolve()))
    Path(os.environ["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)  # its database lives here
    for key, value in DEFAULTS.items():
        os.environ.setdefault(key, value)


def orchestrated() -> bool:
    """Whether runs report to Prefect: an API URL is configured, or the user's environment
    asks for a temporary server (Prefect's default profile enabling one does not count)."""
    from prefect.settings import PREFECT_API_URL

    if PREFECT_API_URL.value():
        return True
    return any(os.environ.get(k, "").lower() in ("1", "true", "yes") for k in EPHEMERAL_VARS)


def run_flow(flow: Any, *args: Any, **kwargs: Any) -> Any:
    """Run a Prefect flow under Prefect when ``orchestrated()``, else its plain function."""
    runner: Callable[..., Any] = flow if orchestrated() else flow.fn
    return runner(*args, **kwargs)
