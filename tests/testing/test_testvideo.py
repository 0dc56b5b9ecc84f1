"""The gameplay-like test video: length, streams, louder fights, and the sample's scenes."""

from __future__ import annotations

import json
from pathlib import Path

import ffmpeg
import numpy as np
import pytest

from bgm_batch.testing.simulate import simulate_recording, write_capture_dir
from bgm_batch.testing.testvideo import FIGHT, ensure_sample_video, make_test_video, scene_timeline

CAPTURE = Path(__file__).parents[2] / "data" / "sample" / "capture"
CALM_THEN_FIGHT = [(0.0, "Plains / Day"), (10.0, "Plains / Night / fight")]


def streams(path: Path) -> dict[str, dict]:
    probe = ffmpeg.probe(str(path))
    return {s["codec_type"]: s for s in probe["streams"]} | {"format": probe["format"]}


def decoded_audio(path: Path, rate: int = 8000) -> np.ndarray:
    raw, _ = (
        ffmpeg.input(str(path))
        .output("pipe:", format="f32le", ac=1, ar=rate)
        .run(capture_stdout=True, capture_stderr=True)
    )
    return np.frombuffer(raw, dtype=np.float32)


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("video") / "game.mp4"
    return make_test_video(path, 20.0, timeline=CALM_THEN_FIGHT)


def test_video_lasts_as_asked_with_h264_and_aac(video: Path) -> None:
    info = streams(video)
    assert abs(float(info["format"]["duration"]) - 20.0) <= 0.5
    assert info["video"]["codec_name"] == "h264"
    assert (info["video"]["width"], info["video"]["height"]) == (320, 180)
    assert info["audio"]["codec_name"] == "aac"
    assert abs(float(info["audio"]["duration"]) - 20.0) <= 0.5


def test_fights_are_much_louder_than_walking(video: Path) -> None:
    audio = decoded_audio(video)
    half = audio.size // 2
    calm = np.sqrt(np.mean(audio[: half - 4000] ** 2))
    fight = np.sqrt(np.mean(audio[half + 4000 :] ** 2))
    assert calm > 0.005  # footsteps and wind, not silence
    assert fight > 4 * calm


def test_video_without_audio_has_no_audio_stream(tmp_path: Path) -> None:
    path = make_test_video(tmp_path / "silent.mp4", 20.0, with_audio=False, width=160, height=90)
    info = streams(path)
    assert "audio" not in info
    assert abs(float(info["format"]["duration"]) - 20.0) <= 0.5


def test_scene_timeline_follows_the_sample() -> None:
    files = sorted(CAPTURE.glob("*.json"), key=lambda p: int(p.stem.rsplit("-", 1)[1]))
    snapshots = [json.loads(p.read_text()) for p in files]
    timeline = scene_timeline(snapshots)
    starts = [start for start, _ in timeline]
    assert starts[0] == 0.0 and starts == sorted(starts) and len(set(starts)) == len(starts)
    labels = [label for _, label in timeline]
    assert all(a != b for a, b in zip(labels, labels[1:], strict=False))
    assert labels[0] == "Plains / Day"
    fights = [start for start, label in timeline if label.endswith(f" / {FIGHT}")]
    assert len(fights) >= 2
    assert any("Caves" in label for label in labels) and any("Night" in label for label in labels)


def test_ensure_sample_video_makes_it_once(tmp_path: Path) -> None:
    write_capture_dir(simulate_recording(2, seed=1), tmp_path / "capture", "20240601093000")
    path = ensure_sample_video(tmp_path / "video.mp4")
    assert abs(float(streams(path)["format"]["duration"]) - 20.0) <= 0.5
    made = path.stat().st_mtime_ns
    assert ensure_sample_video(tmp_path / "video.mp4") == path
    assert path.stat().st_mtime_ns == made
