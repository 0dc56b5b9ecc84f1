"""A gameplay-like test video for a recording: scene colours, clock, labels, game audio.

The mux stage lays music under a gameplay video and ducks it under the game's own loud
moments; testing that needs a video whose picture follows the recording's scenes and whose
audio has footsteps, weather and much louder fights at known times. ffmpeg draws the picture
(sky and ground in the scene's colour, darker at night, scenery scrolling past a walking
player, a flashing red border in fights, the scene label and the elapsed time) and encodes it
with the audio that numpy synthesises, in one pass.

A timeline is ``[(start_s, label), ...]``; a label is ``"Biome / Time"`` plus ``" / Raining"``
or another weather when not clear, and ``" / fight"`` in combat windows (``scene_timeline``).
"""

from __future__ import annotations

import math
import tempfile
import zlib
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import ffmpeg
import numpy as np
import soundfile as sf
from scipy.signal import lfilter, oaconvolve

from bgm_batch.atomic import atomic_path
from bgm_batch.data.game_profile import load_profile
from bgm_batch.data.ingest import read_recording
from bgm_batch.stages.characterize import is_combat, snapshot_to_record
from bgm_batch.testing.simulate import NIGHT_LABELS, WINDOW_SECONDS, dominant, simulate_recording

FIGHT = "fight"
SAMPLE_RATE = 22050
# ffmpeg's default AAC coder takes 4 times as long, longer than the whole picture.
_AAC = {"acodec": "aac", "aac_coder": "fast", "audio_bitrate": "48k"}
_SEPARATOR = " / "
_WET = ("Raining", "Thundering", "Snow")
# Scene colours by biome (first label part); other biomes get a colour from their name.
_COLOURS = {
    "Plains": "0x7cbf4a", "Forest": "0x2f7d32", "Birch Forest": "0x8fbf60",
    "Dark Forest": "0x1f4a1f", "Taiga": "0x31554a", "Snowy Taiga": "0xc8d8e0",
    "Snowy Plains": "0xeef4f8", "Frozen River": "0xa0c8f0", "River": "0x3f76e4",
    "Ocean": "0x1f3fa0", "Beach": "0xe0d090", "Desert": "0xe0c070", "Swamp": "0x4c6b3c",
    "Dripstone Caves": "0x806850", "Lush Caves": "0x4a9a50", "Deep Dark": "0x0a1a2a",
}  # fmt: skip


def scene_timeline(
    snapshots: Sequence[Mapping], window_seconds: float = WINDOW_SECONDS
) -> list[tuple[float, str]]:
    """``[(start_s, label)]`` for a recording: a new entry wherever the label changes.

    The label names the dominant biome and time of day, the weather when it is not clear,
    and ``fight`` when the window is in combat by the profile's rules.
    """
    profile = load_profile()
    timeline: list[tuple[float, str]] = []
    for position, snapshot in enumerate(snapshots):
        parts = [dominant(snapshot["Biome"]), dominant(snapshot["Time"])]
        weather = dominant(snapshot["Climate"])
        if weather != "Clear":
            parts.append(weather)
        if is_combat(snapshot, profile):
            parts.append(FIGHT)
        label = _SEPARATOR.join(parts)
        if not timeline or timeline[-1][1] != label:
            timeline.append((position * window_seconds, label))
    return timeline


Spans = list[tuple[float, float, str]]  # (start_s, end_s, label) of each scene


def _spans(timeline: Sequence[tuple[float, str]], duration_s: float) -> Spans:
    """``(start, end, label)`` for each timeline entry that starts before ``duration_s``."""
    entries = sorted((s, label) for s, label in timeline if s < duration_s)
    ends = [s for s, _ in entries[1:]] + [duration_s]
    return [(s, e, label) for (s, label), e in zip(entries, ends, strict=True) if e > s]


def _colour(label: str) -> str:
    """The scene's colour: the biome's, a third as bright at night."""
    biome = label.split(_SEPARATOR)[0]
    rgb = int(_COLOURS.get(biome, f"0x{zlib.crc32(biome.encode()) & 0xFFFFFF:06x}"), 16)
    if _is(label, NIGHT_LABELS):
        rgb = sum(((rgb >> shift & 0xFF) // 3) << shift for shift in (0, 8, 16))
    return f"0x{rgb:06x}"


def _is(label: str, words: Collection[str]) -> bool:
    return any(word in label.split(_SEPARATOR) for word in words)


# --- picture -------------------------------------------------------------------------------

# Scenery passing by as the player walks: (speed and size in picture heights, glyphs, colour);
# nearer things pass faster. drawtext moves text per frame at almost no cost, where overlaying
# moving pictures costs more than the rest of the video.
_SCENERY = ((0.12, 0.3, "\u25b2       \u25b2   \u25b2", "0x1f3f1f"),
            (0.35, 0.2, "\u2663     \u2663           \u2663", "0x2a5a2a"))  # fmt: skip
_PLAYER = "\u2588"


def _picture(duration_s: float, spans: Spans, width: int, height: int, fps: int) -> Any:
    """The video stream: the scene's colour (sky and darker ground), scenery scrolling past,
    a bobbing player, a flashing red border in fights, the scene label and the clock."""
    canvas = ffmpeg.input(f"color=c=black:s=32x18:r={fps}:d={duration_s}", f="lavfi")
    video = _backdrop(canvas, spans).filter("scale", width, height, flags="neighbor")
    size, horizon = max(10, height // 15), height * 11 // 18
    for speed, scale, glyphs, colour in _SCENERY:
        video = video.drawtext(
            text=glyphs,
            x=f"w-mod(t*{speed * height:.1f},w+tw)",
            y=f"{horizon}-th",
            fontsize=int(scale * height),
            fontcolor=colour,
        )
    video = video.drawtext(
        text=_PLAYER,
        x="w/3",
        y=f"{horizon}-th-abs({size / 3:.1f}*sin(t*9))",
        fontsize=2 * size,
        fontcolor="0x3050c0",
    )
    for start, end, label in spans:
        video = video.drawtext(
            text=label,
            x=size,
            y=f"h-{2 * size}",
            fontsize=size,
            fontcolor="white",
            box=1,
            boxcolor="black@0.5",
            enable=_during(start, end),
        )
    clock = "%{pts:hms}"  # drawtext expands it; escape_text would print it literally
    return video.drawtext(
        text=clock,
        escape_text=False,
        x=f"w-tw-{size}",
        y=size,
        fontsize=size,
        fontcolor="white",
        box=1,
        boxcolor="black@0.5",
    )


def _backdrop(canvas: Any, spans: Spans) -> Any:
    """Scene colours, ground and fight border, painted on a 32x18 canvas: drawbox visits every
    pixel of the frame, which at full size would cost more than everything else together."""
    for start, end, label in spans:
        during = _during(start, end)
        canvas = canvas.drawbox(
            0, 0, "iw", "ih", color=_colour(label), thickness="fill", enable=during
        )
    canvas = canvas.drawbox(0, 11, "iw", "ih", color="0x3a2a10@0.5", thickness="fill")
    for start, end, label in spans:
        if _is(label, (FIGHT,)):
            flash = f"{_during(start, end)}*lt(mod(t,0.6),0.3)"
            canvas = canvas.drawbox(0, 0, "iw", "ih", color="red", thickness=1, enable=flash)
    return canvas


def _during(start: float, end: float) -> str:
    return f"between(t,{start},{end - 1e-3})"


# --- game audio ----------------------------------------------------------------------------


def _bursts(times: np.ndarray, gains: np.ndarray, kernel: np.ndarray, n: int) -> np.ndarray:
    """Copies of ``kernel`` starting at sample positions ``times`` with ``gains``."""
    impulses = np.zeros(n, dtype=np.float32)
    np.add.at(impulses, times[times < n], gains[times < n])
    return oaconvolve(impulses, kernel)[:n].astype(np.float32)


def _click(rng: np.random.Generator, seconds: float, decay: float, rate: int) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (rng.standard_normal(t.size) * np.exp(-t / decay)).astype(np.float32)


def _span_audio(label: str, n: int, rate: int, rng: np.random.Generator) -> np.ndarray:
    """Game sound for one scene: wind, footsteps, rain when wet, hits and growls in fights.

    Levels (RMS): walking about -40 dBFS with footsteps peaking near -12, fights about -24
    peaking near -3, so a fight is unmistakably louder than walking about.
    """
    wind = lfilter([1.0], [1.0, -0.995], rng.standard_normal(n)).astype(np.float32)
    audio = 0.01 * wind / (np.abs(wind).max() + 1e-9)
    steps = np.cumsum(rng.uniform(0.3, 0.5, size=int(n / rate / 0.3) + 1) * rate).astype(int)
    audio += _bursts(
        steps,
        rng.uniform(0.1, 0.18, steps.size).astype(np.float32),
        _click(rng, 0.04, 0.01, rate),
        n,
    )
    if _is(label, _WET):
        audio += 0.02 * rng.standard_normal(n).astype(np.float32)
    if _is(label, (FIGHT,)):
        hits = np.cumsum(rng.uniform(0.25, 0.9, size=int(n / rate / 0.25) + 1) * rate).astype(int)
        audio += _bursts(
            hits,
            rng.uniform(0.3, 0.55, hits.size).astype(np.float32),
            _click(rng, 0.12, 0.03, rate),
            n,
        )
        t = np.arange(n, dtype=np.float32) / rate
        growl = 0.12 * np.sin(2 * np.pi * (90 + 30 * np.sin(2 * np.pi * 0.7 * t)) * t)
        audio += (growl * (0.5 + 0.5 * np.sin(2 * np.pi * 0.4 * t))).astype(np.float32)
    return np.clip(audio, -1.0, 1.0)


def _write_audio(path: Path, spans: Spans, duration_s: float, rate: int, seed: int) -> None:
    """Write the game audio span by span (a 31-minute track never sits in memory at once)."""
    rng = np.random.default_rng(seed)
    total = int(round(duration_s * rate))
    with sf.SoundFile(path, "w", samplerate=rate, channels=1, subtype="PCM_16") as out:
        for start, end, label in spans:
            n = min(total, int(round(end * rate))) - int(round(start * rate))
            out.write(_span_audio(label, n, rate, rng))


# --- the video -----------------------------------------------------------------------------


def _default_timeline(duration_s: float) -> list[tuple[float, str]]:
    windows = max(1, math.ceil(duration_s / WINDOW_SECONDS))
    return scene_timeline(simulate_recording(windows))


def make_test_video(
    path: Path,
    duration_s: float,
    *,
    with_audio: bool = True,
    timeline: Sequence[tuple[float, str]] | None = None,
    width: int = 320,
    height: int = 180,
    fps: int = 10,
    seed: int = 0,
) -> Path:
    """Write a gameplay-like H.264 video (AAC game audio unless ``with_audio`` is false).

    ``timeline`` gives the scenes (``scene_timeline``); by default, those of a simulated
    recording of the same length. The file appears atomically at ``path``. The default size
    keeps 31 minutes to about 25 s of CPU; 640x360 at 15 fps costs three times as much.
    """
    path = Path(path)
    spans = _spans(timeline if timeline is not None else _default_timeline(duration_s), duration_s)
    if not spans or spans[0][0] > 0:
        spans.insert(0, (0.0, spans[0][0] if spans else duration_s, "gameplay"))
    video = _picture(duration_s, spans, width, height, fps)
    codecs = {"vcodec": "libx264", "preset": "ultrafast", "crf": 35, "pix_fmt": "yuv420p"}
    with tempfile.TemporaryDirectory() as scratch, atomic_path(path) as tmp:
        if with_audio:
            wav = Path(scratch) / "game.wav"
            _write_audio(wav, spans, duration_s, SAMPLE_RATE, seed)
            audio = ffmpeg.input(str(wav)).audio
            output = ffmpeg.output(video, audio, str(tmp), t=duration_s, **codecs, **_AAC)
        else:
            output = ffmpeg.output(video, str(tmp), t=duration_s, **codecs)
        output.global_args("-nostdin", "-loglevel", "error").overwrite_output().run()
    return path


def ensure_sample_video(path: Path, capture_dir: Path | None = None) -> Path:
    """The bundled sample's video at ``path``, made from ``capture_dir`` (default: the
    ``capture`` folder beside it) when it does not exist yet."""
    path = Path(path)
    if path.exists():
        return path
    frame = read_recording(capture_dir or path.with_name("capture")).frame
    snapshots = [snapshot_to_record(s) for s in frame["snapshot"].to_list()]
    duration = frame["end_s"].max()
    return make_test_video(path, duration, timeline=scene_timeline(snapshots))


# --- a stitched-track stand-in ---------------------------------------------------------------

_TRACK_BLOCK_S = 10.0  # one window: a chord and a level each, as the render makes them


def _track_block(rng: np.random.Generator, n: int, rate: int, level: float) -> np.ndarray:
    """Ten seconds of music-like sound, (2, n): a chord of harmonic-rich tones swelling and
    fading, a kick on the beat and hi-hat ticks, at ``level`` (the phrase's loudness)."""
    t = np.arange(n, dtype=np.float32) / rate
    root = 55.0 * 2 ** (rng.integers(0, 24) / 12)
    chord = np.zeros(n, dtype=np.float32)
    for interval in (0, 4, 7, 12):
        hz = root * 2 ** (interval / 12)
        for harmonic in (1, 2, 3):
            chord += np.sin(2 * np.pi * hz * harmonic * t + rng.uniform(0, 2 * np.pi)) / harmonic
    chord *= 0.12 * (0.6 + 0.4 * np.sin(np.pi * t / _TRACK_BLOCK_S))
    beat = round(rate * 60 / rng.choice([90, 110, 128]))
    kicks = np.arange(0, n, beat)
    kick = np.sin(2 * np.pi * 60 * t[: rate // 4]) * np.exp(-t[: rate // 4] / 0.05)
    ticks = np.arange(beat // 2, n, beat)
    hat = _click(rng, 0.03, 0.005, rate)
    drums = _bursts(kicks, np.full(kicks.size, 0.4, np.float32), kick.astype(np.float32), n)
    drums += _bursts(ticks, np.full(ticks.size, 0.15, np.float32), hat, n)
    pan = rng.uniform(0.7, 1.0)
    return level * np.stack([chord + drums, pan * chord + drums])


def make_test_track(path: Path, duration_s: float, *, rate: int = 48000, seed: int = 0) -> Path:
    """Write a stitched-track stand-in: 24-bit stereo FLAC at ``rate``, ten-second blocks of
    chords and drums whose level changes every block (quiet exploring, loud fights), about
    -18 LUFS with peaks under -1 dBFS, near what the stitch makes of ``track.flac``. Written
    block by block (an hour never sits in memory); the file appears atomically at ``path``."""
    rng = np.random.default_rng(seed)
    total = round(duration_s * rate)
    block = round(_TRACK_BLOCK_S * rate)
    with (
        atomic_path(Path(path)) as tmp,
        sf.SoundFile(tmp, "w", rate, 2, subtype="PCM_24", format="FLAC") as out,
    ):
        for start in range(0, total, block):
            level = 10 ** (rng.uniform(-12.0, 0.0) / 20)
            audio = _track_block(rng, min(block, total - start), rate, level)
            out.write(np.clip(audio, -0.89, 0.89).T)
    return Path(path)
