"""Mux stage on real ffmpeg runs with short synthetic videos and tracks: placement, fit,
ducking depth and mastering (loudness and true peak measured independently of ffmpeg)."""

from __future__ import annotations

import subprocess
from itertools import pairwise
from pathlib import Path

import ffmpeg
import numpy as np
import pyloudnorm
import pytest
import soundfile as sf
from scipy.signal import resample_poly

from bgm_batch.settings import MuxSettings
from bgm_batch.stages import mux
from bgm_batch.stages.mux import (
    FfmpegMissingError,
    LengthMismatchError,
    MuxReport,
    UnreadableVideoError,
    check_fit,
    fit_track_to_length,
    mux_video,
    probe_media,
)
from bgm_batch.stages.stitch import LoudnessMeter
from bgm_batch.testing.testvideo import make_test_track, make_test_video

VIDEO_S = 6.0
LOUD_UNTIL_S = 3.0  # the game audio is a loud 3 kHz tone until here, then silence
MUSIC_HZ = 200.0
SR = 48000
GAME_SR = 22050  # the game audio's rate: the mix must still come out at 48 kHz
HIGH_HZ = 15000.0  # music content a 22.05 kHz mix would lose
LONG_VIDEO_S = 16.0  # long enough that the mux streams the track's head and fits only its tail


def _lavfi_video(path: Path, seconds: float, *, with_audio: bool) -> Path:
    args = ["ffmpeg", "-v", "error", "-y", "-f", "lavfi"]
    args += ["-i", f"testsrc=size=160x120:rate=10:duration={seconds}"]
    if with_audio:
        tone = f"if(lt(t\\,{LOUD_UNTIL_S})\\,0.5*sin(2*PI*3000*t)\\,0)"
        args += ["-f", "lavfi", "-i", f"aevalsrc={tone}:s={GAME_SR}:d={seconds}", "-c:a", "aac"]
    subprocess.run([*args, "-c:v", "libx264", "-preset", "ultrafast", str(path)], check=True)
    return path


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="module")
def game_video(media: Path) -> Path:
    return _lavfi_video(media / "game.mp4", VIDEO_S, with_audio=True)


@pytest.fixture(scope="module")
def gameplay_video(media: Path) -> Path:
    """Footsteps, then a fight with hits: the transients that make AAC overshoot its input."""
    scenes = [(0.0, "Plains / Day"), (6.0, "Plains / Day / fight")]
    return make_test_video(media / "gameplay.mp4", 14.0, timeline=scenes, width=64, height=48)


@pytest.fixture(scope="module")
def silent_video(media: Path) -> Path:
    return _lavfi_video(media / "silent.mp4", LONG_VIDEO_S, with_audio=False)


def _track(path: Path, seconds: float) -> Path:
    t = np.arange(int(seconds * SR)) / SR
    # the tone for band measurements, plus a glide so that any misplaced sample shows
    tone = (
        0.3 * np.sin(2 * np.pi * MUSIC_HZ * t)
        + 0.05 * np.sin(2 * np.pi * 331 * t * (1 + t / 40))
        + 0.02 * np.sin(2 * np.pi * HIGH_HZ * t)
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
    assert (game.has_audio, game.video_codec, game.audio_sample_rate) == (True, "h264", GAME_SR)
    assert (silent.has_audio, silent.audio_sample_rate) == (False, None)
    assert game.frame_rate == silent.frame_rate == 10.0


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


def test_check_fit_refuses_a_short_video_unless_trimming() -> None:
    settings = MuxSettings()
    assert check_fit(100.0, 100.5, settings) == pytest.approx(0.5)  # within the tolerance
    assert check_fit(130.0, 100.0, settings) == 0.0  # longer: padded
    with pytest.raises(
        LengthMismatchError, match=r"lasts 20\.0 s but the recording 95\.5 s.*--fit trim"
    ):
        check_fit(20.0, 95.5, settings)
    assert check_fit(20.0, 95.5, settings.model_copy(update={"fit": "trim"})) == pytest.approx(75.5)
    with pytest.raises(LengthMismatchError, match="is it the right video"):
        check_fit(200.0, 95.5, settings)


def test_check_fit_counts_the_video_offset() -> None:
    late = MuxSettings(video_offset_seconds=30.0)
    with pytest.raises(LengthMismatchError, match="placed at 30 s in the video"):
        check_fit(100.0, 90.0, late)
    assert check_fit(100.0, 110.0, MuxSettings(video_offset_seconds=-10.0)) == 0.0
    with pytest.raises(LengthMismatchError, match="outside the video"):
        check_fit(100.0, 50.0, MuxSettings(video_offset_seconds=120.0))


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


def _db(x: float) -> float:
    return 20 * np.log10(x)


def _true_peak_db(audio: np.ndarray) -> float:
    """True peak by 4x oversampling (ITU-R BS.1770), independently of ffmpeg's meter."""
    return _db(float(np.max(np.abs(resample_poly(audio, 4, 1, axis=0)))))


def _decode_stereo(path: Path) -> np.ndarray:
    out, _ = (
        ffmpeg.input(str(path))
        .output("pipe:", format="f32le", ac=2, ar=SR)
        .run(capture_stdout=True, quiet=True)
    )
    return np.frombuffer(out, dtype=np.float32).reshape(-1, 2)


def test_mux_masters_to_the_loudness_target_at_48k(game_video: Path, tmp_path: Path) -> None:
    track = _track(tmp_path / "track.flac", VIDEO_S)
    report = mux_video(game_video, track, tmp_path / "scored.mp4", MuxSettings())
    audio = _decode_stereo(tmp_path / "scored.mp4")
    stream = ffmpeg.probe(str(tmp_path / "scored.mp4"), select_streams="a:0")["streams"][0]
    assert int(stream["sample_rate"]) == SR  # not the game audio's 22.05 kHz
    assert _band_rms(audio[:, 0], 4.0, 5.0, HIGH_HZ) > 1e-3  # content above 11 kHz survives
    loudness = pyloudnorm.Meter(SR).integrated_loudness(audio)
    assert loudness == pytest.approx(-14.0, abs=1.0)
    assert _true_peak_db(audio) <= -1.0
    assert report.loudness_lufs == pytest.approx(loudness, abs=0.5)  # ffmpeg's ebur128 agrees
    assert report.true_peak_dbtp <= -1.0 and report.sample_rate == SR
    quieter = mux_video(game_video, track, tmp_path / "quiet.mp4", MuxSettings(target_lufs=-23.0))
    assert quieter.loudness_lufs == pytest.approx(-23.0, abs=1.0)
    assert report.to_json()["out"] == str(tmp_path / "scored.mp4")


def test_mastering_holds_the_ceiling_through_the_aac_encoder(
    gameplay_video: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the first encode aims at the ceiling itself; what AAC adds on top is measured and removed
    monkeypatch.setattr(mux, "AAC_HEADROOM_DB", 0.0)
    track = _track(tmp_path / "track.flac", 14.0)
    report = mux_video(gameplay_video, track, tmp_path / "scored.mp4", MuxSettings())
    audio = _decode_stereo(tmp_path / "scored.mp4")
    assert _true_peak_db(audio) <= -1.0 and report.true_peak_dbtp <= -1.0
    # what the limiter takes off the clicks is given back: within the tolerance, not just +-1
    tolerance = mux.LOUDNESS_TOLERANCE_LU + 0.1  # + the two meters' difference
    assert pyloudnorm.Meter(SR).integrated_loudness(audio) == pytest.approx(-14.0, abs=tolerance)


def test_ducking_lowers_the_music_by_its_depth_while_the_game_is_loud(
    game_video: Path, tmp_path: Path
) -> None:
    track = _track(tmp_path / "track.flac", 8.0)  # longer than the video: trimmed
    settings = MuxSettings(fade_out_seconds=1.0, fit="trim")
    ducked = mux_video(game_video, track, tmp_path / "ducked.mp4", settings)
    plain_settings = settings.model_copy(update={"duck": False})
    plain = mux_video(game_video, track, tmp_path / "plain.mp4", plain_settings)
    assert (ducked.audio_path, plain.audio_path, ducked.fit) == ("ducked", "mixed", "trimmed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ducked.mp4", "plain.mp4", "track.flac"]
    src, out = _video_stream(game_video), _video_stream(tmp_path / "ducked.mp4")
    for key in ("codec_name", "nb_frames", "bit_rate", "width", "height"):
        assert out[key] == src[key]
    assert _video_md5(tmp_path / "ducked.mp4") == _video_md5(game_video)
    for report in (ducked, plain):
        assert report.audio_duration_s == pytest.approx(VIDEO_S, abs=0.1)

    # music under the loud game audio vs the same music once the game is quiet, in one file
    loud, quiet = (1.0, 2.8), (3.8, 4.8)  # quiet: after the release, before the fade
    depth = {
        name: _db(_band_rms(a, *loud, MUSIC_HZ) / _band_rms(a, *quiet, MUSIC_HZ))
        for name, a in (
            ("ducked", _decode(tmp_path / "ducked.mp4")),
            ("plain", _decode(tmp_path / "plain.mp4")),
        )
    }
    assert depth["plain"] == pytest.approx(0.0, abs=0.5)
    assert depth["ducked"] == pytest.approx(-settings.duck_depth_db, abs=1.0)
    gentle = mux_video(
        game_video,
        track,
        tmp_path / "gentle.mp4",
        settings.model_copy(update={"duck_depth_db": 4.0}),
    )
    a = _decode(tmp_path / "gentle.mp4")
    assert _db(_band_rms(a, *loud, MUSIC_HZ) / _band_rms(a, *quiet, MUSIC_HZ)) == pytest.approx(
        -4.0, abs=1.0
    )
    assert gentle.audio_path == "ducked"


def _gain(report: MuxReport, settings: MuxSettings) -> float:
    """The linear gain the music went through: music gain then the mastering gain."""
    return 10 ** ((settings.music_gain_db + report.gain_db) / 20)


@pytest.mark.parametrize(("track_s", "fit"), [(14.0, "padded"), (18.0, "trimmed")])
def test_mux_music_only_is_the_fitted_track(
    silent_video: Path, tmp_path: Path, track_s: float, fit: str
) -> None:
    track = _track(tmp_path / "track.flac", track_s)
    settings = MuxSettings(fit="trim")
    report = mux_video(silent_video, track, tmp_path / "scored.mp4", settings)
    assert (report.audio_path, report.fit) == ("music-only", fit)
    assert report.cut_s == pytest.approx(max(0.0, track_s - LONG_VIDEO_S))
    assert report.audio_duration_s == pytest.approx(LONG_VIDEO_S, abs=0.1)
    audio = _decode(tmp_path / "scored.mp4")
    whole, _ = sf.read(str(track), dtype="float32")
    expected = fit_track_to_length(whole[:, 0], SR, LONG_VIDEO_S, fade_out_s=3.0)
    expected = expected * _gain(report, settings)
    assert audio.shape == expected.shape
    assert np.max(np.abs(audio - expected)) < 0.02  # AAC error only: no gap or click at joins
    assert _rms(audio, 14.2, 14.8) > 0.5 * _rms(audio, 1.0, 2.0)  # music to the end...
    assert _rms(audio, LONG_VIDEO_S - 0.05, LONG_VIDEO_S) < 0.02  # ...fading with the picture


def test_parts_encoded_in_parallel_join_without_a_seam(
    silent_video: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # an hour is encoded in parts, one per core; here 16 s in four, against one encoder
    track = _track(tmp_path / "track.flac", LONG_VIDEO_S)
    whole = mux_video(silent_video, track, tmp_path / "whole.mp4", MuxSettings())
    monkeypatch.setattr(mux, "MIN_PART_SECONDS", 3.0)
    monkeypatch.setattr(mux.os, "cpu_count", lambda: 4)
    parts = mux._parts(round(LONG_VIDEO_S * SR), SR)
    assert len(parts) == 4 and all(lo % mux.AAC_FRAME == 0 for lo, _ in parts)
    split = mux_video(silent_video, track, tmp_path / "split.mp4", MuxSettings())
    one, many = _decode(tmp_path / "whole.mp4"), _decode(tmp_path / "split.mp4")
    assert one.shape == many.shape and split.audio_duration_s == whole.audio_duration_s
    music, _ = sf.read(str(track), dtype="float32")
    expected = music[:, 0] * _gain(split, MuxSettings())
    for lo, _ in parts[1:]:  # around each join, no more error than one encoder makes there
        join = slice(lo - 2 * mux.AAC_FRAME, lo + mux.AAC_FRAME)
        error, reference = many[join] - expected[join], one[join] - expected[join]
        assert np.sqrt(np.mean(error**2)) < 2 * np.sqrt(np.mean(reference**2)) + 1e-4
        assert np.max(np.abs(error)) < 0.02
    assert split.loudness_lufs == pytest.approx(whole.loudness_lufs, abs=0.1)
    assert split.true_peak_dbtp == pytest.approx(whole.true_peak_dbtp, abs=0.2)


def test_progress_follows_each_pass_over_the_mix(
    silent_video: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    # four parts on four threads report into one display per pass
    monkeypatch.setattr(mux, "MIN_PART_SECONDS", 3.0)
    monkeypatch.setattr(mux.os, "cpu_count", lambda: 4)
    track = _track(tmp_path / "track.flac", LONG_VIDEO_S)
    mux_video(silent_video, track, tmp_path / "scored.mp4", MuxSettings(), progress=True)
    lines = capsys.readouterr().err.splitlines()
    passes = [line.split(":")[1].strip() for line in lines]
    assert passes[0] == "mix" and "loudness" in passes and passes[-1] == "verify"
    assert passes.index("encode") > passes.index("loudness")
    for name in ("mix", "loudness", "encode"):
        counts = [int(line.split()[2].split("/")[0]) for line in lines if f": {name}:" in line]
        total = int(next(line for line in lines if f": {name}:" in line).split()[2].split("/")[1])
        assert counts == sorted(counts) and counts[-1] == total  # steady, and to the end
    assert lines[-1].startswith("mux: verify: 4/4 part (100%")


def test_a_heavily_limited_mix_masters_in_one_encode(
    gameplay_video: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # drums and fights: the limiter takes loudness off, found on limiter-only passes
    encodes = []
    encode = mux._encode
    monkeypatch.setattr(mux, "_encode", lambda *args: encodes.append(args[1]) or encode(*args))
    track = make_test_track(tmp_path / "track.flac", 14.0)
    report = mux_video(gameplay_video, track, tmp_path / "scored.mp4", MuxSettings())
    plain_gain = -14.0 - report.mix_lufs  # what the target alone asks
    assert len(encodes) == 1 and report.gain_db > plain_gain + 0.3  # the limiter's share back
    written = mux.measure_loudness(tmp_path / "scored.mp4")  # ffmpeg's ebur128, whole file
    assert written.integrated_lufs == pytest.approx(report.loudness_lufs, abs=0.1)
    assert written.true_peak_dbtp == pytest.approx(report.true_peak_dbtp, abs=0.1)
    assert written.true_peak_dbtp <= -1.0
    assert written.integrated_lufs == pytest.approx(-14.0, abs=mux.LOUDNESS_TOLERANCE_LU)


def test_a_broken_aac_stream_is_a_mux_error(tmp_path: Path) -> None:
    (tmp_path / "part0.aac").write_bytes(b"\xff\xf1" + b"no frame here" * 10)
    with pytest.raises(mux.MuxError, match="part0.aac: not an ADTS stream at byte"):
        mux._adts_frames(tmp_path / "part0.aac")


@pytest.mark.parametrize("offset_s", [2.5, -3.0])
def test_video_offset_places_capture_time_zero(
    silent_video: Path, tmp_path: Path, offset_s: float
) -> None:
    track = _track(tmp_path / "track.flac", LONG_VIDEO_S - offset_s)
    settings = MuxSettings(video_offset_seconds=offset_s)
    report = mux_video(silent_video, track, tmp_path / "scored.mp4", settings)
    assert (report.fit, report.video_offset_s, report.cut_s) == ("exact", offset_s, 0.0)
    audio = _decode(tmp_path / "scored.mp4")
    whole, _ = sf.read(str(track), dtype="float32")
    lead, skip = int(max(offset_s, 0) * SR), int(max(-offset_s, 0) * SR)
    expected = np.concatenate([np.zeros(lead, np.float32), whole[skip:, 0]])
    assert audio.shape == expected.shape
    body = slice(lead + SR // 10, len(expected) - SR)  # away from the start and the end
    np.testing.assert_allclose(audio[body], expected[body] * _gain(report, settings), atol=0.02)
    if offset_s > 0:  # silence before capture time 0
        assert _rms(audio, 0.0, offset_s - 0.1) < 1e-3


def test_mux_refuses_a_video_far_from_the_recording(game_video: Path, tmp_path: Path) -> None:
    track = _track(tmp_path / "track.flac", 8.0)
    with pytest.raises(LengthMismatchError, match=r"6\.0 s but the recording 8\.0 s.*--fit trim"):
        mux_video(game_video, track, tmp_path / "out.mp4", MuxSettings())
    with pytest.raises(LengthMismatchError, match=r"6\.0 s but the recording 100\.0 s"):
        mux_video(game_video, track, tmp_path / "out.mp4", MuxSettings(), recording_s=100.0)
    assert not (tmp_path / "out.mp4").exists()


def test_gain_passes_measure_only_the_blocks_inside_their_spans(tmp_path: Path) -> None:
    # a quiet mix, loud in two stretches: measured there, with 2 s of quiet lead on either
    # side fed to the limiter, only the loud blocks may count
    rng = np.random.default_rng(3)
    audio = rng.standard_normal((60 * SR, 2)).astype(np.float32) * np.float32(0.01)
    spans = [(10 * SR, 20 * SR), (40 * SR, 50 * SR)]
    for lo, hi in spans:
        audio[lo:hi] *= 10
    mix = tmp_path / "mix.f32"
    audio.tofile(mix)
    fed = mux._Seconds("loudness", 28 * SR, SR, False)
    ends, blocks = mux._limited_blocks(mix, 60 * SR, spans, (0.0, 0.0), SR, tmp_path / "l.log", fed)
    loud = pyloudnorm.Meter(SR).integrated_loudness(audio[10 * SR : 20 * SR])
    # 400 ms blocks every 100 ms wholly inside each span, placed where they are in the mix
    assert ends.tolist() == [*range(104, 201), *range(404, 501)]
    assert np.all(np.abs(blocks - loud) < 0.5)  # none reaches into the quiet leads
    assert mux._gated_loudness(blocks) == pytest.approx(loud, abs=0.1)


def test_a_sampled_gain_pass_reads_what_a_whole_one_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a minute whose level jumps every few seconds, gained into the limiter: a quarter of it
    # measured, corrected by the unlimited mix's loudness there against all of it
    rng = np.random.default_rng(5)
    levels = np.repeat(10 ** (rng.uniform(-30, -6, 20) / 20), 3 * SR)
    audio = (rng.standard_normal((60 * SR, 2)) * levels[:, None]).astype(np.float32)
    mix = tmp_path / "mix.f32"
    audio.tofile(mix)
    meter = LoudnessMeter(SR)
    meter.add(audio.T)
    raw = mux._MixLoudness.of(meter)
    mastering = (-14.0 - raw.lufs + 4.0, -1.0 - mux.AAC_HEADROOM_DB)  # 4 dB into the limiter
    monkeypatch.setattr(mux, "MIN_PART_SECONDS", 20.0)
    whole = mux._limited_loudness(mix, mastering, SR, tmp_path, False, raw)
    assert whole < -14.0 + 4.0 - 0.5  # the limiter takes its share
    sampled = {"SAMPLE_MIN_S": 30.0, "SAMPLE_STRETCH_S": 2.0, "SAMPLE_EVERY_S": 8.0}
    for name, value in sampled.items():
        monkeypatch.setattr(mux, name, value)
    assert sum(len(g) for g in mux._measured_spans(60 * SR, SR)) == 7
    estimate = mux._limited_loudness(mix, mastering, SR, tmp_path, False, raw)
    assert estimate == pytest.approx(whole, abs=0.3)


def test_a_long_mix_gets_its_gain_from_a_quarter_of_it() -> None:
    hour, short = 3600 * SR, 600 * SR
    assert mux._measured_spans(short, SR) == [[part] for part in mux._parts(short, SR)]
    groups = mux._measured_spans(hour, SR)
    parts = mux._parts(hour, SR)
    assert len(groups) == len(parts)
    stretches = [span for group in groups for span in group]
    assert sum(hi - lo for lo, hi in stretches) == hour // 4
    assert all(hi <= lo for (_, hi), (lo, _) in pairwise(stretches))  # in order, apart
    for group, (first, last) in zip(groups, parts, strict=True):  # each in its part's ffmpeg
        assert all(first <= lo < last for lo, _ in group)


def test_a_sample_without_sound_is_measured_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # sound only where the sample does not look: the pass measures the whole mix instead
    rng = np.random.default_rng(8)
    audio = np.zeros((60 * SR, 2), dtype=np.float32)
    audio[: 2 * SR] = rng.standard_normal((2 * SR, 2)) * np.float32(0.1)
    mix = tmp_path / "mix.f32"
    audio.tofile(mix)
    meter = LoudnessMeter(SR)
    meter.add(audio.T)
    raw = mux._MixLoudness.of(meter)
    levels = (0.0, 0.0)
    whole = mux._limited_loudness(mix, levels, SR, tmp_path, False, raw)
    sampled = {"SAMPLE_MIN_S": 30.0, "SAMPLE_STRETCH_S": 2.0, "SAMPLE_EVERY_S": 8.0}
    for name, value in sampled.items():
        monkeypatch.setattr(mux, name, value)
    assert all(lo >= 3 * SR for group in mux._measured_spans(60 * SR, SR) for lo, _ in group)
    assert mux._limited_loudness(mix, levels, SR, tmp_path, False, raw) == pytest.approx(whole)
    assert whole == pytest.approx(raw.lufs, abs=0.2)


@pytest.mark.skipif(not hasattr(mux.fcntl, "F_GETPIPE_SZ"), reason="Linux pipes only")
def test_ffmpeg_streams_through_wide_pipes(tmp_path: Path) -> None:
    # a 64 KB pipe stalled ffmpeg writing an hour's mix some 20,000 times
    args = ["-f", "lavfi", "-i", "anullsrc=d=0.1", "-f", "f32le", "pipe:"]
    with mux._ffmpeg(args, tmp_path / "log", stdout=subprocess.PIPE) as proc:
        size = mux.fcntl.fcntl(proc.stdout.fileno(), mux.fcntl.F_GETPIPE_SZ)
        assert proc.stdout.read() and size == mux.PIPE_BYTES
