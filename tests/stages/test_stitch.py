"""Stitching: placement, crossfades, loudness, true peak, limiter, seam metric, FLAC, and
that the streaming passes give the same track in any block size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyloudnorm
import pytest
import soundfile as sf
from scipy.signal import upfirdn

from bgm_batch.audio.pcm24 import to_pcm24
from bgm_batch.settings import AudioSettings
from bgm_batch.stages import stitch
from bgm_batch.stages.stitch import (
    StitchInput,
    StitchResult,
    _block_peaks,
    _oversampling_filter,
    integrated_loudness,
    k_weighting,
    limit,
    true_peak,
)

RATE = 48000
SETTINGS = AudioSettings(segment_seconds=2.0, overlap_seconds=0.5)


def noise(seconds: float, seed: int, level: float = 0.1) -> np.ndarray:
    return (level * np.random.default_rng(seed).standard_normal((2, round(seconds * RATE)))).astype(
        np.float32
    )


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x.astype(np.float64) ** 2)))


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # stitch_track below writes track.flac here


def stitch_track(
    segments: list[StitchInput], settings: AudioSettings
) -> tuple[StitchResult, np.ndarray]:
    """Stitch into track.flac; the result and the written audio, float32 (2, n)."""
    result = stitch.stitch_track(segments, settings, Path("track.flac"))
    audio, rate = sf.read(result.path, dtype="float32", always_2d=True)
    assert rate == result.sample_rate and len(audio) == result.frames
    return result, audio.T


def test_segments_start_on_their_windows_and_the_track_covers_them():
    inputs = [StitchInput(noise(2.5, i), 2.0 * i, 0.5, RATE) for i in range(4)]
    result, audio = stitch_track(inputs, SETTINGS)
    assert result.offsets_s == [0.0, 2.0, 4.0, 6.0]
    assert audio.shape == (2, round(8.5 * RATE))
    assert result.sample_rate == RATE and result.seams.height == 3
    assert result.seams["crossfade_s"].to_list() == pytest.approx([0.5] * 3, abs=0.004)


def test_progress_counts_the_segments_placed(capsys):
    inputs = [StitchInput(noise(2.5, i), 2.0 * i, 0.5, RATE) for i in range(4)]
    stitch.stitch_track(inputs, SETTINGS, Path("track.flac"), progress=True)
    lines = capsys.readouterr().err.splitlines()  # not a terminal: a line per tenth
    assert [line.split(" (")[0] for line in lines] == [f"stitch: {k}/4 seg" for k in (1, 2, 3, 4)]


def test_equal_power_seams_keep_the_level_for_unrelated_and_for_identical_audio():
    loud = SETTINGS.model_copy(update={"target_lufs": -20.0})
    unrelated = stitch_track(
        [StitchInput(noise(2.5, i), 2.0 * i, 0.5, RATE) for i in range(3)], loud
    )[1]
    same = noise(4.5, 0)
    identical = stitch_track(
        [
            StitchInput(same[:, : round(2.5 * RATE)], 0.0, 0.5, RATE),
            StitchInput(same[:, 2 * RATE :], 2.0, 0.5, RATE),
        ],
        loud,
    )[1]
    for track in (unrelated, identical):
        level = [rms(track[:, i : i + 2400]) for i in range(0, 4 * RATE, 2400)]
        assert max(level) / min(level) < 1.25  # no dip or 3 dB bump at a seam
    assert np.allclose(
        identical[:, 2 * RATE + 100 : round(2.4 * RATE)],
        same[:, 2 * RATE + 100 : round(2.4 * RATE)] * (identical[0, RATE] / same[0, RATE]),
        atol=1e-3,
    )


def test_loudness_target_and_true_peak_ceiling():
    quiet = [noise(2.5, i, level=0.01) for i in range(3)]
    quiet[1][:, RATE : RATE + 2400 : 100] = 0.2  # spikes the limiter must catch
    result, audio = stitch_track(
        [StitchInput(a, 2.0 * i, 0.5, RATE) for i, a in enumerate(quiet)], SETTINGS
    )
    measured = pyloudnorm.Meter(RATE).integrated_loudness(audio.T)
    assert measured == pytest.approx(-16.0, abs=0.3)
    assert result.loudness_lufs == pytest.approx(measured, abs=0.01)  # after limiting too
    assert result.gain_db > 0
    assert result.true_peak_dbtp <= -1.0 + 1e-6
    assert 20 * np.log10(true_peak(audio)) <= -1.0 + 1e-4


@pytest.mark.parametrize("frames", [0, 3, 1024, 2048, 2500])
def test_block_peaks_over_chunks_and_a_partial_last_block(frames):
    audio = noise(1.0, 5)[:, :frames]  # blocks of 4: chunks of 1,024 samples
    brute = [np.abs(audio[:, i : i + 4]).max() for i in range(0, frames, 4)]
    np.testing.assert_array_equal(_block_peaks(audio, 4), np.array(brute, dtype=np.float32))


def test_fast_loudness_and_true_peak_agree_with_the_references():
    audio = noise(5.0, 3) * np.linspace(0.1, 1.0, 5 * RATE, dtype=np.float32)
    assert integrated_loudness(audio, RATE) == pytest.approx(
        pyloudnorm.Meter(RATE).integrated_loudness(audio.T), abs=0.01
    )
    brute = np.abs(upfirdn(_oversampling_filter(), audio, 4, axis=1)).max()
    assert true_peak(audio) == pytest.approx(brute, rel=1e-6)
    assert true_peak(audio) >= np.abs(audio).max()
    # a running maximum as floor prunes harder and changes nothing else
    assert true_peak(audio, floor=0.9 * brute) == pytest.approx(brute, rel=1e-6)
    assert true_peak(audio, floor=1.5 * brute) == 1.5 * brute
    edge = np.zeros((2, 30), dtype=np.float32)
    edge[:, [0, -1]] = [[0.9, -0.7], [0.2, 0.8]]  # peaks at both ends: the filter's tails
    assert true_peak(edge) == pytest.approx(
        max(np.abs(upfirdn(_oversampling_filter(), edge, 4, axis=1)).max(), 0.9), rel=1e-6
    )


def test_the_limiter_caps_peaks_and_leaves_the_rest():
    audio = noise(3.0, 4, level=0.05)
    audio[:, RATE] = 0.9  # one spike
    before = audio.copy()
    limit(audio, 0.5, RATE)
    assert np.abs(audio).max() <= 0.5 + 1e-6
    assert np.array_equal(audio[:, 2 * RATE :], before[:, 2 * RATE :])  # far from the spike
    untouched = before.copy()
    assert limit(untouched, 1.0, RATE) == []
    assert np.array_equal(untouched, before)


def test_seam_metric_flags_a_hard_jump():
    smooth, _ = stitch_track(
        [StitchInput(noise(2.5, i), 2.0 * i, 0.5, RATE) for i in range(4)], SETTINGS
    )
    jumpy, _ = stitch_track(
        [
            StitchInput(noise(2.5, i, level=0.3 if i == 2 else 0.01), 2.0 * i, 0.0, RATE)
            for i in range(4)
        ],
        SETTINGS,
    )
    assert smooth.seams["rms_ratio"].max() < 3.0
    assert jumpy.seams["rms_ratio"].max() > 3.0 * smooth.seams["rms_ratio"].max()


def test_files_mono_other_rates_and_gaps(tmp_path):
    mono = (0.1 * np.sin(np.arange(round(2.5 * 32000)) / 5)).astype(np.float32)
    sf.write(tmp_path / "a.wav", mono, 32000)
    inputs = [
        StitchInput(tmp_path / "a.wav", 0.0, 0.0),
        StitchInput(noise(2.5, 1), 6.0, 0.5, RATE),
    ]  # windows 1 and 2 are missing
    result, audio = stitch_track(inputs, SETTINGS)
    assert audio.shape == (2, round(8.5 * RATE))
    gap = audio[:, round(2.6 * RATE) : round(5.9 * RATE)]
    assert np.abs(gap).max() == 0.0  # silence where no window was rendered
    first = audio[:, : 2 * RATE]
    assert np.allclose(first[0], first[1])  # mono became two equal channels
    info = sf.info(result.path)
    assert (info.samplerate, info.channels, info.format, info.subtype) == (
        48000,
        2,
        "FLAC",
        "PCM_24",
    )


def test_k_weighting_matches_the_published_bs1770_filters_at_48k():
    """BS.1770-4 Table 1 and 2 coefficients at 48 kHz: responses agree within 0.05 dB (the
    published high-pass passes +0.04 dB; pyloudnorm normalises it to 0 dB)."""
    from scipy.signal import freqz

    published = [
        (
            [1.53512485958697, -2.69169618940638, 1.19839281085285],
            [1.0, -1.69065929318241, 0.73248077421585],
        ),
        ([1.0, -2.0, 1.0], [1.0, -1.99004745483398, 0.99007225036621]),
    ]
    freqs = np.geomspace(20, 20000, 200)
    for ours, (b, a) in zip(k_weighting(48000), published, strict=True):
        _, h_ours = freqz(ours.b, ours.a, worN=freqs, fs=48000)
        _, h_ref = freqz(b, a, worN=freqs, fs=48000)
        diff = 20 * np.log10(np.abs(h_ours)) - 20 * np.log10(np.abs(h_ref))
        assert np.abs(diff).max() < 0.05


def test_streaming_matches_the_whole_track_whatever_the_block_sizes(monkeypatch):
    """A long gap (streamed as silence blocks), a short limiter chunk and loud spikes: the
    written track must not depend on how the stream is cut, and its loudness (metered block
    by block) must equal a whole-track measurement."""
    segments = [noise(2.5, i, level=0.05) for i in range(6)]
    for i, a in enumerate(segments):
        a[:, 7000 * (i + 1) : 7000 * (i + 1) + 500 : 50] = 0.9  # overs for the limiter
    inputs = [StitchInput(a, [0, 2, 4, 14, 16, 18][i], 0.5, RATE) for i, a in enumerate(segments)]
    reference, audio = stitch_track(inputs, SETTINGS)
    monkeypatch.setattr(stitch, "SILENCE_BLOCK_S", 0.7)
    monkeypatch.setattr(stitch, "LIMITER_CHUNK", 5)
    streamed, again = stitch_track(inputs, SETTINGS)
    assert np.array_equal(audio, again)
    assert streamed.loudness_lufs == pytest.approx(
        pyloudnorm.Meter(RATE).integrated_loudness(audio.T), abs=0.01
    )
    assert streamed.true_peak_dbtp <= -1.0 and 20 * np.log10(true_peak(audio)) <= -1.0 + 1e-4
    assert np.abs(audio[:, round(6.6 * RATE) : round(13.9 * RATE)]).max() == 0.0


def test_a_failed_stitch_leaves_no_track(monkeypatch):
    inputs = [StitchInput(noise(2.5, i), 2.0 * i, 0.5, RATE) for i in range(3)]

    def broken(*_args):
        raise OSError("disk gone")

    monkeypatch.setattr(stitch, "limit", broken)
    with pytest.raises(OSError, match="disk gone"):
        stitch.stitch_track(inputs, SETTINGS, Path("track.flac"))
    assert not Path("track.flac").exists() and not list(Path().glob(".*tmp*"))


@pytest.mark.parametrize("format", ["FLAC", "WAV"])
def test_the_writer_writes_the_bytes_libsndfile_writes_by_path(format):
    """The writer hands libsndfile a descriptor of its own (to start the writing-back early):
    the file is the one libsndfile writes when given the path."""
    blocks = [noise(seconds, seed, 0.3) for seed, seconds in enumerate((1.0, 0.37, 2.5))]
    writer = stitch._Writer(Path("mine"), RATE, format)
    for block in blocks:
        writer.write(block)
    writer.close()
    options = {"compression_level": 0.0} if format == "FLAC" else {}
    whole = to_pcm24(np.concatenate(blocks, axis=1)).T
    sf.write("libsndfile", whole, RATE, "PCM_24", format=format, **options)
    assert writer.frames == len(whole)
    assert Path("mine").read_bytes() == Path("libsndfile").read_bytes()
    assert not list(Path().glob(".*tmp*"))


def test_stems_are_stitched_like_the_track_and_sum_to_it(tmp_path):
    """Three roles per segment, loud enough that the limiter works: each stem gets the
    track's cuts, crossfades, gain and limiter gain, so the stems written sum to the track
    (to within 24-bit rounding), and a role absent from a segment is silent there."""
    inputs = []
    for i in range(4):
        parts = {
            "bass": noise(2.5, 10 * i, 0.3),
            "lead": noise(2.5, 10 * i + 1, 0.2),
            "drums": np.where(noise(2.5, 10 * i + 2) > 0.25, 0.9, 0.0).astype(np.float32),
        }
        if i == 2:
            del parts["lead"]
        mix = np.sum(list(parts.values()), axis=0)
        inputs.append(StitchInput(mix, 2.0 * i, 0.5, RATE, stems=parts))
    settings = SETTINGS.model_copy(update={"target_lufs": -6.0})
    result = stitch.stitch_track(inputs, settings, Path("track.flac"), tmp_path)
    assert set(result.stems) == {"drums", "bass", "lead"}
    track, _ = sf.read(result.path, dtype="float64", always_2d=True)
    total = np.zeros_like(track)
    for role, path in result.stems.items():
        info = sf.info(path)
        assert (info.format, info.subtype, info.samplerate) == ("WAV", "PCM_24", RATE), role
        stem, _ = sf.read(path, dtype="float64", always_2d=True)
        total += stem
        if role == "lead":  # segment 2 (4 s - 6 s) has no lead, but the crossfades reach in
            assert np.abs(stem[round(4.6 * RATE) : round(5.9 * RATE)]).max() == 0.0
    assert np.abs(total - track).max() < 4 * 2**-23
    assert result.true_peak_dbtp <= settings.true_peak_dbtp + 1e-6
    plain = stitch.stitch_track(
        [StitchInput(s.audio, s.start_s, s.crossfade_s, RATE) for s in inputs],
        settings,
        Path("plain.flac"),
    )
    assert np.array_equal(
        sf.read(plain.path, dtype="int32")[0], sf.read(result.path, dtype="int32")[0]
    )


def test_loudness_from_the_segments_own_hops_matches_a_measuring_pass():
    """Segments of different levels with crossfades: the gain from each segment's
    ``hop_energies`` (what the render stage keeps) is within 0.05 dB of the gain a measuring
    pass over the assembled track finds, and the written track lands on the target."""
    window = round(SETTINGS.segment_seconds * RATE)  # crossfades a tenth of it, as 1 s of 10
    audio = [noise(2.2, i, level=(0.1, 0.2, 0.07, 0.14, 0.1)[i]) for i in range(5)]
    measured = [StitchInput(a, 2.0 * i, 0.2, RATE) for i, a in enumerate(audio)]
    told = [
        StitchInput(a, 2.0 * i, 0.2, RATE, loudness_hops=stitch.hop_energies(a[:, :window], RATE))
        for i, a in enumerate(audio)
    ]
    first, _ = stitch_track(measured, SETTINGS)
    second, written = stitch_track(told, SETTINGS)
    assert second.gain_db == pytest.approx(first.gain_db, abs=0.05)
    assert integrated_loudness(written, RATE) == pytest.approx(SETTINGS.target_lufs, abs=0.1)
