"""Join the rendered segments into one track that lines up with the video.

Segment k starts at its window's start (``start_s``) and is rendered a little longer than
its window; the extra tail overlaps the next segment. At each seam the outgoing segment
fades out and the incoming one fades in over ``crossfade_s`` (capped by the overlap there),
starting at the window boundary, with equal-power gains (cos / sin), so the summed power
stays constant through the seam of two unrelated signals. The outgoing segment is cut where
its gain reaches zero, moved to its nearest zero crossing within a few milliseconds, and no
fade is shorter than ``MIN_FADE_S``: even a hard cut does not click. A segment with no
neighbour overlapping it fades in and out over its own tail.

Then the whole track is loudness-normalised to ``target_lufs`` (EBU R128 / BS.1770
integrated loudness with pyloudnorm's filters), a look-ahead limiter holds the sample peaks
just under ``true_peak_dbtp``, and a last gain trim catches any inter-sample peak left (true
peak, 4x oversampled as in BS.1770 annex 2). Limiting lowers the loudness a little; the
``StitchResult`` reports the loudness and true peak the track really has.

Seam metric: around each seam, the largest frame-to-frame jump of short-term RMS (dB) and
of spectral flux, each divided by the median of the same statistic over windows of equal
length inside the segments. A ratio near 1 means a seam moves the sound no more than the
music moves itself.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from math import gcd
from pathlib import Path

import numpy as np
import polars as pl
import soundfile as sf

from bgm_batch.atomic import atomic_path
from bgm_batch.settings import AudioSettings

MIN_FADE_S = 0.01
ZERO_CROSSING_SEARCH_S = 0.003
METRIC_FRAME = 1024  # samples per analysis frame (hop = half a frame)
METRIC_MARGIN_S = 0.25  # analysed on each side of a crossfade
TRUE_PEAK_OVERSAMPLING = 4
LOUDNESS_BLOCK_S = 0.4
LOUDNESS_HOP_S = 0.1
LIMITER_WINDOW_S = 0.02  # look-ahead and release of the peak limiter
LIMITER_MARGIN_DB = 0.3  # the limiter aims this far below the true-peak ceiling


@dataclass(frozen=True)
class StitchInput:
    """One segment: its audio (array (channels, n) or a file), where it starts in the track,
    and how long its crossfade with the previous segment should be."""

    audio: np.ndarray | Path | str
    start_s: float
    crossfade_s: float = 0.0
    sample_rate: int | None = None  # required with an array; read from the file otherwise


@dataclass
class StitchResult:
    """The track, float32 (2, n) at ``sample_rate``; each input's offset in seconds (input
    order); one row of seam metrics per seam; the loudness and true peak it ended with."""

    audio: np.ndarray
    sample_rate: int
    offsets_s: list[float]
    seams: pl.DataFrame
    loudness_lufs: float
    true_peak_dbtp: float
    gain_db: float


def stitch_inputs(frame: pl.DataFrame) -> list[StitchInput]:
    """Inputs from a frame with ``audio_path``, ``start_s`` and ``crossfade_s`` (the planned
    frame joined with ``RenderResult.segments``)."""
    return [StitchInput(Path(r["audio_path"]), float(r["start_s"]), float(r["crossfade_s"]))
            for r in frame.select("audio_path", "start_s", "crossfade_s").iter_rows(named=True)]


def _load(segment: StitchInput, sample_rate: int) -> np.ndarray:
    """The segment as float32 stereo at ``sample_rate``."""
    if isinstance(segment.audio, np.ndarray):
        if segment.sample_rate is None:
            raise ValueError("a StitchInput with an array needs its sample_rate")
        audio, rate = np.atleast_2d(segment.audio).astype(np.float32), segment.sample_rate
    else:
        data, rate = sf.read(segment.audio, dtype="float32", always_2d=True)
        audio = data.T
    audio = np.repeat(audio, 2, axis=0) if audio.shape[0] == 1 else audio[:2]
    if rate != sample_rate:
        from scipy.signal import resample_poly

        g = gcd(int(rate), int(sample_rate))
        audio = resample_poly(audio, sample_rate // g, rate // g, axis=1).astype(np.float32)
    return np.ascontiguousarray(audio)


def _zero_crossing(audio: np.ndarray, at: int, lo: int, hi: int) -> int:
    """The sample nearest ``at`` within [lo, hi) where the mid signal changes sign."""
    if hi - lo < 2:
        return at
    mid = audio[:, lo:hi].mean(axis=0)
    crossings = np.flatnonzero(np.signbit(mid[:-1]) != np.signbit(mid[1:])) + lo + 1
    return int(crossings[np.argmin(np.abs(crossings - at))]) if crossings.size else at


def _fades(length: int, correlation: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Equal-power (fade-out, fade-in) gains over ``length`` samples for two signals of
    the given correlation: cos/sin, scaled so that a^2 + b^2 + 2*rho*a*b = 1. Unrelated
    signals get the classic cos/sin; a continuation that plays the same notes as its
    predecessor (rho near 1) gets gains summing to 1, without a 3 dB bump mid-seam."""
    t = (np.arange(length, dtype=np.float64) + 0.5) / max(length, 1)
    out, into = np.cos(0.5 * np.pi * t), np.sin(0.5 * np.pi * t)
    norm = np.sqrt(1.0 + 2.0 * min(max(correlation, 0.0), 1.0) * out * into)
    return (out / norm).astype(np.float32), (into / norm).astype(np.float32)


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Normalised correlation of two equally long stretches of audio."""
    energy = float(np.sqrt(np.vdot(a, a) * np.vdot(b, b)))
    return float(np.vdot(a, b)) / energy if energy > 0 else 0.0


def _prefetched(segments: list[StitchInput], rate: int) -> Iterator[np.ndarray]:
    """The segments loaded in order, decoding two ahead on threads (libsndfile and the
    resampler release the GIL), without holding every segment in memory at once."""
    with ThreadPoolExecutor(2) as pool:
        queue = deque(pool.submit(_load, s, rate) for s in segments[:3])
        for following in segments[3:]:
            yield queue.popleft().result()
            queue.append(pool.submit(_load, following, rate))
        while queue:
            yield queue.popleft().result()


def _assemble(segments: list[StitchInput], starts: list[int], rate: int,
              nominal: int) -> tuple[np.ndarray, list[int]]:
    """Add the segments (sorted by start) into one track with their crossfades; also return
    each seam's crossfade length in samples (0 where the segments do not overlap)."""
    audios = _prefetched(segments, rate)
    lengths = [_frames(s, rate) for s in segments]
    total = max(s + n for s, n in zip(starts, lengths, strict=True))
    track = np.zeros((2, total), dtype=np.float32)
    min_fade = round(MIN_FADE_S * rate)
    search = round(ZERO_CROSSING_SEARCH_S * rate)
    fades = [0] * len(segments)  # fade-in of each segment, set by the segment before it
    for i, (start, audio) in enumerate(zip(starts, audios, strict=True)):
        end = start + audio.shape[1]
        nxt = starts[i + 1] if i + 1 < len(starts) else end
        if nxt < end:  # a seam: cut where the crossfade ends, at a zero crossing
            want = max(round(segments[i + 1].crossfade_s * rate), min_fade)
            cut = min(nxt + want, end, nxt + lengths[i + 1])
            cut = start + _zero_crossing(audio, cut - start,
                                         max(cut - start - search, nxt - start + 1),
                                         min(cut - start + search, audio.shape[1]))
            fades[i + 1] = cut - nxt
        else:
            cut = end
        fade = fades[i] or min(min_fade, cut - start)
        head = track[:, start : start + fade]
        if fades[i]:  # the previous segment lies here at full gain: crossfade the two
            falling, rising = _fades(fade, _correlation(head, audio[:, :fade]))
            head *= falling
        else:
            rising = _fades(fade)[1]
        head += audio[:, :fade] * rising
        track[:, start + fade : cut] = audio[:, fade : cut - start]  # nothing else is here
        if i + 1 == len(segments) or not fades[i + 1]:  # nothing follows: fade the tail out
            fade_out = min(max(end - (start + nominal), min_fade), cut - start)
            track[:, cut - fade_out : cut] *= _fades(fade_out)[0]
    return track, fades[1:]


def _frames(segment: StitchInput, rate: int) -> int:
    """A segment's length in samples at ``rate``, without decoding it."""
    if isinstance(segment.audio, np.ndarray):
        return round(np.atleast_2d(segment.audio).shape[1] * rate / segment.sample_rate)
    info = sf.info(segment.audio)
    return round(info.frames * rate / info.samplerate)


def _oversampling_filter() -> np.ndarray:
    """Interpolation FIR for 4x oversampling (passband to 20 kHz at 48 kHz, unity gain)."""
    from scipy.signal import firwin

    taps = 12 * TRUE_PEAK_OVERSAMPLING
    return TRUE_PEAK_OVERSAMPLING * firwin(taps, 1.0 / TRUE_PEAK_OVERSAMPLING,
                                           window=("kaiser", 8.0))


def true_peak(audio: np.ndarray, block: int = 4800) -> float:
    """Largest absolute value of the 4x oversampled signal (linear).

    Only blocks that could hold the peak are oversampled: no interpolated value can exceed
    a block's sample peak times the filter's largest polyphase L1 norm, so blocks whose bound
    falls below the best peak found so far are skipped. Exact, and fast on music.
    """
    from scipy.signal import upfirdn

    h = _oversampling_filter()
    bound = max(np.abs(h[p :: TRUE_PEAK_OVERSAMPLING]).sum()
                for p in range(TRUE_PEAK_OVERSAMPLING))
    pad = len(h) // TRUE_PEAK_OVERSAMPLING + 1
    n = audio.shape[1]
    count = -(-n // block)
    padded = np.zeros((audio.shape[0], count * block), dtype=np.float32)
    padded[:, :n] = np.abs(audio)
    peaks = padded.reshape(audio.shape[0], count, block).max(axis=(0, 2))
    neighbourhood = np.maximum(peaks, np.maximum(np.roll(peaks, 1), np.roll(peaks, -1)))
    best = float(peaks.max(initial=0.0))
    for b in np.argsort(-peaks):
        if neighbourhood[b] * bound <= best:
            break
        lo, hi = max(b * block - pad, 0), min((b + 1) * block + pad, n)
        best = max(best, float(np.abs(upfirdn(h, audio[:, lo:hi], TRUE_PEAK_OVERSAMPLING,
                                              axis=1)).max()))
    return best


def integrated_loudness(audio: np.ndarray, rate: int) -> float:
    """BS.1770-4 integrated loudness (LUFS) of (channels, n) audio: pyloudnorm's K-weighting
    filters and its gating (400 ms blocks every 100 ms, -70 LUFS absolute and -10 LU relative
    gates), vectorised. pyloudnorm's own meter loops over the blocks in Python, which takes
    longer than the rest of the stitch on an hour of audio; tests check that both agree."""
    import pyloudnorm
    from scipy.signal import sosfilt

    stages = list(pyloudnorm.Meter(rate)._filters.values())  # K-weighting: shelf, high-pass
    sos = np.array([np.concatenate([stage.b, stage.a]) for stage in stages])
    gain = float(np.prod([stage.passband_gain for stage in stages]))
    hop = round(LOUDNESS_HOP_S * rate)
    usable = audio.shape[1] // hop * hop
    chunk = hop * 600

    def hop_energy(channel: np.ndarray) -> np.ndarray:
        state = np.zeros((len(sos), 2))
        energies = []
        for start in range(0, usable, chunk):
            weighted, state = sosfilt(sos, channel[start : min(start + chunk, usable)], zi=state)
            energies.append(np.square(gain * weighted).reshape(-1, hop).sum(axis=1))
        return np.concatenate(energies) if energies else np.zeros(0)

    with ThreadPoolExecutor(2) as pool:  # sosfilt releases the GIL
        hops = np.array(list(pool.map(hop_energy, audio)))
    per_block = round(LOUDNESS_BLOCK_S / LOUDNESS_HOP_S)
    if hops.shape[1] < per_block:
        return float("-inf")
    window = np.lib.stride_tricks.sliding_window_view(hops, per_block, axis=1)
    z = window.sum(axis=2) / (per_block * hop)  # mean square per channel and block
    with np.errstate(divide="ignore"):
        block_loudness = -0.691 + 10 * np.log10(z.sum(axis=0))
        gated = block_loudness >= -70.0
        if not gated.any():
            return float("-inf")
        relative = -0.691 + 10 * np.log10(z[:, gated].mean(axis=1).sum()) - 10.0
        gated &= block_loudness > relative
        return float(-0.691 + 10 * np.log10(z[:, gated].mean(axis=1).sum()))


def limit(track: np.ndarray, ceiling: float, rate: int) -> None:
    """Look-ahead peak limiter, in place: no sample ends above ``ceiling`` (linear).

    The gain each sample needs is held over +-``LIMITER_WINDOW_S`` (a running minimum) and
    then smoothed with a moving average of the same width: the average of values that are
    all at most a sample's own need stays at most that need, so peaks are caught exactly,
    while the gain glides down ahead of them and back up after.
    """
    from scipy.ndimage import minimum_filter1d, uniform_filter1d

    level = np.abs(track).max(axis=0)
    if level.max(initial=0.0) <= ceiling:
        return
    need = np.minimum(1.0, ceiling / np.maximum(level, 1e-12)).astype(np.float32)
    width = 2 * round(LIMITER_WINDOW_S * rate) + 1
    # Only stretches near an over need the filters: blocks holding one, and their neighbours.
    block = 4 * width
    flags = np.zeros(-(-need.size // block) + 2, dtype=bool)
    flags[np.flatnonzero(need < 1.0) // block + 1] = True
    flags = (flags | np.roll(flags, 1) | np.roll(flags, -1))[1:-1]
    edges = np.flatnonzero(np.diff(np.concatenate([[0], flags.astype(np.int8), [0]])))
    for first, last in zip(edges[::2] * block, edges[1::2] * block, strict=True):
        last = min(last, need.size)
        lo, hi = max(first - 2 * width, 0), min(last + 2 * width, need.size)
        gain = uniform_filter1d(minimum_filter1d(need[lo:hi], width), width)
        region = slice(first, last)
        # min(): float rounding in the moving average must not overshoot a sample's need
        track[:, region] *= np.minimum(gain[first - lo : last - lo], need[region])


def _normalise(track: np.ndarray, rate: int, settings: AudioSettings) -> tuple[float, float,
                                                                                 float]:
    """Scale and limit ``track`` in place; returns (gain dB, loudness LUFS, true peak dBTP)."""
    loudness = integrated_loudness(track, rate)
    if not np.isfinite(loudness):  # silence: nothing to normalise
        return 0.0, float(loudness), float("-inf")
    gain_db = settings.target_lufs - loudness
    track *= np.float32(10 ** (gain_db / 20))
    ceiling = 10 ** ((settings.true_peak_dbtp - LIMITER_MARGIN_DB) / 20)
    limit(track, ceiling, rate)
    peak_db = 20 * np.log10(max(true_peak(track), 1e-12))
    if peak_db > settings.true_peak_dbtp:  # an inter-sample peak the limiter could not see
        trim = settings.true_peak_dbtp - peak_db
        track *= np.float32(10 ** (trim / 20))
        peak_db += trim
    return float(gain_db), integrated_loudness(track, rate), float(peak_db)


def _frame_stats(mono: np.ndarray) -> tuple[float, float]:
    """Largest frame-to-frame RMS jump (dB) and largest spectral flux in a stretch."""
    hop = METRIC_FRAME // 2
    count = (len(mono) - METRIC_FRAME) // hop + 1
    if count < 2:
        return 0.0, 0.0
    frames = np.lib.stride_tricks.sliding_window_view(mono, METRIC_FRAME)[::hop][:count]
    rms_db = 10 * np.log10(np.mean(frames.astype(np.float64) ** 2, axis=1) + 1e-10)
    spectra = np.abs(np.fft.rfft(frames * np.hanning(METRIC_FRAME), axis=1))
    spectra /= spectra.sum(axis=1, keepdims=True) + 1e-12
    flux = np.sqrt((np.maximum(np.diff(spectra, axis=0), 0.0) ** 2).sum(axis=1))
    return float(np.abs(np.diff(rms_db)).max()), float(flux.max())


def _seam_metrics(track: np.ndarray, rate: int, starts: list[int], fades: list[int],
                  nominal: int) -> pl.DataFrame:
    """Seam statistics and their ratio to the same statistics inside the segments."""
    mono = track.mean(axis=0)
    margin = round(METRIC_MARGIN_S * rate)
    seams, inside = [], []
    for start, fade in zip(starts[1:], fades, strict=True):
        stretch = mono[max(start - margin, 0) : start + fade + margin]
        seams.append((start / rate, fade / rate, *_frame_stats(stretch)))
    length = max(fades, default=0) + 2 * margin
    for start in starts:  # the same length of music from the middle of each window
        middle = start + nominal // 2
        if middle + length // 2 <= len(mono):
            inside.append(_frame_stats(mono[middle - length // 2 : middle + length // 2]))
    ref_rms, ref_flux = (np.median(np.array(inside), axis=0) if inside else (1.0, 1.0))
    return pl.DataFrame(
        [{"time_s": t, "crossfade_s": f, "rms_jump_db": r, "flux": x,
          "rms_ratio": r / max(ref_rms, 1e-9), "flux_ratio": x / max(ref_flux, 1e-9)}
         for t, f, r, x in seams],
        schema={"time_s": pl.Float64, "crossfade_s": pl.Float64, "rms_jump_db": pl.Float64,
                "flux": pl.Float64, "rms_ratio": pl.Float64, "flux_ratio": pl.Float64})


def stitch_track(segments: Sequence[StitchInput], settings: AudioSettings) -> StitchResult:
    """Crossfade, place, normalise and measure; see the module docstring."""
    if not segments:
        raise ValueError("nothing to stitch")
    rate = settings.sample_rate
    order = sorted(range(len(segments)), key=lambda i: segments[i].start_s)
    starts = [round(segments[i].start_s * rate) for i in order]
    if starts[0] < 0:
        raise ValueError("a segment starts before the track")
    nominal = round(settings.segment_seconds * rate)
    track, fades = _assemble([segments[i] for i in order], starts, rate, nominal)
    gain_db, loudness, peak = _normalise(track, rate, settings)
    seams = _seam_metrics(track, rate, starts, fades, nominal)
    offsets = [0.0] * len(segments)
    for i, start in zip(order, starts, strict=True):
        offsets[i] = start / rate
    return StitchResult(audio=track, sample_rate=rate, offsets_s=offsets, seams=seams,
                        loudness_lufs=loudness, true_peak_dbtp=peak, gain_db=gain_db)


def write_track(path: Path, audio: np.ndarray, sample_rate: int) -> None:
    """Write the track as 24-bit FLAC, atomically."""
    with atomic_path(Path(path)) as tmp:
        sf.write(tmp, np.asarray(audio).T, sample_rate, format="FLAC", subtype="PCM_24")
