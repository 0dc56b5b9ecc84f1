"""Which Prefect a run uses: a configured API, a temporary server on request, or none."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from prefect.settings import PREFECT_API_URL, temporary_settings

from bgm_batch.data.contract import write_parquet
from bgm_batch.prefect_env import EPHEMERAL_VARS, SOURCE_VARS, orchestrated
from bgm_batch.testing.simulate import simulate_frame


def test_orchestrated_only_with_an_api_or_an_explicit_temporary_server(monkeypatch) -> None:
    for name in (*EPHEMERAL_VARS, "PREFECT_API_URL"):
        monkeypatch.delenv(name, raising=False)
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        assert not orchestrated()  # Prefect's default profile enabling one does not count
        monkeypatch.setenv("PREFECT_SERVER_ALLOW_EPHEMERAL_MODE", "true")
        assert orchestrated()
    monkeypatch.delenv("PREFECT_SERVER_ALLOW_EPHEMERAL_MODE")
    with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:4200/api"}):
        assert orchestrated()


def _bare_env(home: Path) -> dict[str, str]:
    """This environment without any Prefect server or profile choice, Prefect's home at
    ``home``."""
    unset = (*SOURCE_VARS, *EPHEMERAL_VARS)
    return {k: v for k, v in os.environ.items() if k not in unset} | {"PREFECT_HOME": str(home)}


def test_prefect_is_imported_only_where_a_server_could_be_configured(tmp_path: Path) -> None:
    """No settings source: not orchestrated, and Prefect (2 s of imports) never loaded. A
    profiles file naming a server: Prefect itself decides, and it reports there."""
    home = tmp_path / "home"
    home.mkdir()
    probe = "import sys; from bgm_batch.prefect_env import orchestrated as o; "
    probe += "print(o(), 'prefect' in sys.modules)"
    command = [sys.executable, "-c", probe]

    def run() -> str:
        return subprocess.run(
            command, env=_bare_env(home), cwd=tmp_path, capture_output=True, text=True, check=True
        ).stdout.strip()

    assert run() == "False False"
    (home / "profiles.toml").write_text(
        'active = "remote"\n[profiles.remote]\nPREFECT_API_URL = "http://127.0.0.1:9/api"\n'
    )
    assert run() == "True True"


def test_a_local_run_starts_no_prefect_server(tmp_path: Path) -> None:
    """One window without PREFECT_API_URL: scored, no server process, no Prefect database,
    and Prefect not even imported."""
    recording = tmp_path / "one.parquet"
    write_parquet(simulate_frame(1, seed=2), recording, "recording")
    home = tmp_path / "prefect-home"
    env = _bare_env(home) | {"BGM_TEXT__CACHE_DIR": str(tmp_path / "cache")}
    arguments = ["score", str(recording), "--quiet", "--out", str(tmp_path / "out")]
    script = "import sys; from bgm_batch.cli import main; code = main(sys.argv[1:]); "
    script += "assert 'prefect' not in sys.modules, 'Prefect was imported'; sys.exit(code)"
    process = subprocess.Popen([sys.executable, "-c", script, *arguments], env=env)
    servers = set()
    while process.poll() is None:
        servers |= {pid for pid in _descendants(process.pid) if b"uvicorn" in _cmdline(pid)}
        time.sleep(0.1)
    assert process.returncode == 0
    assert (tmp_path / "out" / "track.flac").is_file()
    assert not servers and not list(home.glob("*.db")), "a Prefect server was started"


def _descendants(pid: int) -> list[int]:
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []
    return [c for child in map(int, children) for c in (child, *_descendants(child))]


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
