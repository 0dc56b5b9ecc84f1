"""Mux stage: put the stitched track under the gameplay video.

The video stream is copied bit for bit (no re-encode: no quality loss, seconds instead of
minutes). When the video has its own audio, the music is ducked under it with a sidechain
compressor keyed on the game audio and then mixed with it, so dialogue and effects stay
audible; when it has none, the music is the only audio. The track is first fitted to the
video's length so the audio ends exactly with the picture, with a fade instead of a cut.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import ffmpeg
import numpy as np
import soundfile as sf

from bgm_batch.atomic import atomic_path
from bgm_batch.settings import MuxSettings

LOOP_SECONDS = 10.0  # how much of the track's end is repeated when padding: a musical phrase
LOOP_CROSSFADE_SECONDS = 0.5


class FfmpegMissingError(RuntimeError):
    """ffmpeg or ffprobe is not installed."""


class UnreadableVideoError(ValueError):
    """ffprobe cannot read the file, or it holds no video stream."""


class LengthMismatchError(ValueError):
    """The video and the recording are too far apart in length to belong together."""


class MuxError(RuntimeError):
    """ffmpeg failed while muxing; the message holds the end of its log."""


@dataclass(frozen=True)
class MediaInfo:
    """What the mux needs to know about a media file."""

    path: Path
    duration_s: float
    has_audio: bool
    video_codec: str | None
    audio_sample_rate: int | None


AudioPath = Literal["ducked", "mixed", "music-only"]
Fit = Literal["trimmed", "padded", "exact"]


@dataclass(frozen=True)
class MuxReport:
    """What the mux did: which audio path ran, how the track was fitted, resulting lengths."""

    out: Path
    audio_path: AudioPath
    fit: Fit
    video_duration_s: float
    track_duration_s: float
    audio_duration_s: float

    def to_json(self) -> dict[str, Any]:
        """JSON-able form for the manifest."""
        return {**self.__dict__, "out": str(self.out)}


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


def probe_media(path: Path) -> MediaInfo:
    """Probe ``path`` with ffprobe; the duration is the video stream's (what a copy keeps)."""
    _require("ffprobe")
    path = Path(path)
    try:
        probe = ffmpeg.probe(str(path))
    except ffmpeg.Error as exc:
        message = exc.stderr.decode(errors="replace").strip() if exc.stderr else str(exc)
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
    )


def check_lengths(video_s: float, recording_s: float, max_mismatch_s: float) -> None:
    """Refuse a video and recording whose lengths differ by more than ``max_mismatch_s``.

    A large gap means the wrong video was paired with the recording, which no fade can hide.
    """
    gap = abs(video_s - recording_s)
    if gap > max_mismatch_s:
        raise LengthMismatchError(
            f"the video lasts {video_s:.1f} s but the recording {recording_s:.1f} s: "
            f"{gap:.1f} s apart, more than mux.max_length_mismatch_seconds={max_mismatch_s:g}; "
            "is it the right video for this recording?"
        )


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


def _fitted_music(track: Path, duration_s: float, fade_out_s: float, workdir: Path) -> Any:
    """The music as an ffmpeg node fitted to ``duration_s`` (see ``fit_track_to_length``).

    Only the tail that fitting changes is decoded into memory and written to ``workdir``; the
    head streams from the track untouched and is joined to it sample-exactly, so an hour-long
    track costs no more memory than a minute-long one.
    """
    info = sf.info(str(track))
    sample_rate = info.samplerate
    target = round(duration_s * sample_rate)
    margin = int((LOOP_SECONDS + fade_out_s) * sample_rate) + 1  # all that fitting can touch
    head = max(0, min(info.frames, target) - margin)
    tail, _ = sf.read(str(track), start=head, dtype="float32", always_2d=True)
    fitted = fit_track_to_length(tail.T, sample_rate, (target - head) / sample_rate, fade_out_s)
    tail_path = workdir / "tail.wav"
    sf.write(str(tail_path), fitted.T, sample_rate, subtype="FLOAT")
    tail_in = ffmpeg.input(str(tail_path)).audio.filter("aformat", sample_fmts="fltp")
    if head == 0:
        return tail_in
    head_in = ffmpeg.input(str(track)).audio.filter("atrim", end_sample=head)
    head_in = head_in.filter("aformat", sample_fmts="fltp")
    return ffmpeg.concat(head_in, tail_in, v=0, a=1)


def _audio_graph(
    video_in: Any, music: Any, info: MediaInfo, settings: MuxSettings
) -> tuple[Any, AudioPath]:
    """The audio output node: music alone, or music (ducked or not) mixed with the game audio."""
    if not info.has_audio:
        return music, "music-only"
    layout = {
        "sample_fmts": "fltp",
        "sample_rates": info.audio_sample_rate,
        "channel_layouts": "stereo",
    }
    # padded so the game audio never ends the mix early; the fitted music sets the length
    game = video_in["a:0"].filter("aformat", **layout).filter("apad")
    music = music.filter("aformat", **layout).filter("volume", f"{settings.music_gain_db}dB")
    path: AudioPath = "mixed"
    if settings.duck:
        split = game.filter_multi_output("asplit", 2)
        game, key = split[0], split[1]
        music = ffmpeg.filter(
            [music, key],
            "sidechaincompress",
            threshold=settings.duck_threshold,
            ratio=settings.duck_ratio,
            attack=settings.duck_attack_ms,
            release=settings.duck_release_ms,
        )
        path = "ducked"
    mixed = ffmpeg.filter([game, music], "amix", inputs=2, duration="shortest", normalize=0)
    return mixed, path


def mux_video(
    video: Path,
    track: Path,
    out: Path,
    settings: MuxSettings,
    *,
    recording_s: float | None = None,
) -> MuxReport:
    """Write ``out``: ``video``'s picture (copied) with ``track`` fitted under it, as AAC.

    ``recording_s`` is the recording's length for the mismatch check; the track's length
    stands in for it when not given (the track covers the recording's windows).
    """
    _require("ffmpeg")
    info = probe_media(video)
    if info.video_codec is None:
        raise UnreadableVideoError(f"{video}: no video stream")
    track_info = sf.info(str(track))
    track_s = track_info.frames / track_info.samplerate
    check_lengths(
        info.duration_s,
        track_s if recording_s is None else recording_s,
        settings.max_length_mismatch_seconds,
    )
    with tempfile.TemporaryDirectory(prefix="bgm-mux-") as tmpdir:
        music = _fitted_music(track, info.duration_s, settings.fade_out_seconds, Path(tmpdir))
        video_in = ffmpeg.input(str(video))
        audio_out, path = _audio_graph(video_in, music, info, settings)
        with atomic_path(Path(out)) as tmp:
            stream = ffmpeg.output(
                video_in["v:0"],
                audio_out,
                str(tmp),
                vcodec="copy",
                acodec="aac",
                audio_bitrate="192k",
                aac_coder="fast",  # the default two-loop coder took ~3x the time on a 31 min mux
                movflags="+faststart",
            )
            try:
                stream.run(capture_stdout=True, capture_stderr=True, overwrite_output=True)
            except ffmpeg.Error as exc:
                log = exc.stderr.decode(errors="replace")[-2000:] if exc.stderr else ""
                raise MuxError(f"ffmpeg failed muxing {video} with {track}:\n{log}") from exc
    result = probe_audio_duration(Path(out))
    fit = _fit_kind(track_info.frames, round(info.duration_s * track_info.samplerate))
    return MuxReport(Path(out), path, fit, info.duration_s, track_s, result)


def probe_audio_duration(path: Path) -> float:
    """Duration of the first audio stream of ``path``, seconds."""
    probe = ffmpeg.probe(str(path), select_streams="a:0")
    stream = probe["streams"][0]
    return float(_stream_duration(stream, probe.get("format", {})) or 0.0)
