"""Media sanity after the mux: the scored video must hold as much video as audio, and as much
video as its input claims.

A truncated input mp4 can still carry a header announcing its full length; ffmpeg copies the
frames it can read and the music runs on past the picture. ffprobe on the *written* file
gives the honest stream lengths, so the check runs on ``scored.mp4`` and compares them with
each other and with what the input's header says.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bgm_batch.errors import BgmError


class MediaCheckError(BgmError):
    """The scored video is not whole: a truncated input, or streams of different lengths."""


@dataclass(frozen=True)
class StreamLengths:
    """Seconds of the first video and the first audio stream (None when absent)."""

    video_s: float | None
    audio_s: float | None


def _seconds(stream: dict[str, Any] | None, fmt: dict[str, Any]) -> float | None:
    if stream is None:
        return None
    value = stream.get("duration", fmt.get("duration"))
    return None if value in (None, "N/A") else float(value)


def stream_lengths(path: Path) -> StreamLengths:
    """Video and audio stream durations of ``path``, read with ffprobe."""
    command = ["ffprobe", "-v", "error", "-show_streams", "-show_format", "-of", "json", str(path)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines() or ["unknown error"]
        raise MediaCheckError(f"{path}: ffprobe cannot read it: {lines[-1]}")
    probe = json.loads(done.stdout)
    streams, fmt = probe.get("streams", []), probe.get("format", {})

    def first(kind: str) -> dict[str, Any] | None:
        return next((s for s in streams if s.get("codec_type") == kind), None)

    return StreamLengths(_seconds(first("video"), fmt), _seconds(first("audio"), fmt))


def check_scored_video(scored: Path, source: Path, tolerance_s: float) -> dict[str, Any]:
    """Raise :class:`MediaCheckError` naming every mismatch; return the lengths for the
    manifest when the scored video is whole."""
    out, given = stream_lengths(scored), stream_lengths(source)
    problems = []
    if out.video_s is None or out.audio_s is None:
        problems.append(f"{scored.name} lacks a video or an audio stream")
    elif abs(out.video_s - out.audio_s) > tolerance_s:
        problems.append(
            f"{scored.name} has {out.video_s:.1f} s of video under {out.audio_s:.1f} s of audio"
        )
    readable, announced = out.video_s, given.video_s
    if readable is not None and announced is not None and announced - readable > tolerance_s:
        problems.append(
            f"{source} announces {announced:.1f} s of video but only "
            f"{readable:.1f} s could be read: the file looks truncated"
        )
    if problems:
        raise MediaCheckError("; ".join(problems))
    return {"scored": asdict(out), "input_video_s": given.video_s, "tolerance_s": tolerance_s}
