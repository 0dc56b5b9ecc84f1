"""Join the rendered segments into one track that lines up with the video, streaming.

Segment k starts at its window's start (``start_s``) and is rendered a little longer than
its window; the extra tail overlaps the next segment. At each seam the outgoing segment
fades out and the incoming one fades in over ``crossfade_s`` (capped by the overlap there),
starting at the window boundary, with equal-power gains (cos / sin), so the summed power
stays constant through the seam of two unrelated signals. The outgoing segment is cut where
its gain reaches zero, moved to its nearest zero crossing within a few milliseconds, and no
fade is shorter than ``MIN_FADE_S``: even a hard cut does not click. A segment with no
neighbour overlapping it fades in and out over its own tail.

Memory does not depend on the recording's length: the track is never held whole. Samples
before the next segment's start are final once a segment is placed, so the assembler hands
them on block by block and holds at most two segments. One streaming pass, or two:

1. the loudness: BS.1770-4 integrated loudness from K-weighted energies per 100 ms hop.
   The render stage measures each segment's own stretch as it writes it (``hop_energies``,
   on the render threads) and hands them on as ``StitchInput.loudness_hops``; a crossfade
   then counts as its incoming segment (the equal-power fade keeps the level): 0.06 LU from
   measuring the assembled track, on an hour of the synth's music. Without them for every segment, a
   first pass assembles the track and measures it (the filters carry their state from block
   to block, so the result equals a whole-track measurement);
2. assemble, measure the seams (below), apply the gain to ``target_lufs``, a look-ahead
   limiter that holds the peaks just under ``true_peak_dbtp``, meter the loudness the
   written track really has (what ``StitchResult`` reports) and encode 24-bit FLAC on a
   second thread (metering there too left that thread the busier: an hour stitched in
   19.2 s instead of 17.3). The limiter sees ``LIMITER_CONTEXT`` blocks of the stream on
   either side of each chunk it commits (its look-ahead, about 0.5 s at 48 kHz); each
   chunk's true peak (4x oversampled, BS.1770 annex 2) is checked and a chunk still above
   the ceiling is limited again under a lower one.

The track is never spilled to disk unnormalised: an hour of float audio is 1.4 GB, its
segments' 24-bit work files three quarters of it.

Seam metric: around each seam, the largest frame-to-frame jump of short-term RMS (dB) and
of spectral flux, each divided by the median of the same statistic over windows of equal
length inside the segments, measured on the track before its gain and limiter. A ratio
near 1 means a seam moves the sound no more than the music moves itself.
"""

from __future__ import annotations

import contextlib
import functools
import os
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from math import gcd
from pathlib import Path

import numpy as np
import polars as pl
import soundfile as sf

from bgm_batch.atomic import atomic_path
from bgm_batch.audio.pcm24 import to_pcm24
from bgm_batch.audio.protocol import STEM_ROLES
from bgm_batch.memory import trim
from bgm_batch.progress import Progress
from bgm_batch.settings import AudioSettings

MIN_FADE_S = 0.01
ZERO_CROSSING_SEARCH_S = 0.003
METRIC_FRAME = 1024  # samples per analysis frame (hop = half a frame)
METRIC_MARGIN_S = 0.25  # analysed on each side of a crossfade
TRUE_PEAK_OVERSAMPLING = 4
TRUE_PEAK_BLOCK = 64  # interpolator outputs whose bound is checked together
LOUDNESS_BLOCK_S = 0.4
LOUDNESS_HOP_S = 0.1
LIMITER_WINDOW_S = 0.02  # look-ahead and release of the peak limiter
LIMITER_MARGIN_DB = 0.3  # the limiter aims this far below the true-peak ceiling
LIMITER_CONTEXT = 3  # limiter blocks seen on either side of a committed chunk
LIMITER_CHUNK = 64  # limiter blocks committed at a time (about 10 s at 48 kHz)
SILENCE_BLOCK_S = 10.0  # a gap without segments is handed on in blocks of this length
FLAC_QUEUE = 4  # blocks waiting for the encoder thread
TRIM_BLOCKS = 32  # blocks (about a segment each) between hand-backs of freed memory


@dataclass(frozen=True)
class StitchInput:
    """One segment: its audio (array (channels, n) or a file), where it starts in the track,
    and how long its crossfade with the previous segment should be."""

    audio: np.ndarray | Path | str
    start_s: float
    crossfade_s: float = 0.0
    sample_rate: int | None = None  # required with an array; read from the file otherwise
    # the same audio split by instrument role (arrays or files like ``audio``; they sum to
    # it); a role missing here is silent in this segment
    stems: Mapping[str, np.ndarray | Path | str] = field(default_factory=dict)
    # ``hop_energies`` of the segment's own stretch (to where the next one starts), measured
    # when it was rendered: with them for every segment the loudness needs no decoding pass
    loudness_hops: np.ndarray | None = None


@dataclass
class StitchResult:
    """What ``stitch_track`` wrote: the 24-bit FLAC at ``path`` (``frames`` long at
    ``sample_rate``); each input's offset in seconds (input order); one row of seam metrics
    per seam; the loudness and true peak the written track has; the gain applied."""

    path: Path
    frames: int
    sample_rate: int
    offsets_s: list[float]
    seams: pl.DataFrame
    loudness_lufs: float
    true_peak_dbtp: float
    gain_db: float
    stems: dict[str, Path] = field(default_factory=dict)  # role -> 24-bit WAV


def stitch_inputs(frame: pl.DataFrame, stems: bool = False) -> list[StitchInput]:
    """Inputs from a frame with ``audio_path``, ``start_s`` and ``crossfade_s`` (the planned
    frame joined with ``RenderResult.segments``), with each segment's ``stems`` if asked."""
    columns = ["audio_path", "start_s", "crossfade_s", *(["stems"] if stems else [])]
    if "loudness_hops" in frame.columns:
        columns.append("loudness_hops")
    return [
        StitchInput(
            Path(r["audio_path"]),
            float(r["start_s"]),
            float(r["crossfade_s"]),
            stems={role: Path(p) for role, p in (r.get("stems") or {}).items() if p is not None},
            loudness_hops=None if r.get("loudness_hops") is None else np.array(r["loudness_hops"]),
        )
        for r in frame.select(columns).iter_rows(named=True)
    ]


def _load(segment: StitchInput, sample_rate: int, roles: Sequence[str] = ()) -> np.ndarray:
    """The segment as float32 stereo at ``sample_rate``, then two rows per stem of ``roles``
    (silence for a role the segment does not play)."""
    audio = _load_one(segment.audio, segment.sample_rate, sample_rate)
    if not roles:
        return audio
    layers = [audio]
    for role in roles:
        stem = segment.stems.get(role)
        layers.append(
            np.zeros_like(audio)
            if stem is None
            else _load_one(stem, segment.sample_rate, sample_rate)[:, : audio.shape[1]]
        )
    return np.concatenate(layers, axis=0)


def _load_one(source: np.ndarray | Path | str, rate: int | None, sample_rate: int) -> np.ndarray:
    """One audio array or file as float32 stereo at ``sample_rate``."""
    if isinstance(source, np.ndarray):
        if rate is None:
            raise ValueError("a StitchInput with an array needs its sample_rate")
        audio = np.atleast_2d(source).astype(np.float32)
    else:
        data, rate = sf.read(source, dtype="float32", always_2d=True)
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


def _prefetched(
    segments: list[StitchInput], rate: int, roles: Sequence[str]
) -> Iterator[np.ndarray]:
    """The segments loaded in order, decoding two ahead on threads (libsndfile and the
    resampler release the GIL), without holding every segment in memory at once."""
    with ThreadPoolExecutor(2) as pool:
        queue = deque(pool.submit(_load, s, rate, roles) for s in segments[:3])
        for following in segments[3:]:
            yield queue.popleft().result()
            queue.append(pool.submit(_load, following, rate, roles))
        while queue:
            yield queue.popleft().result()


class _Pending:
    """The samples of the track that are not final yet; ``audio[:, 0]`` is sample ``origin``."""

    def __init__(self, rate: int, channels: int = 2):
        self.origin = 0
        self.audio = np.zeros((channels, 0), dtype=np.float32)
        self.silence = round(SILENCE_BLOCK_S * rate)

    def view(self, first: int, last: int) -> np.ndarray:
        """Track samples [first, last) (first >= origin), growing the buffer with silence."""
        need = last - self.origin
        if need > self.audio.shape[1]:
            grown = np.zeros((len(self.audio), need), dtype=np.float32)
            grown[:, : self.audio.shape[1]] = self.audio
            self.audio = grown
        return self.audio[:, first - self.origin : last - self.origin]

    def flush(self, to: int) -> Iterator[np.ndarray]:
        """Hand on the samples before ``to``, silence where nothing was placed."""
        while self.origin < to:
            held = self.audio.shape[1]
            size = min(to - self.origin, held or self.silence)
            block = (
                self.audio[:, :size]
                if held
                else np.zeros((len(self.audio), size), dtype=np.float32)
            )
            self.audio = self.audio[:, size:]
            self.origin += size
            yield block


Watch = Callable[[int, int, int], None]  # (first sample, last sample, seam fade or -1)


def _assembled(
    segments: list[StitchInput],
    starts: list[int],
    rate: int,
    nominal: int,
    watch: Watch,
    roles: Sequence[str] = (),
    done: Callable[[int], object] = lambda _: None,
) -> Iterator[np.ndarray]:
    """The track, crossfaded from the segments (sorted by start), as consecutive blocks of
    final samples: a block ends where the next segment starts. ``watch`` learns each seam's
    stretch and crossfade length, and each window's middle, before their samples are handed
    on (for the seam metric). With ``roles`` each block also carries the stems (two rows per
    role after the mix's two), cut and faded exactly as the mix: every decision (where to
    cut, how the crossfade bends) is taken on the mix's rows. ``done(1)`` is called as each
    segment is placed."""
    lengths = [_frames(s, rate) for s in segments]
    total = max(s + n for s, n in zip(starts, lengths, strict=True))
    min_fade = round(MIN_FADE_S * rate)
    search = round(ZERO_CROSSING_SEARCH_S * rate)
    margin = round(METRIC_MARGIN_S * rate)
    inside = max(min_fade, *(round(s.crossfade_s * rate) for s in segments)) + 2 * margin
    fades = [0] * len(segments)  # fade-in of each segment, set by the segment before it
    pending = _Pending(rate, 2 + 2 * len(roles))
    loaded = _prefetched(segments, rate, roles)
    for i, (start, audio) in enumerate(zip(starts, loaded, strict=True)):
        yield from pending.flush(start)
        end = start + audio.shape[1]
        nxt = starts[i + 1] if i + 1 < len(starts) else end
        if nxt < end:  # a seam: cut where the crossfade ends, at a zero crossing
            want = max(round(segments[i + 1].crossfade_s * rate), min_fade)
            cut = min(nxt + want, end, nxt + lengths[i + 1])
            cut = start + _zero_crossing(
                audio[:2],
                cut - start,
                max(cut - start - search, nxt - start + 1),
                min(cut - start + search, audio.shape[1]),
            )
            fades[i + 1] = cut - nxt
            watch(max(nxt - margin, 0), cut + margin, fades[i + 1])
        else:
            cut = end
        middle = start + nominal // 2
        watch(middle - inside // 2, middle + inside // 2, -1)
        fade = fades[i] or min(min_fade, cut - start)
        placed = pending.view(start, cut)
        head = placed[:, :fade]
        if fades[i]:  # the previous segment lies here at full gain: crossfade the two
            falling, rising = _fades(fade, _correlation(head[:2], audio[:2, :fade]))
            head *= falling
        else:
            rising = _fades(fade)[1]
        head += audio[:, :fade] * rising
        placed[:, fade:] = audio[:, fade : cut - start]  # nothing else is here
        if i + 1 == len(segments) or not fades[i + 1]:  # nothing follows: fade the tail out
            fade_out = min(max(end - (start + nominal), min_fade), cut - start)
            placed[:, cut - start - fade_out :] *= _fades(fade_out)[0]
        done(1)
    yield from pending.flush(total)


def _frames(segment: StitchInput, rate: int) -> int:
    """A segment's length in samples at ``rate``, without decoding it."""
    if isinstance(segment.audio, np.ndarray):
        return round(np.atleast_2d(segment.audio).shape[1] * rate / segment.sample_rate)
    info = sf.info(segment.audio)
    return round(info.frames * rate / info.samplerate)


@functools.cache
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
        whole = part.size - part.size % block
        peaks.append(part[:whole].reshape(-1, block).max(axis=1))
        if whole < part.size:  # only the last chunk ends in a partial block
            peaks.append(part[whole:].max(keepdims=True))
    return np.concatenate(peaks) if peaks else np.zeros(0, dtype=np.float32)


def true_peak(audio: np.ndarray, floor: float = 0.0) -> float:
    """The larger of ``floor`` and the largest absolute value of the 4x oversampled signal
    (or its sample peak, if higher), for (channels, n) audio, linear.

    Output ``4n + p`` of the interpolator is phase ``p`` of the filter (12 taps) over the
    samples ``n-11 .. n``, so it can exceed that stretch's sample peak by at most the phase's
    L1 norm. Only the blocks of ``TRUE_PEAK_BLOCK`` outputs whose bound beats the best value
    known (``floor``, the sample peak) are interpolated, gathered and computed at once. A
    stream measured chunk by chunk passes its running maximum as ``floor``: once that sits
    near the ceiling, under 1 % of a mastered hour is interpolated. Exact all the same.
    """
    weights, bound = _polyphase()
    taps = len(weights)
    audio = np.atleast_2d(audio)
    best = max(float(floor), float(np.abs(audio).max(initial=0.0)))
    # with taps-1 zeros on either side, output n (n = 0 .. n+10) reads padded n .. n+11,
    # which lie in its own block of outputs or the next one
    padded = np.pad(audio, ((0, 0), (taps - 1, taps - 1)))
    blocks = _block_peaks(padded, TRUE_PEAK_BLOCK)
    reach = np.maximum(blocks, np.concatenate([blocks[1:], [0.0]]))
    loud = np.flatnonzero(reach * bound > best)
    outputs = (loud[:, None] * TRUE_PEAK_BLOCK + np.arange(TRUE_PEAK_BLOCK)).ravel()
    outputs = outputs[outputs < padded.shape[1] - (taps - 1)]
    for part in np.array_split(outputs, max(1, outputs.size // 2**15)):
        windows = padded[:, part[:, None] + np.arange(taps)].reshape(-1, taps)
        best = max(best, float(np.abs(windows @ weights).max(initial=0.0)))
    return best


@functools.cache
def _polyphase() -> tuple[np.ndarray, float]:
    """The interpolator as (taps, phases) float32 weights, oldest sample first, and the
    largest L1 norm of a phase: how far an output can exceed its samples' peak."""
    h = _oversampling_filter()
    phases = np.stack([h[p::TRUE_PEAK_OVERSAMPLING] for p in range(TRUE_PEAK_OVERSAMPLING)])
    weights = phases[:, ::-1].T.astype(np.float32)
    weights.flags.writeable = False
    return weights, float(np.abs(phases).sum(axis=1).max())


def k_weighting(rate: int) -> list:
    """BS.1770's K-weighting at ``rate``: the +4 dB high shelf at 1500 Hz (Q 1/sqrt 2), then the
    38 Hz high-pass (Q 0.5), built with pyloudnorm's public ``IIRfilter`` from the published
    parameters (the same as pyloudnorm's own ``Meter``, which a test checks)."""
    import pyloudnorm

    return [
        pyloudnorm.IIRfilter(4.0, 1 / np.sqrt(2), 1500.0, rate, "high_shelf"),
        pyloudnorm.IIRfilter(0.0, 0.5, 38.0, rate, "high_pass"),
    ]


class LoudnessMeter:
    """BS.1770-4 integrated loudness of a stream: K-weighted energy per 100 ms hop, summed
    over the channels (all BS.1770's gating needs for stereo), the filters' state carried
    from block to block. Filtering runs in float32 (a third of the cost of float64; a test
    checks agreement with pyloudnorm's meter)."""

    def __init__(self, rate: int, channels: int = 2):
        stages = k_weighting(rate)
        self._sos = np.array([np.concatenate([s.b, s.a]) for s in stages], dtype=np.float32)
        self._gain = float(np.prod([s.passband_gain for s in stages])) ** 2
        self._state = np.zeros((len(stages), channels, 2), dtype=np.float32)
        self._carry = np.zeros(0, dtype=np.float32)  # energies of an unfinished hop
        self._hops: list[np.ndarray] = []
        self.hop = round(LOUDNESS_HOP_S * rate)

    def add(self, block: np.ndarray) -> None:
        """Measure the next samples of the stream, (channels, n)."""
        from scipy.signal import sosfilt

        weighted, self._state = sosfilt(
            self._sos, np.asarray(block, dtype=np.float32), axis=1, zi=self._state
        )
        energy = np.einsum("cn,cn->n", weighted, weighted)
        if self._carry.size:
            energy = np.concatenate([self._carry, energy])
        whole = energy.shape[0] // self.hop * self.hop
        self._hops.append(energy[:whole].reshape(-1, self.hop).sum(axis=1, dtype=np.float64))
        self._carry = energy[whole:]

    def hops(self) -> np.ndarray:
        """K-weighted energy per complete hop so far (float64)."""
        return self._gain * np.concatenate([np.zeros(0), *self._hops])

    def lufs(self) -> float:
        """Integrated loudness of what was added."""
        return gated_loudness(self.hops(), self.hop)


BLOCK_HOPS = round(LOUDNESS_BLOCK_S / LOUDNESS_HOP_S)  # hops in a 400 ms loudness block


def block_energies(hops: np.ndarray, hop: int) -> np.ndarray:
    """BS.1770's mean square of each 400 ms block (every 100 ms), from K-weighted energies per
    ``hop`` samples: element k is the block that ends where hop ``k + BLOCK_HOPS`` begins."""
    if hops.shape[0] < BLOCK_HOPS:
        return np.zeros(0)
    return np.lib.stride_tricks.sliding_window_view(hops, BLOCK_HOPS).sum(axis=1) / (
        BLOCK_HOPS * hop
    )


def gated_loudness(hops: np.ndarray, hop: int) -> float:
    """BS.1770-4 integrated loudness from K-weighted energies per ``hop`` samples, summed
    over the channels: 400 ms blocks every 100 ms, gated at -70 LUFS and -10 LU."""
    return gated_blocks(block_energies(hops, hop))


def block_loudness(z: np.ndarray) -> np.ndarray:
    """The loudness (LUFS) of blocks with mean squares ``z`` (-inf for silence)."""
    with np.errstate(divide="ignore"):
        return -0.691 + 10 * np.log10(z)


def gated_blocks(z: np.ndarray) -> float:
    """BS.1770-4 integrated loudness of blocks with mean squares ``z``: absolute gate at
    -70 LUFS, relative gate 10 LU under the loudness of the blocks above it."""
    loudness = block_loudness(z)
    gated = loudness >= -70.0
    if not gated.any():
        return float("-inf")
    gated &= loudness > float(block_loudness(z[gated].mean())) - 10.0
    return float(block_loudness(z[gated].mean()))


def hop_energies(audio: np.ndarray, rate: int) -> np.ndarray:
    """K-weighted energy per 100 ms hop of (channels, n) audio, summed over the channels,
    filters starting from rest; a partial last hop is dropped. What the render stage keeps
    for each segment's own window, so that ``stitch_track`` need not decode every segment
    once more only to measure the track's loudness."""
    meter = LoudnessMeter(rate, np.atleast_2d(audio).shape[0])
    meter.add(np.atleast_2d(audio))
    return meter.hops()


def integrated_loudness(audio: np.ndarray, rate: int) -> float:
    """BS.1770-4 integrated loudness (LUFS) of (channels, n) audio."""
    return gated_loudness(hop_energies(audio, rate), round(LOUDNESS_HOP_S * rate))


def limit(track: np.ndarray, ceiling: float, rate: int) -> list[tuple[int, int]]:
    """Look-ahead peak limiter, in place: no sample of the first two rows (the mix) ends
    above ``ceiling`` (linear); further rows (its stems) get the same gain, so they still sum
    to it. Returns the stretches (first, last sample) it changed.

    The gain each sample needs is held over +-``LIMITER_WINDOW_S`` (a running minimum) and
    then smoothed with a moving average of the same width: the average of values that are
    all at most a sample's own need stays at most that need, so peaks are caught exactly,
    while the gain glides down ahead of them and back up after. Only blocks holding an over,
    and their neighbours, are filtered.
    """
    from scipy.ndimage import minimum_filter1d, uniform_filter1d

    width = 2 * round(LIMITER_WINDOW_S * rate) + 1
    block = 4 * width
    over = _block_peaks(track[:2], block) > ceiling
    flags = np.concatenate([[False], over, [False]])
    flags = (flags | np.roll(flags, 1) | np.roll(flags, -1))[1:-1]
    edges = np.flatnonzero(np.diff(np.concatenate([[0], flags.astype(np.int8), [0]])))
    n = track.shape[1]
    stretches = []
    for first, last in zip(edges[::2] * block, edges[1::2] * block, strict=True):
        last = min(last, n)
        lo, hi = max(first - 2 * width, 0), min(last + 2 * width, n)
        level = np.abs(track[:2, lo:hi]).max(axis=0)
        need = np.minimum(1.0, ceiling / np.maximum(level, 1e-12)).astype(np.float32)
        gain = uniform_filter1d(minimum_filter1d(need, width), width)
        inner = slice(first - lo, last - lo)
        # min(): float rounding in the moving average must not overshoot a sample's need
        track[:, first:last] *= np.minimum(gain[inner], need[inner])
        stretches.append((first, last))
    return stretches


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


class _SeamMeter:
    """The seam metric over a stream: each stretch watched keeps the mid signal of its own
    samples only (about a fifth of the track), measured once it has streamed past."""

    def __init__(self, rate: int):
        self.rate = rate
        self._end = 0  # track samples streamed so far
        self._waiting: list[tuple[int, int, int, list[np.ndarray]]] = []
        self._seams: list[tuple[float, float, float, float]] = []
        self._inside: list[tuple[float, float]] = []

    def watch(self, first: int, last: int, fade: int) -> None:
        """Measure [first, last) once it has streamed past: a seam of ``fade`` samples, or
        a stretch inside a segment (``fade`` -1). Called before its samples arrive."""
        self._waiting.append((first, last, fade, []))

    def add(self, block: np.ndarray) -> None:
        """The next samples of the track."""
        start, self._end = self._end, self._end + block.shape[1]
        waiting = []
        for first, last, fade, parts in self._waiting:
            lo, hi = max(first, start), min(last, self._end)
            if lo < hi:
                parts.append(block[:, lo - start : hi - start].mean(axis=0))
            if last > self._end:
                waiting.append((first, last, fade, parts))
                continue
            stats = _frame_stats(np.concatenate(parts) if parts else np.zeros(0, np.float32))
            if fade < 0:
                self._inside.append(stats)
            else:
                margin = round(METRIC_MARGIN_S * self.rate)
                self._seams.append(((first + margin) / self.rate, fade / self.rate, *stats))
        self._waiting = waiting

    def table(self) -> pl.DataFrame:
        """Seam statistics and their ratio to the same statistics inside the segments."""
        ref_rms, ref_flux = np.median(np.array(self._inside), axis=0) if self._inside else (1, 1)
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
                for t, f, r, x in sorted(self._seams)
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


class _StreamLimiter:
    """``limit`` over a stream, with a look-ahead of ``LIMITER_CONTEXT`` limiter blocks.

    Each chunk of ``LIMITER_CHUNK`` blocks is limited on a copy together with its context on
    either side (the limiter's reach is one block plus two smoothing windows, less than the
    context), and only the chunk is committed. The chunk's true peak, measured with its
    neighbours, must stay under ``true_peak`` (linear): otherwise the chunk is limited again
    under a ceiling lowered by the excess (an inter-sample peak the sample-peak limiter
    could not see)."""

    def __init__(self, ceiling: float, true_peak: float, rate: int, channels: int = 2):
        self.ceiling, self.true_peak_ceiling, self.rate = ceiling, true_peak, rate
        self.block = 4 * (2 * round(LIMITER_WINDOW_S * rate) + 1)
        self.context = LIMITER_CONTEXT * self.block
        self.chunk = LIMITER_CHUNK * self.block
        self.peak = 0.0
        self._buffer = np.zeros((channels, 0), dtype=np.float32)
        self._done = 0  # buffer samples already committed (kept as left context)

    def push(self, block: np.ndarray) -> Iterator[np.ndarray]:
        """Take the next samples; hand on every chunk whose right context has arrived."""
        self._buffer = np.concatenate([self._buffer, block], axis=1)
        while self._buffer.shape[1] - self._done >= self.chunk + self.context:
            yield self._commit(self.chunk)

    def finish(self) -> Iterator[np.ndarray]:
        """Hand on what is left at the end of the stream."""
        while self._buffer.shape[1] > self._done:
            yield self._commit(min(self.chunk, self._buffer.shape[1] - self._done))

    def _commit(self, size: int) -> np.ndarray:
        lo = max(self._done - self.context, 0)
        hi = min(self._done + size + self.context, self._buffer.shape[1])
        first, last = self._done - lo, self._done + size - lo
        pad = 2 * len(_oversampling_filter()) // TRUE_PEAK_OVERSAMPLING
        ceiling = self.ceiling
        while True:
            window = self._buffer[:, lo:hi].copy()
            limit(window, ceiling, self.rate)
            peak = true_peak(window[:2, max(first - pad, 0) : last + pad], floor=self.peak)
            if peak <= self.true_peak_ceiling:
                break
            ceiling *= 0.999 * self.true_peak_ceiling / peak
        self.peak = max(self.peak, peak)
        self._done += size
        drop = max(self._done - self.context, 0)
        self._buffer, self._done = self._buffer[:, drop:], self._done - drop
        return window[:, first:last]


class _Writer:
    """Encodes 24-bit audio (FLAC, or WAV for stems) on its own thread (libsndfile and the
    filters release the GIL) while the next blocks are computed."""

    def __init__(self, path: Path, rate: int, format: str = "FLAC"):
        self._queue: queue.Queue[np.ndarray | None] = queue.Queue(FLAC_QUEUE)
        self._path, self._rate, self._format = Path(path), rate, format
        self.frames = 0
        self._error: BaseException | None = None
        self._aborted = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def write(self, block: np.ndarray) -> None:
        """Queue the next samples, (2, n) float32 in [-1, 1]."""
        if self._error is not None:
            raise self._error
        self._queue.put(block)

    def close(self) -> None:
        """Finish the file (atomically in place) or re-raise the encoder's error."""
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error

    def abort(self) -> None:
        """Stop without leaving a file (the producer failed)."""
        self._aborted.set()
        self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        block: np.ndarray | None = None
        try:
            with (
                atomic_path(self._path) as tmp,
                _written_back(tmp) as fd,
                sf.SoundFile(
                    fd,
                    "w",
                    self._rate,
                    2,
                    "PCM_24",
                    format=self._format,
                    closefd=False,
                    **({"compression_level": 0.0} if self._format == "FLAC" else {}),
                ) as out,
            ):
                written = 0  # bytes of the file handed to the kernel's writing-back
                while (block := self._queue.get()) is not None:
                    out.write(to_pcm24(block).T)
                    self.frames += block.shape[1]
                    written = _start_writeback(fd, written)
                if self._aborted.is_set():
                    raise RuntimeError("stitching failed: no track written")
        except BaseException as error:  # handed to the producer by write() / close()
            self._error = error
            while block is not None:  # the producer is still writing: let it finish
                block = self._queue.get()


@contextlib.contextmanager
def _written_back(path: Path) -> Iterator[int]:
    """A new file at ``path``, open for writing, as a descriptor of ours (closed after).

    libsndfile syncs a file to disk as it closes it (``fsync``); at the end of an hour's
    track that waited 1.5 s for the disk. Started as the file grows (``_start_writeback``),
    the writing-back overlaps the encoding and the final sync finds little left to do."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
    try:
        yield fd
    finally:
        os.close(fd)


_FADVISE = getattr(os, "posix_fadvise", None)  # not on every platform (Windows, macOS)


def _start_writeback(fd: int, since: int) -> int:
    """Ask the kernel to write back what the file gained after byte ``since`` now, without
    waiting (and to drop the pages already written: the track need not stay in the page
    cache); where the file ends, the next call's ``since``."""
    if _FADVISE is None:
        return since
    end = os.lseek(fd, 0, os.SEEK_CUR)
    if end > since:
        _FADVISE(fd, since, end - since, os.POSIX_FADV_DONTNEED)
    return end


def stitch_track(
    segments: Sequence[StitchInput],
    settings: AudioSettings,
    path: Path,
    stems_dir: Path | None = None,
    *,
    progress: bool = False,
) -> StitchResult:
    """Crossfade, place, normalise, measure and write ``path`` (24-bit FLAC, atomically);
    see the module docstring. With ``stems_dir``, every role that plays in some segment's
    ``stems`` is written there as ``<role>.wav`` (24-bit), assembled, gained and limited
    sample for sample as the track, so the stems sum to it. ``progress`` shows the segments
    placed (``bgm_batch.progress``: a 10-hour track takes minutes)."""
    if not segments:
        raise ValueError("nothing to stitch")
    rate = settings.sample_rate
    order = sorted(range(len(segments)), key=lambda i: segments[i].start_s)
    ordered = [segments[i] for i in order]
    starts = [round(s.start_s * rate) for s in ordered]
    if starts[0] < 0:
        raise ValueError("a segment starts before the track")
    nominal = round(settings.segment_seconds * rate)
    loudness = _loudness(ordered, starts, rate, nominal)
    seams = _SeamMeter(rate)
    gain_db = settings.target_lufs - loudness if np.isfinite(loudness) else 0.0
    roles = [r for r in STEM_ROLES if any(r in s.stems for s in ordered)] if stems_dir else []
    limiter = _StreamLimiter(
        10 ** ((settings.true_peak_dbtp - LIMITER_MARGIN_DB) / 20),
        10 ** (settings.true_peak_dbtp / 20),
        rate,
        2 + 2 * len(roles),
    )
    stem_paths = {role: Path(stems_dir, f"{role}.wav") for role in roles} if stems_dir else {}
    writers = [_Writer(path, rate)] + [
        _Writer(p, rate, _wav_format(ordered, starts, rate)) for p in stem_paths.values()
    ]
    gain, meter = 10 ** (gain_db / 20), LoudnessMeter(rate)
    with Progress("stitch", len(ordered), unit="seg", enabled=progress) as bar:
        blocks = _assembled(ordered, starts, rate, nominal, seams.watch, roles, bar.update)
        _write_pass(blocks, gain, limiter, meter, writers, seams)
    offsets = [0.0] * len(segments)
    for i, start in zip(order, starts, strict=True):
        offsets[i] = start / rate
    return StitchResult(
        path=Path(path),
        frames=writers[0].frames,
        sample_rate=rate,
        offsets_s=offsets,
        seams=seams.table(),
        loudness_lufs=meter.lufs(),
        true_peak_dbtp=float(20 * np.log10(limiter.peak)) if limiter.peak > 0 else float("-inf"),
        gain_db=float(gain_db),
        stems=stem_paths,
    )


def _write_pass(
    blocks: Iterator[np.ndarray],
    gain: float,
    limiter: _StreamLimiter,
    meter: LoudnessMeter,
    writers: list[_Writer],
    seams: _SeamMeter,
) -> None:
    """Pass 2 over the assembled ``blocks``: measure the seams, gain, limit, meter the track
    (rows 0-1), and hand rows 2k, 2k+1 to writer k."""
    try:
        for n, block in enumerate(blocks, 1):
            seams.add(block[:2])
            for out in limiter.push(block * np.float32(gain)):
                _hand_on(out, writers, meter)
            if n % TRIM_BLOCKS == 0:
                trim()  # the blocks vary in length: see bgm_batch.memory
        for out in limiter.finish():
            _hand_on(out, writers, meter)
    except BaseException:
        for writer in writers:
            writer.abort()
        raise
    for writer in writers:
        writer.close()


def _loudness(ordered: list[StitchInput], starts: list[int], rate: int, nominal: int) -> float:
    """The assembled track's integrated loudness, before any gain: from the segments'
    ``loudness_hops`` when every segment has them (each covers its own stretch; a crossfade
    counts as the incoming segment, whose equal-power fade keeps the level), else measured
    in a first pass over the assembled track."""
    hop = round(LOUDNESS_HOP_S * rate)
    if any(s.loudness_hops is None for s in ordered):
        meter = LoudnessMeter(rate)
        for block in _assembled(ordered, starts, rate, nominal, lambda *_: None):
            meter.add(block)
        return meter.lufs()
    first = [start // hop for start in starts]
    hops = np.zeros(max(f + len(s.loudness_hops) for f, s in zip(first, ordered, strict=True)))
    for f, segment in zip(first, ordered, strict=True):
        hops[f : f + len(segment.loudness_hops)] = segment.loudness_hops
    return gated_loudness(hops, hop)


def _hand_on(block: np.ndarray, writers: list[_Writer], meter: LoudnessMeter) -> None:
    """Queue the rows of each writer, then meter the track while they encode."""
    for k, writer in enumerate(writers):
        writer.write(block[2 * k : 2 * k + 2])
    meter.add(block[:2])


def _wav_format(segments: list[StitchInput], starts: list[int], rate: int) -> str:
    """WAV, or RF64 (the same with 64-bit sizes, read by editors) past WAV's 4 GB limit."""
    frames = max(s + _frames(seg, rate) for s, seg in zip(starts, segments, strict=True))
    return "RF64" if frames * 2 * 3 > 2**32 - 2**20 else "WAV"
