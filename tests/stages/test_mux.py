"""Mux stage on real ffmpeg runs with short synthetic videos and tracks."""

from __future__ import annotations

import subprocess
from pathlib import Path

import ffmpeg
import numpy as np
import pytest
import soundfile as sf

from bgm_batch.settings import MuxSettings
from bgm_batch.stages.mux import (
    FfmpegMissingError,
    LengthMismatchError,
    UnreadableVideoError,
    check_lengths,
    fit_track_to_length,
    mux_video,
    probe_media,
)

VIDEO_S = 6.0
LOUD_UNTIL_S = 3.0  # the game audio is a loud 3 kHz tone until here, then silence
MUSIC_HZ = 200.0
SR = 48000
LONG_VIDEO_S = 16.0  # long enough that the mux streams the track's head and fits only its tail


def _lavfi_video(path: Path, seconds: float, *, with_audio: bool) -> Path:
    args = ["ffmpeg", "-v", "error", "-y", "-f", "lavfi"]
    args += ["-i", f"testsrc=size=160x120:rate=10:duration={seconds}"]
    if with_audio:
        tone = f"if(lt(t\\,{LOUD_UNTIL_S})\\,0.5*sin(2*PI*3000*t)\\,0)"
        args += ["-f", "lavfi", "-i", f"aevalsrc={tone}:s=44100:d={seconds}", "-c:a", "aac"]
    subprocess.run([*args, "-c:v", "libx264", "-preset", "ultrafast", str(path)], check=True)
    return path


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="module")
def game_video(media: Path) -> Path:
    return _lavfi_video(media / "game.mp4", VIDEO_S, with_audio=True)


@pytest.fixture(scope="module")
def silent_video(media: Path) -> Path:
    return _lavfi_video(media / "silent.mp4", LONG_VIDEO_S, with_audio=False)


def _track(path: Path, seconds: float) -> Path:
    t = np.arange(int(seconds * SR)) / SR
    # the tone for band measurements, plus a glide so that any misplaced sample shows
    tone = 0.3 * np.sin(2 * np.pi * MUSIC_HZ * t) + 0.05 * np.sin(
        2 * np.pi * 331 * t * (1 + t / 40)
    )
    sf.write(str(path), np.stack([tone, tone], axis=1), SR)
    return path


def _decode(path: Path) -> np.ndarray:
    """The left channel of the first audio stream, float32 at SR."""
    out, _ = (
        ffmpeg.input(str(path))
        .output("pipe:", format="f32le", ac=2, ar=SR)
        .run(capture_stdout=True, quiet=True)
    )
    return np.frombuffer(out, dtype=np.float32)[::2]


def _video_md5(path: Path) -> str:
    args = ["ffmpeg", "-v", "error", "-i", str(path), "-map", "0:v", "-c", "copy", "-f", "md5", "-"]
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout.strip()


def _video_stream(path: Path) -> dict:
    return ffmpeg.probe(str(path), select_streams="v:0")["streams"][0]


def _band_rms(audio: np.ndarray, start_s: float, end_s: float, hz: float) -> float:
    """RMS of ``audio[start_s:end_s]`` within +-50 Hz of ``hz``: the music alone in a mix."""
    chunk = audio[int(start_s * SR) : int(end_s * SR)]
    spectrum = np.fft.rfft(chunk * np.hanning(len(chunk)))
    freqs = np.fft.rfftfreq(len(chunk), 1 / SR)
    return float(np.sqrt(np.sum(np.abs(spectrum[np.abs(freqs - hz) < 50]) ** 2)) / len(chunk))


def _rms(audio: np.ndarray, start_s: float, end_s: float) -> float:
    return float(np.sqrt(np.mean(audio[int(start_s * SR) : int(end_s * SR)] ** 2)))


def test_probe_media_reads_duration_audio_and_codec(game_video: Path, silent_video: Path) -> None:
    game, silent = probe_media(game_video), probe_media(silent_video)
    assert game.duration_s == pytest.approx(VIDEO_S, abs=0.05)
    assert (game.has_audio, game.video_codec, game.audio_sample_rate) == (True, "h264", 44100)
    assert (silent.has_audio, silent.audio_sample_rate) == (False, None)


def test_unreadable_video_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"this is not a video" * 100)
    with pytest.raises(UnreadableVideoError, match="broken.mp4.*ffprobe cannot read it: .+"):
        probe_media(bad)
    with pytest.raises(UnreadableVideoError, match="broken.mp4"):
        mux_video(bad, _track(tmp_path / "t.flac", 1.0), tmp_path / "out.mp4", MuxSettings())
    assert not (tmp_path / "out.mp4").exists()


def test_missing_ffmpeg_says_how_to_install(
    tmp_path: Path, game_video: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory: no ffmpeg, no ffprobe
    with pytest.raises(FfmpegMissingError, match="apt-get install ffmpeg"):
        probe_media(game_video)
    with pytest.raises(FfmpegMissingError, match="not found on PATH"):
        mux_video(game_video, tmp_path / "t.flac", tmp_path / "out.mp4", MuxSettings())


def test_check_lengths_states_both_durations() -> None:
    check_lengths(100.0, 130.0, 60.0)
    with pytest.raises(LengthMismatchError, match=r"video lasts 20\.0 s but the recording 95\.5 s"):
        check_lengths(20.0, 95.5, 60.0)


def test_fit_trims_with_a_fade_ending_at_the_end() -> None:
    audio = np.ones((2, 5000), dtype=np.float32)
    fitted = fit_track_to_length(audio, 1000, 4.0, fade_out_s=1.0)
    assert fitted.shape == (2, 4000) and fitted.dtype == np.float32
    assert np.all(fitted[:, :3000] == 1.0)
    assert np.all(np.diff(fitted[0, 3000:]) <= 0) and fitted[0, -1] == pytest.approx(0.0)


def test_fit_pads_with_the_final_segment_not_silence() -> None:
    sr = 8000
    t = np.arange(15 * sr) / sr
    # an earlier segment at 200 Hz, then a 10 s final segment at 500 Hz
    audio = np.where(t < 5, np.sin(2 * np.pi * 200 * t), np.sin(2 * np.pi * 500 * t)).astype(
        np.float32
    )
    fitted = fit_track_to_length(audio, sr, 30.0, fade_out_s=3.0)
    assert fitted.shape == (30 * sr,)
    np.testing.assert_array_equal(fitted[: 14 * sr], audio[: 14 * sr])
    pad = fitted[15 * sr : 20 * sr]  # added material, before the final fade
    spectrum = np.abs(np.fft.rfft(pad))
    assert np.fft.rfftfreq(len(pad), 1 / sr)[np.argmax(spectrum)] == pytest.approx(500, abs=1)
    assert np.sqrt(np.mean(pad**2)) > 0.6  # a full-level sine has RMS 0.707
    assert np.sqrt(np.mean(fitted[-sr // 10 :] ** 2)) < 0.01  # faded out at the video's end
    assert np.array_equal(fit_track_to_length(audio, sr, 15.0, 3.0), audio)


def test_mux_copies_video_and_ducks_music_under_game_audio(
    game_video: Path, tmp_path: Path
) -> None:
    track = _track(tmp_path / "track.flac", 8.0)  # longer than the video: trimmed
    ducked_out, plain_out = tmp_path / "ducked.mp4", tmp_path / "plain.mp4"
    settings = MuxSettings(fade_out_seconds=1.0, music_gain_db=0.0)
    ducked = mux_video(game_video, track, ducked_out, settings)
    plain = mux_video(game_video, track, plain_out, settings.model_copy(update={"duck": False}))

    assert (ducked.audio_path, plain.audio_path, ducked.fit) == ("ducked", "mixed", "trimmed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ducked.mp4", "plain.mp4", "track.flac"]
    src, out = _video_stream(game_video), _video_stream(ducked_out)
    for key in ("codec_name", "nb_frames", "bit_rate", "width", "height"):
        assert out[key] == src[key]
    assert _video_md5(ducked_out) == _video_md5(game_video)
    for report in (ducked, plain):
        assert report.audio_duration_s == pytest.approx(VIDEO_S, abs=0.1)

    with_duck, without = _decode(ducked_out), _decode(plain_out)
    loud, quiet = (0.5, 2.5), (3.6, 4.8)  # quiet: after the release, before the fade
    assert _band_rms(with_duck, *loud, MUSIC_HZ) < 0.3 * _band_rms(without, *loud, MUSIC_HZ)
    assert _band_rms(with_duck, *quiet, MUSIC_HZ) == pytest.approx(
        _band_rms(without, *quiet, MUSIC_HZ), rel=0.15
    )
    assert _rms(with_duck, *loud) < _rms(without, *loud)
    assert _band_rms(with_duck, *loud, 3000.0) == pytest.approx(
        _band_rms(without, *loud, 3000.0), rel=0.1
    )  # the game audio itself is untouched


@pytest.mark.parametrize(("track_s", "fit"), [(14.0, "padded"), (18.0, "trimmed")])
def test_mux_music_only_is_the_fitted_track(
    silent_video: Path, tmp_path: Path, track_s: float, fit: str
) -> None:
    track = _track(tmp_path / "track.flac", track_s)
    report = mux_video(silent_video, track, tmp_path / "scored.mp4", MuxSettings())
    assert (report.audio_path, report.fit) == ("music-only", fit)
    assert report.audio_duration_s == pytest.approx(LONG_VIDEO_S, abs=0.1)
    audio = _decode(tmp_path / "scored.mp4")
    whole, _ = sf.read(str(track), dtype="float32")
    expected = fit_track_to_length(whole[:, 0], SR, LONG_VIDEO_S, fade_out_s=3.0)
    assert audio.shape == expected.shape
    assert np.max(np.abs(audio - expected)) < 0.01  # AAC error only: no gap or click at joins
    assert _rms(audio, 14.2, 14.8) > 0.5 * _rms(audio, 1.0, 2.0)  # music to the end...
    assert _rms(audio, LONG_VIDEO_S - 0.05, LONG_VIDEO_S) < 0.02  # ...fading with the picture


def test_mux_refuses_a_video_far_from_the_recording(game_video: Path, tmp_path: Path) -> None:
    track = _track(tmp_path / "track.flac", 8.0)
    settings = MuxSettings(max_length_mismatch_seconds=1.0)
    with pytest.raises(LengthMismatchError, match=r"6\.0 s but the recording 8\.0 s"):
        mux_video(game_video, track, tmp_path / "out.mp4", settings)
    with pytest.raises(LengthMismatchError, match=r"6\.0 s but the recording 100\.0 s"):
        mux_video(game_video, track, tmp_path / "out.mp4", MuxSettings(), recording_s=100.0)
    assert not (tmp_path / "out.mp4").exists()
