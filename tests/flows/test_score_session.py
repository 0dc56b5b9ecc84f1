"""The scored-video flow end to end on real files: deliverables, determinism, kill and resume."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import unquote, urlparse

import ffmpeg
import opentimelineio as otio
import polars as pl
import pyarrow.parquet as pq
import pytest
import soundfile as sf
from conftest import REPO, subprocess_env

from bgm_batch.cli import main
from bgm_batch.data.contract import arrow_schema
from bgm_batch.stages.mux import measure_loudness, probe_audio_duration, probe_media
from bgm_batch.stages.render import AUDIO_SUFFIX
from bgm_batch.testing.testvideo import make_test_video

SAMPLE = REPO / "data" / "sample" / "capture"


def capture_subset(dest: Path, windows: int) -> Path:
    dest.mkdir(parents=True)
    for path in sorted(SAMPLE.glob("*.json"), key=lambda p: int(p.stem.split("-")[1]))[:windows]:
        shutil.copy(path, dest / path.name)
    return dest


@pytest.fixture(scope="module")
def short_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_test_video(
        tmp_path_factory.mktemp("video") / "game.mp4", 120.0, width=160, height=90, fps=10
    )


def test_score_makes_every_deliverable(prefect_api, isolated_cache, tmp_path, short_video) -> None:
    capture = capture_subset(tmp_path / "cap", 12)
    (capture / "20240601093000-5.json").write_text("{broken")  # one bad window
    out = tmp_path / "out"
    assert (
        main(
            ["score", str(capture), "--video", str(short_video), "--out", str(out), "--no-progress"]
        )
        == 0
    )

    video, scored = probe_media(short_video), probe_media(out / "scored.mp4")
    assert scored.has_audio and abs(scored.duration_s - video.duration_s) < 0.1
    assert abs(probe_audio_duration(out / "scored.mp4") - video.duration_s) < 0.1

    segments = pl.read_parquet(out / "segments.parquet")
    assert pq.read_schema(out / "segments.parquet").equals(arrow_schema("segments"))
    assert segments["index"].to_list() == [0, 1, 2, 3, 4, 6, 7, 8, 9, 10, 11]
    assert segments["transition"][5] == "continue"  # one missing window is bridged
    assert (segments["caption"].str.split(" ").list.len() <= 20).all()
    quarantine = pl.read_parquet(out / "quarantine.parquet")
    assert quarantine.select("index", "stage").row(0) == (5, "ingest")

    track, rate = sf.read(out / "track.flac")
    assert rate == 48000 and track.shape[1] == 2 and abs(len(track) / rate - 120.0) < 1.5
    work = [p for p in (out / "segments").rglob("*") if p.suffix in (AUDIO_SUFFIX, ".json")]
    assert not work, "per-window audio is a work file, gone after a successful run"
    assert len(list((out / "segments").rglob("*.mid"))) == 11

    for name in ("timeline.otio", "timeline.xml"):  # Resolve and Premiere
        timeline = otio.adapters.read_from_file(str(out / name))
        picture, music = timeline.video_tracks(), timeline.audio_tracks()[0]
        assert [c.name for c in music.find_clips()] == segments["caption"].to_list()
        for clip in [*picture[0].find_clips(), *music.find_clips()]:  # absolute, and there
            assert Path(unquote(urlparse(clip.media_reference.target_url).path)).is_file()
    cues = pl.read_csv(out / "cues.csv")
    assert cues.height == segments.height and cues["scene"].to_list() == segments["scene"].to_list()
    mix = measure_loudness(out / "scored.mp4")  # mastered, whatever the game audio's level
    assert abs(mix.integrated_lufs + 14.0) <= 1.0 and mix.true_peak_dbtp <= -1.0
    assert (
        ffmpeg.probe(str(out / "scored.mp4"), select_streams="a:0")["streams"][0]["sample_rate"]
        == "48000"
    )

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["rows_in"] == 12
    assert manifest["counts"]["rendered"] + manifest["counts"]["quarantined"] == 12
    assert manifest["text_backend"]["backend"] == "template"
    assert set(manifest["timings_s"]) >= {"ingest", "narrate", "render", "stitch", "mux"}
    assert manifest["command"][:3] == ["bgm-batch", "score", str(capture)]
    assert manifest["profile_sha256"] and manifest["git_commit"]
    assert manifest["reports"]["mux"]["loudness_lufs"] == mix.integrated_lufs


def test_same_inputs_same_outputs(prefect_api, isolated_cache, tmp_path) -> None:
    capture = capture_subset(tmp_path / "cap", 6)
    for name in ("a", "b"):
        assert (
            main(
                [
                    "score",
                    str(capture),
                    "--out",
                    str(tmp_path / name),
                    "--no-progress",
                    "--seed",
                    "3",
                ]
            )
            == 0
        )
    a, b = tmp_path / "a", tmp_path / "b"
    assert (a / "segments.parquet").read_bytes() == (b / "segments.parquet").read_bytes()
    assert (sf.read(a / "track.flac")[0] == sf.read(b / "track.flac")[0]).all()


def test_killed_run_resumes_without_redoing_segments(prefect_api, tmp_path) -> None:
    capture = capture_subset(tmp_path / "cap", 24)
    out = tmp_path / "out"
    env = subprocess_env(prefect_api, BGM_TEXT__CACHE_DIR=str(tmp_path / "cache"))
    command = [
        sys.executable,
        "-m",
        "bgm_batch.cli",
        "score",
        str(capture),
        "--out",
        str(out),
        "--no-progress",
    ]
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and len(list(out.rglob("*.json"))) < 3:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    finished_before = len(list((out / "segments").rglob("0*.json")))
    assert 3 <= finished_before < 24, "the kill should land in the middle of rendering"

    subprocess.run(command, env=env, check=True, capture_output=True, timeout=300)
    counts = json.loads((out / "manifest.json").read_text())["counts"]
    assert counts["rendered"] == 24
    assert counts["reused"] >= finished_before
    assert counts["rendered_now"] == 24 - counts["reused"]
