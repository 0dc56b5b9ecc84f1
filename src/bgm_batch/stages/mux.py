"""Mux stage: put the stitched track under the gameplay video and master the final mix.

The video stream is copied bit for bit (no re-encode: no quality loss, seconds instead of
minutes). The music is placed at ``video_offset_seconds`` (where capture time 0 falls in the
video) and fitted to the video's end with a fade instead of a cut. When the video has its own
audio, the music is ducked by ``duck_depth_db`` while the game audio is loud (a sidechain gate
keyed on the game audio, subtracted from the music: the depth is exact, never more) and mixed
with it. The mix is then mastered: resampled to ``sample_rate`` whatever the source's rate,
measured (EBU R128, ffmpeg's ebur128), brought to ``target_lufs`` and held under the
true-peak ceiling by a limiter running at four times the rate. ``track.flac`` keeps its own
loudness target for editors who mix themselves.
"""

from __future__ import annotations

import math
import re
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import ffmpeg
import numpy as np
import soundfile as sf

from bgm_batch.atomic import atomic_path
from bgm_batch.errors import BgmError
from bgm_batch.settings import MuxSettings

LOOP_SECONDS = 10.0  # how much of the track's end is repeated when padding: a musical phrase
LOOP_CROSSFADE_SECONDS = 0.5
LIMITER_RATE = 192000  # the limiter runs at 4x 48 kHz, so its sample peaks track true peaks
AAC_HEADROOM_DB = 2.5  # AAC overshoots peaks (up to ~2 dB on game clicks): the limiter aims lower
MASTER_ATTEMPTS = 3  # encodes at most: each overshoot measured is added to the headroom
METER_MARGIN_DB = 0.1  # ebur128 prints one decimal: -1.0 may be -0.95, so aim below that
LOUDNESS_TOLERANCE_LU = 0.75  # further from the target than this: the next encode corrects it


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


def _master(mix: Any, gain_db: float, headroom_db: float, settings: MuxSettings) -> Any:
    """``mix`` raised by ``gain_db`` and held ``headroom_db`` under the true-peak ceiling by a
    limiter at ``LIMITER_RATE``, then back at ``sample_rate``."""
    ceiling = 10.0 ** ((settings.true_peak_dbtp - headroom_db) / 20.0)
    limited = (
        mix.filter("volume", f"{gain_db:.3f}dB")
        .filter("aresample", LIMITER_RATE)
        .filter("alimiter", limit=ceiling, level=0, latency=1, attack=5, release=100)
    )
    return limited.filter("aresample", settings.sample_rate)


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


def _run(stream: Any, what: str) -> None:
    try:
        stream.run(capture_stdout=True, capture_stderr=True, overwrite_output=True)
    except ffmpeg.Error as exc:
        raise MuxError(f"ffmpeg failed {what}: {_ffmpeg_reason(exc)}") from exc


def _encode(
    video: Path,
    music: _PlacedMusic,
    info: MediaInfo,
    settings: MuxSettings,
    levels: tuple[float, float],
    out: Path,
) -> AudioPath:
    """Write ``out``: the video copied, the mix mastered with ``levels`` (gain, headroom dB)."""
    video_in = ffmpeg.input(str(video))
    mixed, path = _mix(video_in, music, info, settings)
    with atomic_path(out) as tmp:
        stream = ffmpeg.output(
            video_in["v:0"],
            _master(mixed, *levels, settings),
            str(tmp),
            vcodec="copy",
            acodec="aac",
            audio_bitrate="192k",
            ar=settings.sample_rate,
            aac_coder="fast",  # the default two-loop coder took ~3x the time on a 31 min mux
            movflags="+faststart",
        )
        _run(stream, f"muxing {video} with {music.track}")
    return path


def mux_video(
    video: Path,
    track: Path,
    out: Path,
    settings: MuxSettings,
    *,
    recording_s: float | None = None,
) -> MuxReport:
    """Write ``out``: ``video``'s picture (copied) with the mastered mix under it, as AAC.

    Two passes over the mix: the first measures its loudness, the second applies the gain to
    ``target_lufs`` and the limiter while muxing. The written file is measured again and, at
    most ``MASTER_ATTEMPTS`` times, encoded again: with the loudness the limiter took off given
    back, and with more headroom should AAC have pushed a peak over the ceiling.
    ``recording_s`` is the recording's length for the fit check; the track's length stands in
    for it when not given (the track covers the recording's windows).
    """
    _require("ffmpeg")
    info = probe_media(video)
    if info.video_codec is None:
        raise UnreadableVideoError(f"{video}: no video stream")
    track_info = sf.info(str(track))
    track_s = track_info.frames / track_info.samplerate
    cut_s = check_fit(info.duration_s, track_s if recording_s is None else recording_s, settings)
    with tempfile.TemporaryDirectory(prefix="bgm-mux-") as tmpdir:
        music = _place_music(Path(track), info.duration_s, settings, Path(tmpdir))
        mix = _loudness(_mix(ffmpeg.input(str(video)), music, info, settings)[0], False)
        silent = mix.integrated_lufs <= SILENCE_LUFS  # nothing to bring to the target
        gain_db = 0.0 if silent else settings.target_lufs - mix.integrated_lufs
        headroom = AAC_HEADROOM_DB
        for _ in range(MASTER_ATTEMPTS):
            path = _encode(video, music, info, settings, (gain_db, headroom), Path(out))
            final = measure_loudness(Path(out))
            over = final.true_peak_dbtp - (settings.true_peak_dbtp - METER_MARGIN_DB)
            short = 0.0 if silent else settings.target_lufs - final.integrated_lufs
            if over <= 0 and abs(short) <= LOUDNESS_TOLERANCE_LU:
                break
            headroom += max(0.0, over + 0.5)  # AAC overshot the ceiling: aim lower
            gain_db += short  # what the limiter took off the loudness, given back
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
        sample_rate=settings.sample_rate,
        mix_lufs=mix.integrated_lufs,
        gain_db=gain_db,
        loudness_lufs=final.integrated_lufs,
        true_peak_dbtp=final.true_peak_dbtp,
    )


def probe_audio_duration(path: Path) -> float:
    """Duration of the first audio stream of ``path``, seconds."""
    probe = ffmpeg.probe(str(path), select_streams="a:0")
    stream = probe["streams"][0]
    return float(_stream_duration(stream, probe.get("format", {})) or 0.0)
