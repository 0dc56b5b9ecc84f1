"""Play library tracks through the render stage: cut on bars, looped on bars.

``LibraryBackend`` is an ``AudioBackend`` that renders a window by reading its picked track
instead of generating audio, so ``stages.render`` (batching, resume, failures) and
``stages.stitch`` run unchanged. Each stretch starts its track at the first bar; when the
stretch outlasts the track, the music jumps from the start of the last bar back to the first
bar (``loop_points``) with a short equal-power crossfade, so the loop keeps the downbeat.

A window is read from its unwrapped position in the stretch's playback, ``stretch position +
window start``, mapped through the loop. Consecutive windows of a stretch overlap by the
render tail with identical audio, which the stitcher joins seamlessly (it detects the
correlation), and stretch changes get the profile's restart crossfade there.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl
import soundfile as sf

from bgm_batch.audio.protocol import RenderedSegment, SegmentRequest

LOOP_FADE_S = 0.05


@dataclass(frozen=True)
class Placement:
    """Where a window's audio comes from: the file, the unwrapped playback position of the
    window start (seconds), and the loop region (seconds)."""

    path: str
    position_s: float
    loop_start_s: float
    loop_end_s: float


def loop_points(bars_s: Sequence[float], duration_s: float) -> tuple[float, float]:
    """(first bar, start of the last bar that leaves room for the loop crossfade); the whole
    file when it has fewer than two bars."""
    usable = [b for b in bars_s if b <= duration_s - LOOP_FADE_S]
    if len(usable) < 2:
        return 0.0, max(duration_s - LOOP_FADE_S, 0.0)
    return float(usable[0]), float(usable[-1])


def wrap(position_s: float, loop_start_s: float, loop_end_s: float) -> float:
    """The file position heard at an unwrapped playback position."""
    length = loop_end_s - loop_start_s
    if position_s < loop_end_s or length <= 0:
        return position_s
    return loop_start_s + (position_s - loop_end_s) % length


def read_window(placement: Placement, duration_s: float) -> tuple[np.ndarray, int]:
    """``duration_s`` of audio (float32 (channels, n)) from ``placement``, and its rate."""
    info = sf.info(placement.path)
    rate = info.samplerate
    start, lo, hi = (round(x * rate) for x in (placement.position_s, *_loop(placement)))
    fade = max(round(LOOP_FADE_S * rate), 1)
    positions = start + np.arange(round(duration_s * rate))
    wrapped = (positions >= hi) & (hi > lo)
    offset = np.where(wrapped, (positions - hi) % max(hi - lo, 1), 0)
    source = np.where(wrapped, lo + offset, positions)
    seam = wrapped & (offset < fade)  # just after a jump: fade out the tail, fade in the loop
    tail = hi + offset[seam]
    first = int(source.min())
    last = int(max(source.max(), tail.max(initial=0))) + 1
    data, _ = sf.read(
        placement.path, start=first, stop=min(last, info.frames), dtype="float32", always_2d=True
    )
    audio = np.pad(data.T, ((0, 0), (0, last - first - data.shape[0])))  # past the end: silence
    out = audio[:, source - first]
    if seam.any():
        t = (offset[seam] + 0.5) / fade
        out[:, seam] = out[:, seam] * np.sin(0.5 * np.pi * t) + audio[:, tail - first] * np.cos(
            0.5 * np.pi * t
        )
    return np.ascontiguousarray(out), rate


def _loop(placement: Placement) -> tuple[float, float]:
    return placement.loop_start_s, placement.loop_end_s


class LibraryBackend:
    """Renders requests keyed ``<recording>/<index>`` from their placements."""

    name = "library"

    def __init__(self, placements: dict[str, Placement], index_dir: str) -> None:
        self._placements = placements
        digest = hashlib.sha256(
            json.dumps({k: v.__dict__ for k, v in sorted(placements.items())}).encode()
        ).hexdigest()
        self._identity = {"backend": "library", "model": index_dir, "revision": digest[:16]}

    def identity(self) -> dict[str, str]:
        """The index and a hash of every placement: a changed pick re-renders its windows."""
        return dict(self._identity)

    def render(self, requests: Sequence[SegmentRequest]) -> list[RenderedSegment]:
        """Each request's window read from its picked track."""
        out = []
        for request in requests:
            placement = self._placements[request.key]
            audio, rate = read_window(placement, request.duration_s)
            out.append(RenderedSegment(audio, rate, state={"source": placement.path}))
        return out

    @classmethod
    def from_frame(cls, frame: pl.DataFrame, index_dir: str) -> LibraryBackend:
        """From a picked frame (``source_track``, ``play_position_s``, ``loop_start_s``,
        ``loop_end_s`` per row)."""
        placements = {
            f"{r['recording']}/{r['index']}": Placement(
                r["source_track"], r["play_position_s"], r["loop_start_s"], r["loop_end_s"]
            )
            for r in frame.iter_rows(named=True)
        }
        return cls(placements, index_dir)
