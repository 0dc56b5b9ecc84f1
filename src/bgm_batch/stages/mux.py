"""Mux stage: put the stitched track under the gameplay video and master the final mix.

The video stream is copied bit for bit (no re-encode: no quality loss, seconds instead of
minutes). The music is placed at ``video_offset_seconds`` (where capture time 0 falls in the
video) and fitted to the video's end with a fade instead of a cut. When the video has its own
audio, the music is ducked by ``duck_depth_db`` while the game audio is loud (a sidechain gate
keyed on the game audio, subtracted from the music: the depth is exact, never more) and mixed
with it. The mix is then mastered: resampled to ``sample_rate`` whatever the source's rate,
computed once into a raw scratch file while its loudness is measured (BS.1770), brought to
``target_lufs`` (the gain that gives back what the limiter takes is found on limiter-only
passes, over a systematic quarter of a long mix) and held under the true-peak ceiling by a
48 kHz limiter aiming lower by a measured margin, encoded as AAC in parallel parts (one per
core) joined frame-exactly, and measured again, whole, as decoded by ffmpeg's ebur128 before
it is muxed. The scratch, beside the video written, takes about 1.4 GB per hour of video.
``track.flac`` keeps its own loudness target for editors who mix themselves.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import suppress
from dataclasses import asdict, dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any, BinaryIO, Literal

import ffmpeg
import numpy as np
import soundfile as sf

from bgm_batch.atomic import atomic_path
from bgm_batch.errors import BgmError
from bgm_batch.progress import Progress
from bgm_batch.settings import MuxSettings
from bgm_batch.stages.stitch import (
    BLOCK_HOPS,
    LOUDNESS_BLOCK_S,
    LOUDNESS_HOP_S,
    LoudnessMeter,
    block_energies,
    block_loudness,
    gated_blocks,
)

try:  # Unix: ffmpeg's pipes are made larger where the system allows it (see _ffmpeg)
    import fcntl
except ImportError:  # Windows
    fcntl = None

LOOP_SECONDS = 10.0  # how much of the track's end is repeated when padding: a musical phrase
LOOP_CROSSFADE_SECONDS = 0.5
AAC_HEADROOM_DB = 1.5  # AAC overshoots peaks (~1 dB on game hits): the limiter aims lower
MASTER_ATTEMPTS = 3  # encodes at most: each overshoot measured is added to the headroom
METER_MARGIN_DB = 0.1  # ebur128 prints one decimal: -1.0 may be -0.95, so aim below that
LOUDNESS_TOLERANCE_LU = 0.75  # further from the target than this: the next encode corrects it
AAC_FRAME = 1024  # samples per AAC frame; ffmpeg's encoder primes each stream with one
AAC_BITRATE = "192k"
OVERLAP_FRAMES = 8  # a later part's encoder starts this many frames early (see _limit_part)
# fast coder: the default two-loop one took ~3x the time. Intensity stereo (a low-bitrate
# tool) off: with it AAC pushed a limited hit 4.2 dB over its input's peak, without it 0.8 dB,
# and the coding error was 6 dB lower (measured on bench/mux.py's track and game audio)
AAC_OPTIONS = ("-aac_coder", "fast", "-aac_is", "0")
MIN_PART_SECONDS = 300.0  # shorter stretches of the mix are not worth an encoder of their own
STREAM_BLOCK = 1 << 18  # frames per read of a raw audio stream (2 MiB)
PIPE_BYTES = 1 << 20  # Linux's largest pipe buffer for an unprivileged process by default
PART_LEAD_S = 2.0  # a part's limiter starts this early: its state settles (release 100 ms)
LIMITER_TRUE_PEAK_DB = 0.5  # the 48 kHz limiter aims this much lower: peaks between samples
GAIN_PASSES = 3  # limiter-only passes that give back the loudness it takes, before an encode
GAIN_TOLERANCE_LU = 0.3  # how close they bring the limited mix to the target
# A gain pass over a mix this long measures a systematic quarter of it, SAMPLE_STRETCH_S in
# every SAMPLE_EVERY_S (see _limited_loudness): on bench/mux.py's hour 2.7 s a pass, not 5-7 s
SAMPLE_MIN_S = 900.0
SAMPLE_STRETCH_S = 10.0
SAMPLE_EVERY_S = 40.0


class FfmpegMissingError(BgmError, RuntimeError):
    """ffmpeg or ffprobe is not installed."""


class UnreadableVideoError(BgmError, ValueError):
    """ffprobe cannot read the file, or it holds no video stream."""


class LengthMismatchError(BgmError, ValueError):
    """The video and the recording are too far apart in length to belong together."""


class MuxError(BgmError, RuntimeError):
    """ffmpeg failed while muxing; the message ends with the last line of its log."""


@dataclass(frozen=True)
class MediaInfo:
    """What the mux needs to know about a media file."""

    path: Path
    duration_s: float
    has_audio: bool
    video_codec: str | None
    audio_sample_rate: int | None
    frame_rate: float | None = None  # of the video stream: what editors cut on


@dataclass(frozen=True)
class Loudness:
    """EBU R128 integrated loudness and true peak of an audio stream (-inf for silence)."""

    integrated_lufs: float
    true_peak_dbtp: float


AudioPath = Literal["ducked", "mixed", "music-only"]
Fit = Literal["trimmed", "padded", "exact"]


@dataclass(frozen=True)
class MuxReport:
    """What the mux did: audio path, fit, placement, lengths, and the mastering it measured."""

    out: Path
    audio_path: AudioPath
    fit: Fit
    video_duration_s: float
    track_duration_s: float
    audio_duration_s: float
    video_offset_s: float = 0.0
    frame_rate: float | None = None  # the video's
    cut_s: float = 0.0  # recorded music that fell after the video's end
    sample_rate: int = 0
    mix_lufs: float = -math.inf  # the mix before mastering
    gain_db: float = 0.0  # applied to the mix before the limiter
    loudness_lufs: float = -math.inf  # scored.mp4 as written
    true_peak_dbtp: float = -math.inf

    def to_json(self) -> dict[str, Any]:
        """JSON-able form for the manifest (non-finite levels become null)."""
        data = {
            k: None if isinstance(v, float) and not math.isfinite(v) else v
            for k, v in asdict(self).items()
        }
        return {**data, "out": str(self.out)}


def _require(tool: str) -> None:
    if shutil.which(tool) is None:
        raise FfmpegMissingError(
            "ffmpeg/ffprobe not found on PATH; install it: apt-get install ffmpeg"
        )


def _stream_duration(stream: dict[str, Any], fmt: dict[str, Any]) -> float | None:
    for value in (stream.get("duration"), fmt.get("duration")):
        if value not in (None, "N/A"):
            return float(value)
    return None


def _frame_rate(stream: dict[str, Any]) -> float | None:
    """The stream's average frame rate ("30000/1001" -> 29.97), None when ffprobe has none."""
    num, _, den = str(stream.get("avg_frame_rate", "0/0")).partition("/")
    return float(num) / float(den) if den and float(den) and float(num) else None


def probe_media(path: Path) -> MediaInfo:
    """Probe ``path`` with ffprobe; the duration is the video stream's (what a copy keeps)."""
    _require("ffprobe")
    path = Path(path)
    try:
        probe = ffmpeg.probe(str(path))
    except ffmpeg.Error as exc:
        message = exc.stderr.decode(errors="replace").strip() if exc.stderr else str(exc)
        message = message.splitlines()[-1] if message else "unknown error"
        raise UnreadableVideoError(f"{path}: ffprobe cannot read it: {message}") from exc
    streams, fmt = probe.get("streams", []), probe.get("format", {})
    video = next((s for s in streams if s.get("codec_type") == "video"), None)
    audio = next((s for s in streams if s.get("codec_type") == "audio"), None)
    main = video or audio
    duration = _stream_duration(main, fmt) if main else None
    if duration is None:
        raise UnreadableVideoError(
            f"{path}: ffprobe found no audio or video stream with a duration"
        )
    return MediaInfo(
        path=path,
        duration_s=duration,
        has_audio=audio is not None,
        video_codec=video.get("codec_name") if video else None,
        audio_sample_rate=int(audio["sample_rate"]) if audio else None,
        frame_rate=_frame_rate(video) if video else None,
    )


def check_fit(video_s: float, recording_s: float, settings: MuxSettings) -> float:
    """Check that a video can carry the recording's music; return the seconds of music cut.

    The music spans ``video_offset_seconds`` to ``video_offset_seconds + recording_s`` in the
    video. A video that ends earlier than that (beyond ``short_video_tolerance_seconds``) is
    refused unless ``fit`` is "trim"; one that runs on for more than
    ``max_length_mismatch_seconds`` past the music is refused as the wrong video (no loop can
    fill that much).
    """
    music_end = settings.video_offset_seconds + recording_s
    if settings.video_offset_seconds >= video_s or music_end <= 0:
        raise LengthMismatchError(
            f"--video-offset {settings.video_offset_seconds:g} s places the recording "
            f"({recording_s:.1f} s) outside the video (0 to {video_s:.1f} s)"
        )
    short = music_end - video_s
    if short > settings.short_video_tolerance_seconds and settings.fit == "error":
        raise LengthMismatchError(
            f"the video lasts {video_s:.1f} s but the recording {recording_s:.1f} s "
            f"(placed at {settings.video_offset_seconds:g} s in the video): {short:.1f} s of "
            "music would be cut; pass --fit trim to cut it, or --video-offset to place it"
        )
    if -short > settings.max_length_mismatch_seconds:
        raise LengthMismatchError(
            f"the video lasts {video_s:.1f} s but the recording {recording_s:.1f} s: "
            f"{-short:.1f} s apart, more than mux.max_length_mismatch_seconds="
            f"{settings.max_length_mismatch_seconds:g}; is it the right video for this recording?"
        )
    return max(0.0, short)


def _fade_out(audio: np.ndarray, samples: int) -> np.ndarray:
    """Apply a raised-cosine fade over the last ``samples`` samples, reaching zero at the end."""
    samples = min(samples, audio.shape[-1])
    if samples <= 0:
        return audio
    out = audio.copy()
    out[..., -samples:] *= 0.5 * (1.0 + np.cos(np.linspace(0.0, np.pi, samples)))
    return out


def _loop_tail(audio: np.ndarray, sample_rate: int, target: int) -> np.ndarray:
    """Extend ``audio`` to at least ``target`` samples by looping its final window.

    Each loop seam crossfades (equal power) the window's end into its start, so the extension
    continues the last segment's key, tempo and instruments instead of going silent.
    """
    length = audio.shape[-1]
    loop = audio[..., max(0, length - int(LOOP_SECONDS * sample_rate)) :]
    overlap = min(int(LOOP_CROSSFADE_SECONDS * sample_rate), loop.shape[-1] // 2)
    end = loop.shape[-1] - overlap
    ramp = np.linspace(0.0, np.pi / 2, overlap)
    seam = loop[..., end:] * np.cos(ramp) + loop[..., :overlap] * np.sin(ramp)
    period = np.concatenate([seam, loop[..., overlap:end]], axis=-1)
    repeats = -(-(target - length) // period.shape[-1])
    pieces = [audio[..., : length - overlap], *[period] * repeats, loop[..., end:]]
    return np.concatenate(pieces, axis=-1)


def fit_track_to_length(
    audio: np.ndarray, sample_rate: int, duration_s: float, fade_out_s: float
) -> np.ndarray:
    """Fit a track, shaped (samples,) or (channels, samples), to exactly ``duration_s``.

    Too long: cut at the video's end with a ``fade_out_s`` fade ending exactly there. Too
    short: loop the final window (see ``_loop_tail``) and fade out over the whole last loop
    (at least ``fade_out_s``), so the added music recedes rather than stops.
    """
    if audio.shape[-1] == 0:
        raise ValueError("cannot fit an empty track")
    target = round(duration_s * sample_rate)
    fade = round(fade_out_s * sample_rate)
    length = audio.shape[-1]
    if length < target:
        loop_len = min(length, int(LOOP_SECONDS * sample_rate))
        fade = max(fade, min(target - length, loop_len))
        audio = _loop_tail(audio, sample_rate, target)
    elif length == target:
        return audio
    return _fade_out(audio[..., :target], fade).astype(audio.dtype, copy=False)


def _fit_kind(track_samples: int, target_samples: int) -> Fit:
    if track_samples > target_samples:
        return "trimmed"
    return "padded" if track_samples < target_samples else "exact"


@dataclass(frozen=True)
class _PlacedMusic:
    """The track as placed in the video: ``lead_s`` of silence, then track samples
    ``[start, head_end)`` streamed untouched, then the fitted ``tail`` file."""

    track: Path
    start: int
    head_end: int
    tail: Path
    lead_s: float
    fit: Fit

    def node(self) -> Any:
        """A fresh ffmpeg node of the placed music (one per ffmpeg run)."""
        music = ffmpeg.input(str(self.tail)).audio.filter("aformat", sample_fmts="fltp")
        if self.head_end > self.start:
            head = ffmpeg.input(str(self.track)).audio.filter(
                "atrim", start_sample=self.start, end_sample=self.head_end
            )
            head = head.filter("asetpts", "PTS-STARTPTS").filter("aformat", sample_fmts="fltp")
            music = ffmpeg.concat(head, music, v=0, a=1)
        if self.lead_s > 0:
            music = music.filter("adelay", delays=f"{round(self.lead_s * 1000)}", all=1)
        return music


def _place_music(track: Path, video_s: float, settings: MuxSettings, workdir: Path) -> _PlacedMusic:
    """Place the track at ``video_offset_seconds`` and fit it to the video's end.

    Only the tail that fitting changes (see ``fit_track_to_length``) is decoded into memory
    and written to ``workdir``; the head streams from the track untouched and is joined to it
    sample-exactly, so an hour-long track costs no more memory than a minute-long one.
    """
    info = sf.info(str(track))
    rate, offset = info.samplerate, settings.video_offset_seconds
    lead_s = max(0.0, offset)
    start = round(max(0.0, -offset) * rate)  # capture before the video: its music is skipped
    needed = round((video_s - lead_s) * rate)
    target = start + needed
    margin = int((LOOP_SECONDS + settings.fade_out_seconds) * rate) + 1  # all fitting touches
    head_end = max(start, min(info.frames, target) - margin)
    tail, _ = sf.read(str(track), start=head_end, dtype="float32", always_2d=True)
    fitted = fit_track_to_length(
        tail.T, rate, (target - head_end) / rate, settings.fade_out_seconds
    )
    tail_path = workdir / "tail.wav"
    sf.write(str(tail_path), fitted.T, rate, subtype="FLOAT")
    fit = _fit_kind(info.frames - start, needed)
    return _PlacedMusic(Path(track), start, head_end, tail_path, lead_s, fit)


def _mix(
    video_in: Any, music: _PlacedMusic, info: MediaInfo, settings: MuxSettings
) -> tuple[Any, AudioPath]:
    """The unmastered mix at ``sample_rate``: music alone, or music (ducked or not) plus the
    game audio."""
    layout = {"sample_fmts": "fltp", "channel_layouts": "stereo"}
    tune = music.node().filter("aresample", settings.sample_rate).filter("aformat", **layout)
    tune = tune.filter("volume", f"{settings.music_gain_db}dB")
    if not info.has_audio:
        return tune, "music-only"
    # padded so the game audio never ends the mix early; the placed music sets the length
    game = video_in["a:0"].filter("aresample", settings.sample_rate).filter("aformat", **layout)
    game = game.filter("apad")
    path: AudioPath = "mixed"
    if settings.duck and settings.duck_depth_db > 0:
        split = game.filter_multi_output("asplit", 2)
        game, key = split[0], split[1]
        tune = _ducked(tune, key, settings)
        path = "ducked"
    mixed = ffmpeg.filter([game, tune], "amix", inputs=2, duration="shortest", normalize=0)
    return mixed, path


def _ducked(tune: Any, key: Any, settings: MuxSettings) -> Any:
    """``tune`` lowered by exactly ``duck_depth_db`` while ``key`` (the game audio) is loud.

    A compressor's reduction grows with the key's level, so quiet footsteps barely duck and
    a fight only a few dB; a gate keyed on the game audio instead passes the music whenever
    the game is loud, and subtracting that share of it gives a fixed, bounded depth.
    """
    split = tune.filter_multi_output("asplit", 2)
    dry, wet = split[0], split[1]
    share = 1.0 - 10.0 ** (-settings.duck_depth_db / 20.0)
    gated = ffmpeg.filter(
        [wet, key],
        "sidechaingate",
        threshold=settings.duck_threshold,
        ratio=9000,  # a hard gate: fully open above the threshold
        range=0,
        attack=settings.duck_attack_ms,
        release=settings.duck_release_ms,
    ).filter("volume", f"{-share:.6f}")
    return ffmpeg.filter([dry, gated], "amix", inputs=2, duration="first", normalize=0)


_INTEGRATED = re.compile(r"Summary:.*?I:\s+(\S+) LUFS", re.S)
_PEAK = re.compile(r"Summary:.*?Peak:\s+(\S+) dBFS", re.S)
SILENCE_LUFS = -70.0  # ebur128's floor: below it there is nothing to normalise


def _loudness(audio: Any, true_peak: bool = True) -> Loudness:
    """Integrated loudness and (when asked: it costs 4x oversampling) true peak of an ffmpeg
    audio node, by EBU R128 (ffmpeg's ebur128); an unmeasured peak is -inf."""
    stream = audio.filter("ebur128", peak="true" if true_peak else "none", framelog="verbose")
    try:
        _, err = stream.output("-", format="null").run(capture_stdout=True, capture_stderr=True)
    except ffmpeg.Error as exc:
        raise MuxError(f"ffmpeg failed measuring loudness: {_ffmpeg_reason(exc)}") from exc
    log = err.decode(errors="replace")
    integrated, peak = _INTEGRATED.findall(log), _PEAK.findall(log)
    if not integrated or (true_peak and not peak):
        raise MuxError("ffmpeg's ebur128 printed no loudness summary")
    return Loudness(float(integrated[-1]), float(peak[-1]) if true_peak else -math.inf)


def measure_loudness(path: Path) -> Loudness:
    """Integrated loudness and true peak of the first audio stream of ``path``."""
    _require("ffmpeg")
    return _loudness(ffmpeg.input(str(path)).audio)


def _ffmpeg_reason(exc: ffmpeg.Error) -> str:
    """The last line of ffmpeg's log: the reason, as one line."""
    lines = exc.stderr.decode(errors="replace").strip().splitlines() if exc.stderr else []
    return lines[-1].strip() if lines else "no log"


def _ffmpeg(args: list[str], log: Path, level: str = "error", **pipes: Any) -> subprocess.Popen:
    """Start ffmpeg logging at ``level`` to the file ``log``: a log pipe nobody reads while
    the audio streams could fill up and stall it. Its audio pipes hold ``PIPE_BYTES`` where
    the system allows (Linux): with the default 64 KB, ffmpeg writing an hour's mix blocked
    some 20,000 times, and the mix pass took 1.5-3 s longer (``bench/mux.py``: 23.5 and
    24.4 s against 22.0 and 22.9 s)."""
    with open(log, "wb") as err:
        command = ["ffmpeg", "-nostdin", "-hide_banner", "-nostats", "-v", level, *args]
        proc = subprocess.Popen(command, stderr=err, **pipes)
    for pipe in (proc.stdin, proc.stdout):
        if pipe is not None and hasattr(fcntl, "F_SETPIPE_SZ"):
            with suppress(OSError):  # a system limit lower than PIPE_BYTES: keep its size
                fcntl.fcntl(pipe.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)
    return proc


def _check(proc: subprocess.Popen, log: Path, what: str) -> str:
    """``proc``'s log, once it has ended; ``MuxError`` with the log's last line if it failed."""
    code, text = proc.wait(), log.read_text(errors="replace")
    if code != 0:
        lines = text.strip().splitlines()
        raise MuxError(f"ffmpeg failed {what}: {lines[-1].strip() if lines else 'no log'}")
    return text


def _pcm_blocks(stream: BinaryIO) -> Iterator[np.ndarray]:
    """(frames, 2) float32 blocks of an interleaved stereo float32 stream, to its end."""
    while data := stream.read(STREAM_BLOCK * 8):
        yield np.frombuffer(data, dtype=np.float32).reshape(-1, 2)


@dataclass(frozen=True)
class _MixLoudness:
    """The unmastered mix's integrated loudness (LUFS) and the momentary loudness of each of
    its 400 ms blocks, ``momentary[k]`` the block that ends at 100 ms hop ``k + BLOCK_HOPS``."""

    lufs: float
    momentary: np.ndarray

    @classmethod
    def of(cls, meter: LoudnessMeter) -> _MixLoudness:
        return cls(meter.lufs(), block_loudness(block_energies(meter.hops(), meter.hop)))

    def blocks(self, ends: np.ndarray) -> np.ndarray:
        """Momentary loudness of the blocks that end at hops ``ends``."""
        return self.momentary[np.clip(ends - BLOCK_HOPS, 0, len(self.momentary) - 1)]


def _render_mix(
    video: Path,
    music: _PlacedMusic,
    info: MediaInfo,
    settings: MuxSettings,
    mix: Path,
    progress: bool,
) -> tuple[_MixLoudness, AudioPath]:
    """Compute the mix once and keep it as raw float32 stereo in ``mix``: the encodes read it
    back instead of decoding and mixing again. Its integrated loudness is measured here while
    ffmpeg computes the next samples (the meter and ffmpeg each take a core), with the
    loudness of each of its blocks (what ``_limited_loudness`` compares its sample with)."""
    node, path = _mix(ffmpeg.input(str(video)), music, info, settings)
    args = node.output("pipe:", format="f32le", ac=2, ar=settings.sample_rate).get_args()
    meter = LoudnessMeter(settings.sample_rate)
    log = mix.with_suffix(".log")
    made = _Seconds("mix", info.duration_s * settings.sample_rate, settings.sample_rate, progress)
    with made, open(mix, "wb") as out, _ffmpeg(args, log, stdout=subprocess.PIPE) as proc:
        for block in _pcm_blocks(proc.stdout):
            out.write(block)
            meter.add(block.T)
            made(len(block))
    _check(proc, log, f"mixing {video} with {music.track}")
    return _MixLoudness.of(meter), path


def _parts(frames: int, rate: int) -> list[tuple[int, int]]:
    """Sample ranges of the mix encoded in parallel: one per core (the AAC encoder is
    single-threaded), none under ``MIN_PART_SECONDS``, split at AAC frame boundaries."""
    count = max(1, min(os.cpu_count() or 1, int(frames / (MIN_PART_SECONDS * rate))))
    inner = [round(frames * k / count / AAC_FRAME) * AAC_FRAME for k in range(1, count)]
    return list(pairwise([0, *inner, frames]))


def _feed(mix: Path, first: int, last: int, sink: BinaryIO, fed: _Seconds) -> None:
    """Write samples [first, last) of the raw mix to ``sink``, counting them in ``fed``."""
    with open(mix, "rb") as source:
        source.seek(first * 8)
        left = (last - first) * 8
        while left > 0 and (data := source.read(min(left, STREAM_BLOCK * 8))):
            sink.write(data)
            left -= len(data)
            fed(len(data) // 8)


class _Seconds:
    """Progress of one pass over the mix in seconds of audio, from frame counts that
    several threads may report (``bgm_batch.progress``; an hour's pass takes a minute)."""

    def __init__(self, desc: str, frames: float, rate: int, enabled: bool) -> None:
        self._bar = Progress(f"mux: {desc}", int(frames // rate), unit="s", enabled=enabled)
        self._rate, self._frames, self._shown, self._lock = rate, 0, 0, threading.Lock()

    def __call__(self, frames: int) -> None:
        with self._lock:
            self._frames += frames
            self._show(self._frames // self._rate)

    def _show(self, seconds: int) -> None:
        seconds = min(seconds, self._bar.total)
        if seconds > self._shown:
            self._bar.update(seconds - self._shown)
            self._shown = seconds

    def __enter__(self) -> _Seconds:
        return self

    def __exit__(self, error: type[BaseException] | None, *exc: object) -> None:
        if error is None:  # the pass is done, whatever rounding left of its last second
            self._show(self._bar.total)
        self._bar.close()


def _span(part: tuple[int, int], frames: int, rate: int) -> tuple[int, int, int]:
    """Where a part's output begins (``OVERLAP_FRAMES`` AAC frames early after the first
    part), and the samples [first, last) fed to its limiter (``PART_LEAD_S`` more on either
    side); see ``_limit_part``."""
    lo, hi = part
    lead = round(PART_LEAD_S * rate)
    begin = lo - (OVERLAP_FRAMES * AAC_FRAME if lo else 0)
    return begin, max(0, begin - lead), min(frames, hi + lead)


def _feed_progress(
    desc: str, parts: list[tuple[int, int]], frames: int, rate: int, enabled: bool
) -> _Seconds:
    """The progress of a pass that feeds ``parts`` of the mix to their limiters."""
    fed = sum(last - first for _, first, last in (_span(p, frames, rate) for p in parts))
    return _Seconds(desc, fed, rate, enabled)


def _raw_input(rate: int) -> list[str]:
    """ffmpeg's input arguments for the raw mix fed on its standard input."""
    return ["-f", "f32le", "-ar", str(rate), "-ac", "2", "-i", "pipe:"]


def _limiter(levels: tuple[float, float]) -> str:
    """The ffmpeg filters that gain and limit the mix (``levels``: gain dB, true-peak ceiling
    dBTP): the same in the gain passes and the encode."""
    gain_db, ceiling_dbtp = levels
    limit = 10.0 ** ((ceiling_dbtp - LIMITER_TRUE_PEAK_DB) / 20.0)
    return (
        f"volume={gain_db:.4f}dB,alimiter=limit={limit:.6f}:level=0:latency=1:attack=5:release=100"
    )


def _limit_part(
    mix: Path,
    part: tuple[int, int],
    levels: tuple[float, float],
    rate: int,
    output: list[str],
    log: Path,
    fed: _Seconds,
) -> str:
    """Run ffmpeg on mix samples ``part`` = [lo, hi), gained and limited (``levels``: gain dB,
    true-peak ceiling dBTP), written with the ``output`` arguments; its log.

    A part after the first starts ``OVERLAP_FRAMES`` AAC frames early; those frames (its
    encoder's priming, the short windows it may pick for the sudden start, and the frames
    the previous part covers) are dropped when joining (see ``_kept``), so the decoder
    overlaps two frames made from the same samples with matching windows. The limiter is fed
    ``PART_LEAD_S`` more on either side, so that its state, and so the shared samples, match
    the neighbouring part's; the encoder sees past ``hi`` to choose its last frames' windows
    as one encoder would.
    """
    begin, first, last = _span(part, mix.stat().st_size // 8, rate)
    chain = f"{_limiter(levels)},atrim=start_sample={begin - first}"
    args = [*_raw_input(rate), "-af", chain, *output]
    # a broken pipe means ffmpeg stopped: its log says why (below)
    with suppress(BrokenPipeError), _ffmpeg(args, log, "info", stdin=subprocess.PIPE) as proc:
        _feed(mix, first, last, proc.stdin, fed)
        proc.stdin.close()
    return _check(proc, log, "limiting and encoding the mix")


def _encode_part(
    mix: Path,
    part: tuple[int, int],
    levels: tuple[float, float],
    rate: int,
    out: Path,
    fed: _Seconds,
) -> None:
    """Encode mix samples ``part``, gained and limited, as ADTS AAC to ``out``."""
    aac = ["-c:a", "aac", "-b:a", AAC_BITRATE, *AAC_OPTIONS, "-f", "adts", "-y", str(out)]
    _limit_part(mix, part, levels, rate, aac, out.with_suffix(".log"), fed)


def _limited_loudness(
    mix: Path,
    levels: tuple[float, float],
    rate: int,
    workdir: Path,
    progress: bool,
    raw: _MixLoudness,
) -> float:
    """Integrated loudness of the mix as gained and limited with ``levels``, without the AAC
    encoder (a few times cheaper than an encode). Measured on ``_measured_spans`` (a quarter
    of a long mix) and moved by how much the unlimited mix's loudness there differs from all
    of it (``raw``, from the mix pass): the sample then only has to say what the limiter takes.
    On ``bench/mux.py``'s hour and on the demo's 31 minutes this was within 0.06 LU of a whole
    measurement, against 0.18 LU for the sample alone. A silent sample is measured again whole."""
    frames = mix.stat().st_size // 8
    sampled, whole = _measured_spans(frames, rate), [[part] for part in _parts(frames, rate)]
    for groups in [sampled] if sampled == whole else [sampled, whole]:
        ends, momentary = _measure_limited(mix, frames, groups, levels, rate, workdir, progress)
        sample = _gated_loudness(raw.blocks(ends))
        if math.isfinite(sample):
            return raw.lufs + _gated_loudness(momentary) - sample
    return -math.inf


def _measure_limited(
    mix: Path,
    frames: int,
    groups: list[list[tuple[int, int]]],
    levels: tuple[float, float],
    rate: int,
    workdir: Path,
    progress: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """``_limited_blocks`` of each group of spans of the ``frames`` long mix, one ffmpeg per
    group, in parallel."""
    total = sum(last - first for group in groups for first, last in _fed_spans(group, frames, rate))
    with (
        _Seconds("loudness", total, rate, progress) as fed,
        ThreadPoolExecutor(len(groups)) as pool,
    ):
        measured = list(
            pool.map(
                lambda k: _limited_blocks(
                    mix, frames, groups[k], levels, rate, workdir / f"limit{k}.log", fed
                ),
                range(len(groups)),
            )
        )
    return np.concatenate([e for e, _ in measured]), np.concatenate([m for _, m in measured])


def _measured_spans(frames: int, rate: int) -> list[list[tuple[int, int]]]:
    """The stretches [lo, hi) of the mix that a gain pass measures, grouped by the part of
    ``_parts`` they start in (one ffmpeg each): the parts themselves for a mix shorter than
    ``SAMPLE_MIN_S``; for a longer one ``SAMPLE_STRETCH_S`` in the middle of every
    ``SAMPLE_EVERY_S``. The final encode is measured whole, so a gain that missed would be
    corrected there: sampling only makes the passes cheaper."""
    parts = _parts(frames, rate)
    if frames < SAMPLE_MIN_S * rate:
        return [[part] for part in parts]
    every, stretch = round(SAMPLE_EVERY_S * rate), round(SAMPLE_STRETCH_S * rate)
    starts = range((every - stretch) // 2, frames - stretch + 1, every)
    groups = [[(s, s + stretch) for s in starts if lo <= s < hi] for lo, hi in parts]
    return [group for group in groups if group]


def _fed_spans(spans: list[tuple[int, int]], frames: int, rate: int) -> list[tuple[int, int]]:
    """The samples fed to the limiter for each span: ``PART_LEAD_S`` more on either side,
    where its state settles."""
    lead = round(PART_LEAD_S * rate)
    return [(max(0, lo - lead), min(frames, hi + lead)) for lo, hi in spans]


def _limited_blocks(
    mix: Path,
    frames: int,
    spans: list[tuple[int, int]],
    levels: tuple[float, float],
    rate: int,
    log: Path,
    fed: _Seconds,
) -> tuple[np.ndarray, np.ndarray]:
    """Where in the mix (the 100 ms hop they end at) and how loud (momentary, LUFS) the
    400 ms blocks are that lie inside ``spans`` of the ``frames`` long mix gained and limited
    with ``levels``: one ffmpeg is fed each span with its leads (``_fed_spans``) one after
    the other; the blocks that reach into a lead are left out."""
    args = [*_raw_input(rate), "-af", f"{_limiter(levels)},ebur128=framelog=info"]
    inside, offset = [], 0  # each span's [start, end) seconds in the stream fed
    # a broken pipe means ffmpeg stopped: its log says why (below)
    with (
        suppress(BrokenPipeError),
        _ffmpeg([*args, "-f", "null", "-"], log, "info", stdin=subprocess.PIPE) as proc,
    ):
        for (lo, hi), (first, last) in zip(spans, _fed_spans(spans, frames, rate), strict=True):
            _feed(mix, first, last, proc.stdin, fed)
            inside.append(((offset + lo - first) / rate, (offset + hi - first) / rate))
            offset += last - first
        proc.stdin.close()
    ends, momentary = _momentary(_check(proc, log, "measuring the limited mix"))
    hops, kept, began = [], [], ends - LOUDNESS_BLOCK_S
    for (lo, _), (start, end) in zip(spans, inside, strict=True):
        keep = (began >= start - 1e-6) & (ends <= end + 1e-6)
        hops.append(np.rint((ends[keep] - start + lo / rate) / LOUDNESS_HOP_S).astype(np.int64))
        kept.append(momentary[keep])
    return np.concatenate(hops), np.concatenate(kept)


def _settle_gain(
    mix: Path,
    levels: tuple[float, float],
    target: float,
    rate: int,
    workdir: Path,
    progress: bool,
    raw: _MixLoudness,
) -> float:
    """The gain (dB) that brings the limited mix to ``target`` LUFS, found on the limited mix
    (cheap) rather than by encodes: what the limiter takes off is given back, and from the
    second pass on the step follows the measured slope (a dB more gain adds less than a dB
    once the limiter works), at most ``GAIN_PASSES`` passes."""
    gain_db, ceiling_dbtp = levels
    previous: tuple[float, float] | None = None
    for _ in range(GAIN_PASSES):
        loudness = _limited_loudness(mix, (gain_db, ceiling_dbtp), rate, workdir, progress, raw)
        if abs(target - loudness) <= GAIN_TOLERANCE_LU:
            break
        slope = 1.0
        if previous is not None and gain_db != previous[0]:
            slope = min(1.0, max(0.2, (loudness - previous[1]) / (gain_db - previous[0])))
        previous = (gain_db, loudness)
        gain_db += (target - loudness) / slope
    return gain_db


def _adts_frames(path: Path) -> list[bytes]:
    """The frames of an ADTS stream, split by the length each frame's header holds."""
    data, frames, i = path.read_bytes(), [], 0
    while i < len(data):
        header = data[i : i + 7]
        length = (header[3] & 3) << 11 | header[4] << 3 | header[5] >> 5 if len(header) == 7 else 0
        if not 7 <= length <= len(data) - i or header[0] != 0xFF or header[1] & 0xF0 != 0xF0:
            raise MuxError(f"{path.name}: not an ADTS stream at byte {i}")
        frames.append(data[i : i + length])
        i += length
    return frames


def _kept(parts: list[tuple[int, int]], files: list[Path]) -> list[list[bytes]]:
    """Each part's AAC frames that go into the joined stream, which then decodes as if one
    encoder had made it: a later part's first ``OVERLAP_FRAMES`` frames (see
    ``_limit_part``) are dropped, and each part but the last keeps exactly the frames of its
    samples."""
    kept = []
    for (lo, hi), path in zip(parts, files, strict=True):
        frames = _adts_frames(path)[OVERLAP_FRAMES if lo else 0 :]
        if hi != parts[-1][1]:
            if len(frames) < (hi - lo) // AAC_FRAME:
                raise MuxError(f"{path.name}: the encoder stopped early")
            frames = frames[: (hi - lo) // AAC_FRAME]
        kept.append(frames)
    return kept


_MOMENTARY = re.compile(r"\] t: *(\S+) +TARGET:\S+ LUFS +M: *(\S+)")


def _momentary(log: str) -> tuple[np.ndarray, np.ndarray]:
    """From an ebur128 ``framelog``: when each 400 ms block ends (seconds into the stream,
    on the 100 ms grid) and its momentary loudness (LUFS)."""
    found = np.array(_MOMENTARY.findall(log), dtype=float).reshape(-1, 2)
    return np.round(found[:, 0] / LOUDNESS_HOP_S) * LOUDNESS_HOP_S, found[:, 1]


def _measure_part(frames: list[bytes], path: Path) -> tuple[np.ndarray, Loudness]:
    """Momentary loudness (400 ms blocks every 100 ms, LUFS), and integrated loudness and
    true peak, of AAC ``frames`` as decoded, by ffmpeg's ebur128; the first frame only
    primes the decoder."""
    path.write_bytes(b"".join(frames))
    chain = f"atrim=start_sample={AAC_FRAME},ebur128=peak=true:framelog=info"
    log = path.with_suffix(".log")
    with _ffmpeg(["-i", str(path), "-af", chain, "-f", "null", "-"], log, "info") as proc:
        text = _check(proc, log, "measuring the encoded mix")
    integrated, peak = _INTEGRATED.findall(text), _PEAK.findall(text)
    if not integrated or not peak:
        raise MuxError("ffmpeg's ebur128 printed no loudness summary")
    return _momentary(text)[1], Loudness(float(integrated[-1]), float(peak[-1]))


def _gated_loudness(momentary: np.ndarray) -> float:
    """BS.1770 integrated loudness from the 400 ms blocks' loudness (``gated_blocks`` on
    the mean squares they stand for)."""
    return gated_blocks(10.0 ** ((momentary + 0.691) / 10.0))


def _encode(
    mix: Path, levels: tuple[float, float], rate: int, workdir: Path, progress: bool
) -> list[list[bytes]]:
    """The mastered mix as AAC frames per part (``levels``: gain dB, true-peak ceiling
    dBTP), the parts limited and encoded in parallel (see ``_encode_part``)."""
    frames = mix.stat().st_size // 8
    parts = _parts(frames, rate)
    files = [workdir / f"part{k}.aac" for k in range(len(parts))]
    with (
        _feed_progress("encode", parts, frames, rate, progress) as fed,
        ThreadPoolExecutor(len(parts)) as pool,
    ):
        for job in [
            pool.submit(_encode_part, mix, part, levels, rate, file, fed)
            for part, file in zip(parts, files, strict=True)
        ]:
            job.result()
    return _kept(parts, files)


def _measure_aac(kept: list[list[bytes]], workdir: Path, progress: bool) -> Loudness:
    """Integrated loudness and true peak of the joined parts as a player decodes them, the
    parts measured in parallel, each after the frame that precedes it in the joined stream
    (the decoder overlaps it with the part's first frame, as it will in the file). One part
    is the whole file: ebur128's own figures, exactly what a check of the file reads; several
    are gated together from their 400 ms blocks."""
    primed = [kept[0], *([*before[-1:], *frames] for before, frames in pairwise(kept))]
    paths = [workdir / f"measure{k}.aac" for k in range(len(kept))]
    with (
        Progress("mux: verify", len(kept), unit="part", enabled=progress) as bar,
        ThreadPoolExecutor(len(kept)) as pool,
    ):
        jobs = [pool.submit(_measure_part, p, path) for p, path in zip(primed, paths, strict=True)]
        for job in as_completed(jobs):
            job.result()
            bar.update()
        measured = [job.result() for job in jobs]
    if len(measured) == 1:
        return measured[0][1]
    momentary = np.concatenate([blocks for blocks, _ in measured])
    peak = max(part.true_peak_dbtp for _, part in measured)
    return Loudness(_gated_loudness(momentary), peak)


def _join(kept: list[list[bytes]], out: Path) -> Path:
    """Write the parts' frames as one ADTS stream."""
    with open(out, "wb") as joined:
        for frames in kept:
            joined.write(b"".join(frames))
    return out


def _mux(video: Path, aac: Path, rate: int, out: Path) -> None:
    """Write ``out``: the video stream copied, the AAC stream copied under it, its priming
    frame marked (an edit list) so that players start at the mix's first sample."""
    with atomic_path(out) as tmp:
        args = ["-i", str(video), "-itsoffset", f"{-AAC_FRAME / rate:.9f}", "-i", str(aac)]
        args += ["-map", "0:v:0", "-map", "1:a:0", "-c", "copy", "-movflags", "+faststart"]
        log = aac.with_name("mux.log")
        with _ffmpeg([*args, "-y", str(tmp)], log) as proc:
            _check(proc, log, f"muxing {video}")


def mux_video(
    video: Path,
    track: Path,
    out: Path,
    settings: MuxSettings,
    *,
    recording_s: float | None = None,
    progress: bool = False,
) -> MuxReport:
    """Write ``out``: ``video``'s picture (copied) with the mastered mix under it, as AAC.

    The mix is computed and measured once; the gain to ``target_lufs`` is settled on
    limiter-only passes (see ``_settle_gain``); then the mix is limited and encoded (in
    parallel parts), and the encoded stream is decoded and measured; at most
    ``MASTER_ATTEMPTS`` times it is encoded again: with the loudness still missing given
    back, and with more headroom should AAC have pushed a peak over the ceiling. Only then
    is it muxed under the video. ``recording_s`` is the recording's length for the fit
    check; the track's length stands in for it when not given (the track covers the
    recording's windows). ``progress`` shows each pass over the mix (``bgm_batch.progress``:
    an hour of video takes minutes).
    """
    _require("ffmpeg")
    info = probe_media(video)
    if info.video_codec is None:
        raise UnreadableVideoError(f"{video}: no video stream")
    track_info = sf.info(str(track))
    track_s = track_info.frames / track_info.samplerate
    cut_s = check_fit(info.duration_s, track_s if recording_s is None else recording_s, settings)
    rate = settings.sample_rate
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    # the scratch (about 1.4 GB per hour) beside the output, not in a /tmp that may be RAM
    with tempfile.TemporaryDirectory(prefix=".bgm-mux-", dir=Path(out).parent) as tmpdir:
        work = Path(tmpdir)
        music = _place_music(Path(track), info.duration_s, settings, work)
        mix = work / "mix.f32"
        raw, path = _render_mix(Path(video), music, info, settings, mix, progress)
        silent = raw.lufs <= SILENCE_LUFS  # nothing to bring to the target
        gain_db = 0.0 if silent else settings.target_lufs - raw.lufs
        headroom = AAC_HEADROOM_DB
        for _ in range(MASTER_ATTEMPTS):
            ceiling_dbtp = settings.true_peak_dbtp - headroom
            if not silent:
                levels = (gain_db, ceiling_dbtp)
                target = settings.target_lufs
                gain_db = _settle_gain(mix, levels, target, rate, work, progress, raw)
            kept = _encode(mix, (gain_db, ceiling_dbtp), rate, work, progress)
            final = _measure_aac(kept, work, progress)
            over = final.true_peak_dbtp - (settings.true_peak_dbtp - METER_MARGIN_DB)
            short = 0.0 if silent else settings.target_lufs - final.integrated_lufs
            if over <= 0 and abs(short) <= LOUDNESS_TOLERANCE_LU:
                break
            headroom += max(0.0, over + 0.5)  # AAC overshot the ceiling: aim lower
            gain_db += short  # what the limiter took off the loudness, given back
        _mux(Path(video), _join(kept, work / "mix.aac"), rate, Path(out))
    return MuxReport(
        out=Path(out),
        audio_path=path,
        fit=music.fit,
        video_duration_s=info.duration_s,
        track_duration_s=track_s,
        audio_duration_s=probe_audio_duration(Path(out)),
        video_offset_s=settings.video_offset_seconds,
        frame_rate=info.frame_rate,
        cut_s=cut_s,
        sample_rate=rate,
        mix_lufs=raw.lufs,
        gain_db=gain_db,
        loudness_lufs=final.integrated_lufs,
        true_peak_dbtp=final.true_peak_dbtp,
    )


def probe_audio_duration(path: Path) -> float:
    """Duration of the first audio stream of ``path``, seconds."""
    probe = ffmpeg.probe(str(path), select_streams="a:0")
    stream = probe["streams"][0]
    return float(_stream_duration(stream, probe.get("format", {})) or 0.0)
