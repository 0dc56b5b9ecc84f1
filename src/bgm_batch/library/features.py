"""Audio features of one library track: tempo, key and mode, energy, loudness, beats and bars.

The ranker compares these with what a stretch's captions ask for (``parse_caption`` reads the
same quantities from text), and the arranger cuts and loops tracks on the bar times, so a
looped track keeps its downbeat. Everything comes from librosa on a mono 22.05 kHz copy:

- tempo and beats: ``librosa.beat.beat_track``;
- bars: every fourth beat (4/4 assumed), starting at the beat phase whose onsets are strongest,
  which is where the downbeat usually falls;
- key and mode: Krumhansl-Schmuckler, the correlation of the mean chroma with the 24 rotated
  major/minor key profiles;
- loudness: integrated BS.1770 loudness (pyloudnorm), in LUFS;
- energy: 0..1, half from the onset rate (busy music) and half from the loudness, because
  libraries are often mastered to one loudness and then only the density tells calm from busy.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ANALYSIS_RATE = 22050
BEATS_PER_BAR = 4
PITCH_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
# Krumhansl-Kessler key profiles, tonic first.
MAJOR_PROFILE = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
MINOR_PROFILE = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])


class UnreadableAudioError(ValueError):
    """A file that is not decodable audio, or holds no sound to analyse."""


@dataclass(frozen=True)
class TrackFeatures:
    """What the analysis found in one track (times in seconds from the file's start)."""

    duration_s: float
    tempo_bpm: float
    key: str  # pitch name of the tonic, e.g. "F#"
    mode: str  # "major" or "minor"
    energy: float  # 0 (sparse, soft) .. 1 (dense, loud)
    loudness_lufs: float
    beats_s: list[float]
    bars_s: list[float]


def load_mono(path: Path) -> np.ndarray:
    """The file as mono float32 at ``ANALYSIS_RATE``; UnreadableAudioError when it is not audio."""
    import librosa

    try:
        with warnings.catch_warnings():  # librosa warns before its audioread fallback
            warnings.simplefilter("ignore")
            audio, _ = librosa.load(path, sr=ANALYSIS_RATE, mono=True)
    except Exception as exc:  # every decoder error means the same to the index: skip the file
        raise UnreadableAudioError(f"cannot decode: {type(exc).__name__}: {exc}") from exc
    if audio.size < ANALYSIS_RATE or not np.isfinite(audio).all() or np.abs(audio).max() < 1e-4:
        raise UnreadableAudioError("shorter than one second, silent or not finite")
    return audio


def _bars(beats: np.ndarray, onset_env: np.ndarray, beat_frames: np.ndarray) -> np.ndarray:
    """Every fourth beat, from the phase with the strongest onsets (the likely downbeat)."""
    if beats.size < BEATS_PER_BAR:
        return beats[:1]
    strength = onset_env[np.minimum(beat_frames, onset_env.size - 1)]
    phase = int(np.argmax([strength[p::BEATS_PER_BAR].mean() for p in range(BEATS_PER_BAR)]))
    return beats[phase::BEATS_PER_BAR]


def _key(audio: np.ndarray) -> tuple[str, str]:
    """Tonic and mode by correlating the mean chroma with the 24 rotated key profiles."""
    import librosa

    chroma = librosa.feature.chroma_stft(y=audio, sr=ANALYSIS_RATE).mean(axis=1)
    scores = [
        (np.corrcoef(chroma, np.roll(profile, tonic))[0, 1], tonic, mode)
        for mode, profile in (("major", MAJOR_PROFILE), ("minor", MINOR_PROFILE))
        for tonic in range(12)
    ]
    _, tonic, mode = max(scores, key=lambda s: np.nan_to_num(s[0], nan=-1.0))
    return PITCH_NAMES[tonic], mode


def _loudness(audio: np.ndarray) -> float:
    import pyloudnorm

    value = pyloudnorm.Meter(ANALYSIS_RATE).integrated_loudness(audio.astype(np.float64))
    return float(value) if np.isfinite(value) else -70.0


def analyse(audio: np.ndarray) -> TrackFeatures:
    """Features of mono audio at ``ANALYSIS_RATE`` (see the module docstring)."""
    import librosa

    onset_env = librosa.onset.onset_strength(y=audio, sr=ANALYSIS_RATE)
    tempo, beat_frames = librosa.beat.beat_track(onset_envelope=onset_env, sr=ANALYSIS_RATE)
    beats = librosa.frames_to_time(beat_frames, sr=ANALYSIS_RATE)
    duration = audio.size / ANALYSIS_RATE
    onsets = librosa.onset.onset_detect(onset_envelope=onset_env, sr=ANALYSIS_RATE)
    loudness = _loudness(audio)
    density = float(np.tanh(len(onsets) / duration / 4.0))
    level = float(np.clip((loudness + 35.0) / 25.0, 0.0, 1.0))
    key, mode = _key(audio)
    return TrackFeatures(
        duration_s=float(duration),
        tempo_bpm=float(np.atleast_1d(tempo)[0]),
        key=key,
        mode=mode,
        energy=round(0.5 * density + 0.5 * level, 4),
        loudness_lufs=loudness,
        beats_s=[float(b) for b in beats],
        bars_s=[float(b) for b in _bars(beats, onset_env, beat_frames)],
    )
