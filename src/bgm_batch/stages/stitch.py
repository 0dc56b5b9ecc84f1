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
integrated loudness with pyloudnorm's filters, vectorised), a look-ahead limiter holds the peaks
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
    return [
        StitchInput(Path(r["audio_path"]), float(r["start_s"]), float(r["crossfade_s"]))
        for r in frame.select("audio_path", "start_s", "crossfade_s").iter_rows(named=True)
    ]


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


def _assemble(
    segments: list[StitchInput], starts: list[int], rate: int, nominal: int
) -> tuple[np.ndarray, list[int]]:
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
            cut = start + _zero_crossing(
                audio,
                cut - start,
                max(cut - start - search, nxt - start + 1),
                min(cut - start + search, audio.shape[1]),
            )
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
    return TRUE_PEAK_OVERSAMPLING * firwin(
        taps, 1.0 / TRUE_PEAK_OVERSAMPLING, window=("kaiser", 8.0)
    )


def _block_peaks(audio: np.ndarray, block: int) -> np.ndarray:
    """Largest absolute sample of each ``block`` samples (last block partial), chunk by
    chunk so that an hour of audio needs no full-size temporary."""
    n = audio.shape[1]
    chunk = block * 256
    peaks = []
    for start in range(0, n, chunk):
        part = np.abs(audio[:, start : start + chunk]).max(axis=0)
        pad = -part.size % block
        peaks.append(np.pad(part, (0, pad)).reshape(-1, block).max(axis=1))
    return np.concatenate(peaks) if peaks else np.zeros(0, dtype=np.float32)


def true_peak(audio: np.ndarray, block: int = 4800) -> float:
    """Largest absolute value of the 4x oversampled signal (linear).

    Only blocks that could hold the peak are oversampled: no interpolated value can exceed
    a block's sample peak times the filter's largest polyphase L1 norm, so blocks whose bound
    falls below the best peak found so far are skipped. Exact, and fast on music.
    """
    from scipy.signal import upfirdn

    h = _oversampling_filter()
    bound = max(np.abs(h[p::TRUE_PEAK_OVERSAMPLING]).sum() for p in range(TRUE_PEAK_OVERSAMPLING))
    pad = len(h) // TRUE_PEAK_OVERSAMPLING + 1
    n = audio.shape[1]
    peaks = _block_peaks(audio, block)
    neighbourhood = np.maximum(peaks, np.maximum(np.roll(peaks, 1), np.roll(peaks, -1)))
    best = float(peaks.max(initial=0.0))
    for b in np.argsort(-neighbourhood, kind="stable"):
        if neighbourhood[b] * bound <= best:
            break
        lo, hi = max(b * block - pad, 0), min((b + 1) * block + pad, n)
        best = max(
            best, float(np.abs(upfirdn(h, audio[:, lo:hi], TRUE_PEAK_OVERSAMPLING, axis=1)).max())
        )
    return best


def k_weighting(rate: int) -> list:
    """BS.1770's K-weighting at ``rate``: the +4 dB high shelf at 1500 Hz (Q 1/sqrt 2), then the
    38 Hz high-pass (Q 0.5), built with pyloudnorm's public ``IIRfilter`` from the published
    parameters (the same as pyloudnorm's own ``Meter``, which a test checks)."""
    import pyloudnorm

    return [
        pyloudnorm.IIRfilter(4.0, 1 / np.sqrt(2), 1500.0, rate, "high_shelf"),
        pyloudnorm.IIRfilter(0.0, 0.5, 38.0, rate, "high_pass"),
    ]


class _Loudness:
    """BS.1770-4 integrated loudness from K-weighted energies per 100 ms hop, which can be
    rescaled (a gain) and partly recomputed (after limiting a few stretches) without
    filtering the whole track again. pyloudnorm's K-weighting filters and gating; pyloudnorm's
    own meter loops over the blocks in Python, slower than the rest of the stitch on an hour
    of audio. Tests check that both agree."""

    WARM_UP_S = 0.5  # filter history recomputed ahead of a stretch (K-weighting settles in ms)

    def __init__(self, audio: np.ndarray, rate: int):
        stages = k_weighting(rate)
        self._sos = np.array([np.concatenate([stage.b, stage.a]) for stage in stages])
        self._gain = float(np.prod([stage.passband_gain for stage in stages]))
        self.hop = round(LOUDNESS_HOP_S * rate)
        self.rate = rate
        self.hops = self._energies(audio, 0, audio.shape[1] // self.hop)

    def _energies(self, audio: np.ndarray, first: int, last: int) -> np.ndarray:
        """K-weighted energy of hops [first, last) per channel; filters start at rest
        ``WARM_UP_S`` earlier (or at the track start)."""
        from scipy.signal import sosfilt

        begin = max(first * self.hop - round(self.WARM_UP_S * self.rate), 0)
        stop = last * self.hop
        chunk = self.hop * 600

        def channel(samples: np.ndarray) -> np.ndarray:
            state = np.zeros((len(self._sos), 2))
            out = []
            for start in range(begin, stop, chunk):
                piece, state = sosfilt(
                    self._sos, samples[start : min(start + chunk, stop)], zi=state
                )
                out.append(np.square(self._gain * piece))
            weighted = np.concatenate(out)[first * self.hop - begin :]
            return weighted.reshape(-1, self.hop).sum(axis=1)

        if last <= first:
            return np.zeros((audio.shape[0], 0))
        with ThreadPoolExecutor(2) as pool:  # sosfilt releases the GIL
            return np.array(list(pool.map(channel, audio)))

    def update(self, audio: np.ndarray, first_sample: int, last_sample: int) -> None:
        """Recompute the hops touching samples [first_sample, last_sample)."""
        first = first_sample // self.hop
        last = min(-(-last_sample // self.hop), self.hops.shape[1])
        self.hops[:, first:last] = self._energies(audio, first, last)

    def lufs(self) -> float:
        """Integrated loudness: 400 ms blocks every 100 ms, gated at -70 LUFS and -10 LU."""
        per_block = round(LOUDNESS_BLOCK_S / LOUDNESS_HOP_S)
        if self.hops.shape[1] < per_block:
            return float("-inf")
        window = np.lib.stride_tricks.sliding_window_view(self.hops, per_block, axis=1)
        z = window.sum(axis=2) / (per_block * self.hop)  # mean square per channel and block
        with np.errstate(divide="ignore"):
            block_loudness = -0.691 + 10 * np.log10(z.sum(axis=0))
            gated = block_loudness >= -70.0
            if not gated.any():
                return float("-inf")
            relative = -0.691 + 10 * np.log10(z[:, gated].mean(axis=1).sum()) - 10.0
            gated &= block_loudness > relative
            return float(-0.691 + 10 * np.log10(z[:, gated].mean(axis=1).sum()))


def integrated_loudness(audio: np.ndarray, rate: int) -> float:
    """BS.1770-4 integrated loudness (LUFS) of (channels, n) audio."""
    return _Loudness(audio, rate).lufs()


def limit(track: np.ndarray, ceiling: float, rate: int) -> list[tuple[int, int]]:
    """Look-ahead peak limiter, in place: no sample ends above ``ceiling`` (linear).
    Returns the stretches (first, last sample) it changed.

    The gain each sample needs is held over +-``LIMITER_WINDOW_S`` (a running minimum) and
    then smoothed with a moving average of the same width: the average of values that are
    all at most a sample's own need stays at most that need, so peaks are caught exactly,
    while the gain glides down ahead of them and back up after. Only blocks holding an over,
    and their neighbours, are filtered.
    """
    from scipy.ndimage import minimum_filter1d, uniform_filter1d

    width = 2 * round(LIMITER_WINDOW_S * rate) + 1
    block = 4 * width
    over = _block_peaks(track, block) > ceiling
    flags = np.concatenate([[False], over, [False]])
    flags = (flags | np.roll(flags, 1) | np.roll(flags, -1))[1:-1]
    edges = np.flatnonzero(np.diff(np.concatenate([[0], flags.astype(np.int8), [0]])))
    n = track.shape[1]
    stretches = []
    for first, last in zip(edges[::2] * block, edges[1::2] * block, strict=True):
        last = min(last, n)
        lo, hi = max(first - 2 * width, 0), min(last + 2 * width, n)
        level = np.abs(track[:, lo:hi]).max(axis=0)
        need = np.minimum(1.0, ceiling / np.maximum(level, 1e-12)).astype(np.float32)
        gain = uniform_filter1d(minimum_filter1d(need, width), width)
        inner = slice(first - lo, last - lo)
        # min(): float rounding in the moving average must not overshoot a sample's need
        track[:, first:last] *= np.minimum(gain[inner], need[inner])
        stretches.append((first, last))
    return stretches


def _normalise(track: np.ndarray, rate: int, settings: AudioSettings) -> tuple[float, float, float]:
    """Scale and limit ``track`` in place; returns (gain dB, loudness LUFS, true peak dBTP)."""
    meter = _Loudness(track, rate)
    loudness = meter.lufs()
    if not np.isfinite(loudness):  # silence: nothing to normalise
        return 0.0, float(loudness), float("-inf")
    gain_db = settings.target_lufs - loudness
    track *= np.float32(10 ** (gain_db / 20))
    meter.hops *= 10 ** (gain_db / 10)
    ceiling = 10 ** ((settings.true_peak_dbtp - LIMITER_MARGIN_DB) / 20)
    for first, last in limit(track, ceiling, rate):
        meter.update(track, first, last)
    peak_db = 20 * np.log10(max(true_peak(track), 1e-12))
    if peak_db > settings.true_peak_dbtp:  # an inter-sample peak the limiter could not see
        trim = settings.true_peak_dbtp - peak_db
        track *= np.float32(10 ** (trim / 20))
        meter.hops *= 10 ** (trim / 10)
        gain_db += trim
        peak_db += trim
    return float(gain_db), meter.lufs(), float(peak_db)


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


def _seam_metrics(
    track: np.ndarray, rate: int, starts: list[int], fades: list[int], nominal: int
) -> pl.DataFrame:
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
    ref_rms, ref_flux = np.median(np.array(inside), axis=0) if inside else (1.0, 1.0)
    return pl.DataFrame(
        [
            {
                "time_s": t,
                "crossfade_s": f,
                "rms_jump_db": r,
                "flux": x,
                "rms_ratio": r / max(ref_rms, 1e-9),
                "flux_ratio": x / max(ref_flux, 1e-9),
            }
            for t, f, r, x in seams
        ],
        schema={
            "time_s": pl.Float64,
            "crossfade_s": pl.Float64,
            "rms_jump_db": pl.Float64,
            "flux": pl.Float64,
            "rms_ratio": pl.Float64,
            "flux_ratio": pl.Float64,
        },
    )


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
    return StitchResult(
        audio=track,
        sample_rate=rate,
        offsets_s=offsets,
        seams=seams,
        loudness_lufs=loudness,
        true_peak_dbtp=peak,
        gain_db=gain_db,
    )


def write_track(path: Path, audio: np.ndarray, sample_rate: int) -> None:
    """Write the track as 24-bit FLAC, atomically."""
    with atomic_path(Path(path)) as tmp:
        sf.write(tmp, np.asarray(audio).T, sample_rate, format="FLAC", subtype="PCM_24")
