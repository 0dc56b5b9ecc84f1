"""Media sanity after the mux, on real files made by ffmpeg: whole, truncated, mismatched."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from bgm_batch.stages.media_check import MediaCheckError, check_scored_video, stream_lengths


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args], check=True, timeout=120)


def video(path: Path, seconds: int) -> Path:
    """A small faststart mp4 (header first, as cameras and editors write them)."""
    ffmpeg(
        *("-f", "lavfi", "-i", f"testsrc=size=96x64:rate=10:duration={seconds}"),
        *("-c:v", "libx264", "-preset", "ultrafast", "-movflags", "+faststart", str(path)),
    )
    return path


def scored(path: Path, source: Path, music_seconds: int) -> Path:
    """What a mux does: the video stream copied, the music added."""
    ffmpeg(
        *("-i", str(source), "-f", "lavfi", "-i", f"sine=frequency=440:duration={music_seconds}"),
        *("-map", "0:v", "-map", "1:a", "-c:v", "copy", "-c:a", "aac", str(path)),
    )
    return path


def test_a_whole_scored_video_passes_and_reports_its_lengths(tmp_path: Path) -> None:
    source = video(tmp_path / "in.mp4", 8)
    report = check_scored_video(scored(tmp_path / "out.mp4", source, 8), source, 0.5)
    assert report["scored"]["video_s"] == pytest.approx(8.0, abs=0.1)
    assert report["scored"]["audio_s"] == pytest.approx(8.0, abs=0.1)
    assert report["input_video_s"] == pytest.approx(8.0, abs=0.1)


def test_a_truncated_input_is_reported_not_delivered(tmp_path: Path) -> None:
    source = video(tmp_path / "in.mp4", 20)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(source.read_bytes()[: source.stat().st_size * 45 // 100])
    assert stream_lengths(cut).video_s == pytest.approx(20.0, abs=0.1)  # the header still says 20
    with pytest.raises(MediaCheckError) as error:
        check_scored_video(scored(tmp_path / "out.mp4", cut, 20), cut, 0.5)
    message = str(error.value)
    assert "s of video under 20.0 s of audio" in message
    assert "announces 20.0 s of video" in message and "truncated" in message


def test_music_longer_than_the_picture_is_reported(tmp_path: Path) -> None:
    source = video(tmp_path / "in.mp4", 4)
    with pytest.raises(MediaCheckError, match=r"4\.0 s of video under 9\.0 s of audio"):
        check_scored_video(scored(tmp_path / "out.mp4", source, 9), source, 0.5)


def test_an_unreadable_scored_file_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "junk.mp4").write_bytes(b"not a video")
    with pytest.raises(MediaCheckError, match="ffprobe cannot read it"):
        stream_lengths(tmp_path / "junk.mp4")
