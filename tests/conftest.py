"""Shared fixtures: Prefect runs against one test server per session (cheap start-up)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest

from bgm_batch.prefect_env import configure_prefect

REPO = Path(__file__).parents[1]
configure_prefect(REPO / ".prefect")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach the hub (tiny local models)


@pytest.fixture(scope="session")
def prefect_api() -> Iterator[str]:
    """A Prefect test server for the session; yields its API URL (for subprocesses too).
    Only tests of the orchestrated path need it: without it, runs use no Prefect server
    (``prefect_env.run_flow``). Its start-up took over 2 minutes at load average 14."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=300):
        yield str(PREFECT_API_URL.value())


@pytest.fixture
def isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the persistent text cache at a fresh folder for this test."""
    cache = tmp_path / "text-cache"
    monkeypatch.setenv("BGM_TEXT__CACHE_DIR", str(cache))
    return cache


def copy_capture(dest: Path, recording: str, windows: int) -> list[Path]:
    """The bundled sample's first ``windows`` capture files, renamed to ``recording``."""
    sample = REPO / "data" / "sample" / "capture"
    dest.mkdir(parents=True, exist_ok=True)
    copied = []
    for index in range(windows):
        copied.append(dest / f"{recording}-{index}.json")
        copied[-1].write_bytes((sample / f"20240601093000-{index}.json").read_bytes())
    return copied


def subprocess_env(api_url: str, **extra: str) -> dict[str, str]:
    """Environment for a CLI subprocess that reuses the session's Prefect server."""
    return {**os.environ, "PREFECT_API_URL": api_url, **extra}


BIOMES = ["Plains", "Desert", "Forest", "Snowy Taiga", "Ocean", "Jungle"]


def characterized(n_recordings: int = 3, per_recording: int = 4) -> pl.DataFrame:
    """A characterized frame built by hand: distinct snapshots, one recording per biome."""
    rows = []
    for r in range(n_recordings):
        for i in range(per_recording):
            info = {
                "Biome": {BIOMES[r % len(BIOMES)]: 100.0},
                "Time": {("Day", "Night", "Sunset", "Sunrise")[i % 4]: 100.0},
            }
            rows.append(
                {
                    "recording": f"rec{r}",
                    "index": i,
                    "start_s": 10.0 * i,
                    "end_s": 10.0 * i + 10,
                    "combat": False,
                    "info_str": json.dumps(info),
                }
            )
    return pl.DataFrame(rows)
