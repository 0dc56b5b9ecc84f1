"""Run Prefect quietly and offline, with its state in the user's cache folder.

Prefect reads its settings from the environment when it is first imported, so the CLI and the
tests call ``configure_prefect`` before importing any flow. Values already set by the user win.

Which Prefect a run uses (``run_flow``): the server or Prefect Cloud workspace the user
configured (``PREFECT_API_URL`` in the environment or the active Prefect profile), or a
temporary local server when they ask for one (``PREFECT_SERVER_ALLOW_EPHEMERAL_MODE=true`` in
the environment). Otherwise none: the flow's function runs directly and its tasks as plain
calls (``bgm_batch.flows.local``), without Prefect's retries and run history, and no server
process is started (so none can be orphaned by a kill). Prefect is then not even imported
(2 s): a one-window run costs its stages plus Python's other imports.
"""

from __future__ import annotations

import os
import sys
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
# variables that set a server, or choose where Prefect reads its profiles from
SOURCE_VARS = ("PREFECT_API_URL", "PREFECT_PROFILE", "PREFECT_PROFILES_PATH")


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
    asks for a temporary server (Prefect's default profile enabling one does not count).
    Prefect is asked only when one of its settings sources could name a server: importing
    it takes about 2 s, which a one-window run should not pay for nothing."""
    if any(os.environ.get(k, "").lower() in ("1", "true", "yes") for k in EPHEMERAL_VARS):
        return True
    if "prefect" not in sys.modules and not _may_name_a_server():
        return False
    from prefect.settings import PREFECT_API_URL

    return bool(PREFECT_API_URL.value())


def _may_name_a_server() -> bool:
    """Whether any of Prefect's settings sources exists besides its defaults: the
    environment, a profiles file, or ``.env``, ``prefect.toml`` or ``pyproject.toml``'s
    ``[tool.prefect]`` in the working directory. Without one, no API URL can be set."""
    if any(os.environ.get(k) for k in SOURCE_VARS):
        return True
    home = os.environ.get("PREFECT_HOME")
    profiles = Path(home) / "profiles.toml" if home else Path.home() / ".prefect/profiles.toml"
    if profiles.is_file() or Path(".env").is_file() or Path("prefect.toml").is_file():
        return True
    pyproject = Path("pyproject.toml")
    return pyproject.is_file() and "[tool.prefect" in pyproject.read_text(errors="replace")


def run_flow(flow: Any, *args: Any, **kwargs: Any) -> Any:
    """Run a Prefect flow under Prefect when ``orchestrated()``, else its plain function."""
    runner: Callable[..., Any] = flow if orchestrated() else flow.fn
    return runner(*args, **kwargs)
