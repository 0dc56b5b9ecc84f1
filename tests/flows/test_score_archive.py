"""The archive flow on real files: mixed good and broken recordings, incremental reruns,
a real local Dask cluster, and a real SIGKILL in the middle of an archive."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import soundfile as sf
from conftest import copy_capture, subprocess_env

from bgm_batch.cli import main
from bgm_batch.data.contract import write_parquet
from bgm_batch.data.ingest import read_recording
from bgm_batch.progress import Progress
from bgm_batch.stages.archive_state import STATE_FILE, archive_lock
from bgm_batch.stages.render import AUDIO_SUFFIX
from bgm_batch.testing.testvideo import make_test_video

A, B, C, D = "20240101000000", "20240102000000", "20240103000000", "20240104000000"


def mixed_archive(root: Path) -> Path:
    """A and B share a capture folder (A with a good video, B with a corrupt one); C is a
    Parquet file; D is a capture folder of broken files only."""
    copy_capture(root / "cap", A, 4)
    copy_capture(root / "cap", B, 3)
    copy_capture(root.parent / "staging", C, 3)
    write_parquet(read_recording(root.parent / "staging").frame, root / "c.parquet", "recording")
    (root / "broken").mkdir()
    for index in range(2):
        (root / "broken" / f"{D}-{index}.json").write_text("{broken")
    make_test_video(root / "videos" / f"{A}.mp4", 40.0, width=160, height=90, fps=10)
    (root / "videos" / f"{B}.mp4").write_bytes(b"this is no video")
    return root


def archive(root: Path, out: Path, *extra: str, progress: bool = False) -> int:
    quiet = [] if progress else ["--no-progress"]
    return main(["archive", str(root), "--out", str(out), *quiet, *extra])


def statuses(out: Path) -> dict[str, tuple[str, int]]:
    report = pl.read_parquet(out / "archive_report.parquet")
    return {r["recording"]: (r["status"], r["rendered_now"]) for r in report.to_dicts()}


def test_mixed_archive_scores_isolates_failures_and_skips_unchanged(
    prefect_api, isolated_cache, tmp_path, monkeypatch
) -> None:
    root, out = mixed_archive(tmp_path / "root"), tmp_path / "out"
    displays = []  # (stage, shown): not capsys, whose stream Prefect's log handler would keep
    opened = Progress.__init__

    def spy(self: Progress, desc: str, total: int, **options: Any) -> None:
        opened(self, desc, total, **options)
        displays.append((desc.split(":")[0], options.get("enabled", True)))

    monkeypatch.setattr(Progress, "__init__", spy)
    assert archive(root, out, progress=True) == 1  # D and B's video failed: non-zero
    shown = {stage for stage, enabled in displays if enabled}
    assert "render" in shown and not shown & {"stitch", "mux"}  # parallel deliveries: none
    assert statuses(out) == {
        A: ("scored", 4),
        B: ("failed", 3),
        C: ("scored", 3),
        D: ("failed", 0),
    }
    report = pl.read_parquet(out / "archive_report.parquet").sort("recording")
    assert report["reason"][1].startswith(f"video {B}.mp4")
    assert report["reason"][3].startswith("ingest: no usable window")
    assert report["windows_quarantined"][3] == 0  # D never got far enough to count
    assert (out / A / "scored.mp4").is_file() and not (out / B / "scored.mp4").exists()
    for rec, windows in ((A, 4), (B, 3), (C, 3)):  # B still gets the track and the rest
        segments = pl.read_parquet(out / rec / "segments.parquet")
        assert segments["recording"].unique().to_list() == [rec]
        assert segments.height == windows
        assert (out / rec / "track.flac").is_file()
    assert (out / A / STATE_FILE).is_file() and not (out / B / STATE_FILE).exists()
    work = out / ".work"  # the failed recording keeps its rendered segments for the retry
    assert not list((work / A).glob(f"*{AUDIO_SUFFIX}"))
    assert len(list((work / B).glob(f"*{AUDIO_SUFFIX}"))) == 3
    markdown = (out / "archive_report.md").read_text()
    assert "2 scored, 0 skipped, 2 failed" in markdown and "text cache hit rate" in markdown

    before = (out / A / "segments.parquet").stat().st_mtime_ns
    assert archive(root, out) == 1
    again = statuses(out)
    assert again[A] == ("skipped", 0) and again[C] == ("skipped", 0)
    assert again[B] == ("failed", 0)  # retried, its segments all reused: nothing rendered
    assert (out / A / "segments.parquet").stat().st_mtime_ns == before

    (root / "videos" / f"{B}.mp4").unlink()
    first = root / "cap" / f"{A}-0.json"
    first.write_text(json.dumps(json.loads(first.read_text())) + "\n")  # same data, new bytes
    assert archive(root, out) == 1  # D still fails
    third = statuses(out)
    assert third[A][0] == "scored" and third[B][0] == "scored" and third[C] == ("skipped", 0)

    assert archive(root, out, "--force") == 1
    assert {rec: s for rec, (s, _) in statuses(out).items()} == {
        A: "scored",
        B: "scored",
        C: "scored",
        D: "failed",
    }


def good_archive(root: Path, recordings: int, windows: int) -> Path:
    for r in range(recordings):
        copy_capture(root / f"cap{r % 2}", f"2024010{r + 1}000000", windows)
    return root


def test_dask_cluster_matches_local_run(prefect_api, isolated_cache, tmp_path, monkeypatch):
    monkeypatch.delenv("PREFECT_API_URL", raising=False)  # the flow hands it to the workers
    root = good_archive(tmp_path / "root", 3, 2)
    assert archive(root, tmp_path / "local") == 0
    assert archive(root, tmp_path / "dask", "--engine", "dask", "--workers", "2") == 0
    recordings = [f"2024010{r + 1}000000" for r in range(3)]
    assert_same_outputs(tmp_path / "local", tmp_path / "dask", recordings)
    assert statuses(tmp_path / "dask") == {rec: ("scored", 2) for rec in recordings}


def assert_same_outputs(one: Path, other: Path, recordings: list[str]) -> None:
    """Byte-identical segments.parquet and sample-identical tracks."""
    for rec in recordings:
        segments = [(d / rec / "segments.parquet").read_bytes() for d in (one, other)]
        assert segments[0] == segments[1]
        tracks = [sf.read(d / rec / "track.flac")[0] for d in (one, other)]
        assert (tracks[0] == tracks[1]).all()


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["dask", "ray"])
def test_other_clusters_match_local_run(
    prefect_api, isolated_cache, tmp_path, monkeypatch, engine
) -> None:
    """Dask by address (as a multi-node scheduler is reached) and Ray where it is installed."""
    pytest.importorskip(f"prefect_{engine}", reason=f"prefect-{engine} is not installed")
    monkeypatch.setenv("PREFECT_API_URL", prefect_api)
    root = good_archive(tmp_path / "root", 2, 2)
    assert archive(root, tmp_path / "local") == 0
    with contextlib.ExitStack() as stack:
        where = ["--workers", "2"]
        if engine == "dask":
            from distributed import LocalCluster

            cluster = stack.enter_context(LocalCluster(n_workers=2, threads_per_worker=1))
            where = ["--address", cluster.scheduler_address]
        assert archive(root, tmp_path / engine, "--engine", engine, *where) == 0
    assert_same_outputs(tmp_path / "local", tmp_path / engine, ["20240101000000", "20240102000000"])


def test_killed_archive_resumes_without_redoing_finished_work(prefect_api, tmp_path) -> None:
    root, out = good_archive(tmp_path / "root", 4, 4), tmp_path / "out"
    env = subprocess_env(prefect_api, BGM_TEXT__CACHE_DIR=str(tmp_path / "cache"))
    command = [sys.executable, "-m", "bgm_batch.cli", "archive", str(root), "--out", str(out)]
    command.append("--no-progress")
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while not list(out.glob(f"*/{STATE_FILE}")) and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    finished = sorted(p.parent.name for p in out.glob(f"*/{STATE_FILE}"))
    assert finished and len(finished) < 4, "kill the archive between two recordings"

    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    after = statuses(out)
    assert all(after[rec] == ("skipped", 0) for rec in finished)
    assert all(status == "scored" for rec, (status, _) in after.items() if rec not in finished)
    assert sum(rendered for _, rendered in after.values()) == 0  # every segment came back
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]


def test_a_second_run_on_the_same_out_is_refused(prefect_api, isolated_cache, tmp_path) -> None:
    root, out = good_archive(tmp_path / "root", 1, 2), tmp_path / "out"
    with archive_lock(out):  # as another run holds it
        assert archive(root, out) == 1
    assert not (out / "archive_report.parquet").exists()
    assert archive(root, out) == 0


@pytest.mark.slow
def test_nightly_deployment_runs_on_a_local_server(prefect_api, tmp_path) -> None:
    from prefect import get_client
    from prefect.deployments import run_deployment

    root, out = good_archive(tmp_path / "root", 2, 2), tmp_path / "out"
    env = subprocess_env(prefect_api, BGM_TEXT__CACHE_DIR=str(tmp_path / "cache"))
    command = [sys.executable, "-m", "bgm_batch.flows.nightly", str(root), str(out)]
    served = subprocess.Popen([*command, "--cron", "15 2 * * *"], env=env)
    try:
        deployment = None
        with get_client(sync_client=True) as client:
            for _ in range(600):
                try:
                    deployment = client.read_deployment_by_name("nightly-archive/nightly")
                    break
                except Exception:  # noqa: BLE001 - not registered yet
                    time.sleep(0.2)
        assert deployment is not None
        assert deployment.schedules[0].schedule.cron == "15 2 * * *"
        assert deployment.global_concurrency_limit.limit == 1
        run = run_deployment("nightly-archive/nightly", timeout=300)
        assert run.state.is_completed(), run.state
    finally:
        served.terminate()
        served.wait(timeout=60)
    assert statuses(out) == {rec: ("scored", 2) for rec in ("20240101000000", "20240102000000")}
