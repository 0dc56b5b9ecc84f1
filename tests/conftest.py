"""Shared fixtures: Prefect runs against one test server per session (cheap start-up)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from bgm_batch.prefect_env import configure_prefect

REPO = Path(__file__).parents[1]
configure_prefect(REPO / ".prefect")


@pytest.fixture(scope="session")
def prefect_api() -> Iterator[str]:
    """A Prefect test server for the session; yields its API URL (for subprocesses too)."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield str(PREFECT_API_URL.value())


@pytest.fixture
def isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the persistent text cache at a fresh folder for this test."""
    cache = tmp_path / "text-cache"
    monkeypatch.setenv("BGM_TEXT__CACHE_DIR", str(cache))
    return cache


def subprocess_env(api_url: str, **extra: str) -> dict[str, str]:
    """Environment for a CLI subprocess that reuses the session's Prefect server."""
    return {**os.environ, "PREFECT_API_URL": api_url, **extra}
