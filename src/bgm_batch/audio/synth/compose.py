"""From a music caption to a short General MIDI arrangement that continues the previous one.

The ``synth`` audio backend needs no model weights: it reads the caption for musical
parameters (tempo, key and mode, mood, instruments, intensity) with a small keyword lexicon,
then composes notes on a beat grid that runs on across segments. The grid is the melodic
anchor: a segment that continues its run takes key, tempo, chord progression, motif and beat
position from the previous segment's state, so the overlapping tail of segment k-1 and the
head of segment k play the same bar of the same song and the crossfade between them is
inaudible. A caption whose mode or tempo departs clearly from the anchor modulates instead:
a pivot chord into the new key, a tempo ramp over the first bar and a drum fill. A restarted
run (new scene, no anchor) opens with a fill, a short ramp into its tempo and a dominant
chord resolving to the tonic; a combat onset adds a stinger (crash, timpani, brass stab).

Everything random comes from the request seed, so the same caption, state and seed give the
same notes. ``arrange`` returns the notes in seconds; ``to_midi`` writes them as a Standard
MIDI File for a DAW.
"""

from __future__ import annotations

import bisect
import io
import re
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import mido
import numpy as np

DRUM_CHANNEL = 9
TICKS_PER_BEAT = 480
RAMP_BEATS = 4  # a tempo ramp spans one 4/4 bar
MAJOR_SCALE = (0, 2, 4, 5, 7, 9, 11)
MINOR_SCALE = (0, 2, 3, 5, 7, 8, 10)
NOTE_NAMES = {"c": 0, "d": 2, "e": 4, "f": 5, "g": 7, "a": 9, "b": 11}

# Keyword lexicon: a word's tempo (BPM), its pull toward minor (+) or major (-), its intensity.
TEMPO_WORDS = {
    "ambient": 68,
    "slow": 70,
    "soothing": 72,
    "gentle": 76,
    "calm": 76,
    "tranquil": 72,
    "peaceful": 78,
    "relaxing": 76,
    "serene": 74,
    "dreamy": 72,
    "melancholic": 72,
    "sad": 70,
    "mysterious": 80,
    "eerie": 76,
    "haunting": 74,
    "moderate": 96,
    "steady": 100,
    "walking": 100,
    "playful": 112,
    "cheerful": 116,
    "upbeat": 120,
    "lively": 124,
    "adventurous": 118,
    "heroic": 124,
    "epic": 128,
    "energetic": 132,
    "driving": 136,
    "fast": 140,
    "intense": 144,
    "tense": 120,
    "battle": 148,
    "combat": 148,
    "urgent": 150,
    "frantic": 156,
    "aggressive": 146,
}
MODE_WORDS = {
    "dark": 1,
    "tense": 1,
    "ominous": 1,
    "mysterious": 1,
    "eerie": 1,
    "sad": 1,
    "melancholic": 1,
    "melancholy": 1,
    "somber": 1,
    "haunting": 1,
    "suspense": 1,
    "suspenseful": 1,
    "dangerous": 1,
    "danger": 1,
    "threatening": 1,
    "menacing": 1,
    "lonely": 1,
    "cold": 1,
    "night": 1,
    "cave": 1,
    "underground": 1,
    "battle": 1,
    "combat": 1,
    "urgent": 1,
    "aggressive": 1,
    "minor": 2,
    "bright": -1,
    "happy": -1,
    "cheerful": -1,
    "joyful": -1,
    "uplifting": -1,
    "warm": -1,
    "sunny": -1,
    "peaceful": -1,
    "hopeful": -1,
    "triumphant": -1,
    "playful": -1,
    "serene": -1,
    "heroic": -1,
    "major": -2,
}
INTENSITY_WORDS = {
    "soft": -0.2,
    "gentle": -0.2,
    "quiet": -0.2,
    "calm": -0.2,
    "soothing": -0.2,
    "peaceful": -0.2,
    "ambient": -0.25,
    "relaxing": -0.2,
    "serene": -0.2,
    "tranquil": -0.2,
    "delicate": -0.2,
    "sparse": -0.15,
    "intense": 0.25,
    "powerful": 0.2,
    "driving": 0.2,
    "energetic": 0.2,
    "aggressive": 0.25,
    "epic": 0.2,
    "battle": 0.3,
    "combat": 0.3,
    "heavy": 0.2,
    "urgent": 0.25,
    "frantic": 0.3,
    "pounding": 0.25,
    "fast": 0.15,
    "upbeat": 0.1,
    "tense": 0.15,
    "loud": 0.2,
}
# Instrument words: (role, General MIDI program). Roles: lead, harmony, pad, bass.
INSTRUMENT_WORDS = {
    "piano": ("harmony", 0),
    "keys": ("harmony", 4),
    "harp": ("harmony", 46),
    "guitar": ("harmony", 24),
    "acoustic": ("harmony", 25),
    "organ": ("harmony", 19),
    "marimba": ("harmony", 12),
    "brass": ("harmony", 61),
    "electric": ("harmony", 29),
    "strings": ("pad", 48),
    "string": ("pad", 48),
    "orchestral": ("pad", 48),
    "choir": ("pad", 52),
    "vocal": ("pad", 53),
    "pad": ("pad", 89),
    "pads": ("pad", 89),
    "synth": ("pad", 89),
    "synths": ("pad", 89),
    "electronic": ("pad", 89),
    "flute": ("lead", 73),
    "violin": ("lead", 40),
    "oboe": ("lead", 68),
    "clarinet": ("lead", 71),
    "trumpet": ("lead", 56),
    "horn": ("lead", 60),
    "horns": ("lead", 60),
    "bells": ("lead", 14),
    "glockenspiel": ("lead", 9),
    "celesta": ("lead", 8),
    "chimes": ("lead", 14),
    "whistle": ("lead", 78),
    "cello": ("bass", 42),
    "bass": ("bass", 33),
    "contrabass": ("bass", 43),
}
# Defaults when the caption names no instrument of a role: calm, dark, intense ensembles.
DEFAULT_ENSEMBLES = {
    "calm": {"lead": 73, "harmony": 0, "pad": 49, "bass": 32, "kit": 40},
    "dark": {"lead": 71, "harmony": 0, "pad": 89, "bass": 43, "kit": 0},
    "intense": {"lead": 56, "harmony": 61, "pad": 48, "bass": 33, "kit": 0},
}
# Drums only where the caption calls for them: named, or an energetic/combat cue; a caption
# with any of the quiet words gets none unless it names drums outright.
DRUM_WORDS = frozenset({"drums", "drum", "percussion", "percussive", "timpani", "beat", "beats"})
DRIVING_WORDS = frozenset(
    {"battle", "combat", "energetic", "driving", "upbeat", "lively", "pounding", "frantic"}
)
QUIET_WORDS = frozenset(
    {"ambient", "drone", "eerie", "meditative", "calm", "serene", "tranquil", "dreamy", "night"}
)
# Chord progressions as scale degrees (0 = tonic), one chord per bar: the first three bars of
# each four-bar half phrase; the fourth is the cadence (see ``_section_chord``).
PROGRESSIONS = {
    False: (
        (0, 5, 3),
        (0, 3, 1),
        (0, 4, 5),
        (0, 2, 3),
        (0, 5, 1),
        (0, 3, 5),
        (5, 3, 0),
        (3, 0, 1),
        (0, 1, 3),
        (5, 1, 3),
    ),
    True: (
        (0, 5, 2),
        (0, 3, 6),
        (0, 5, 3),
        (0, 6, 5),
        (0, 3, 5),
        (5, 2, 6),
        (0, 2, 3),
        (3, 5, 0),
        (0, 6, 2),
        (5, 6, 3),
    ),
}
FORM = "AABA"  # 8-bar sections; the form repeats, every section varied (see ``_Section``)
SECTION_BARS = 8
GM_DRUMS = {
    "kick": 36,
    "snare": 38,
    "stick": 37,
    "hat": 42,
    "open_hat": 46,
    "ride": 51,
    "crash": 49,
    "shaker": 70,
    "tom_hi": 50,
    "tom_mid": 47,
    "tom_lo": 45,
}


@dataclass(frozen=True)
class MusicParams:
    """What a caption asks for."""

    tempo: float
    minor: bool
    tonic: int  # pitch class: named in the caption, else a stable pick from its wording
    intensity: float  # 0 (sparse, soft) .. 1 (dense, loud)
    programs: Mapping[str, int]  # role -> GM program; "kit" -> GM drum kit
    drums: bool = False  # does the caption call for drums?


@dataclass(frozen=True)
class Note:
    """One note of the arrangement, in seconds from the segment start."""

    start: float
    duration: float
    channel: int
    program: int  # GM program, or the drum kit on the drum channel
    pitch: int
    velocity: int
    role: str
    skip: float = 0.0  # seconds of the note that sounded before the segment began


@dataclass
class Arrangement:
    """A segment's notes, tempo and key maps and the state the next segment continues from."""

    notes: list[Note]
    tempo_changes: list[tuple[float, float]]  # (beat from segment start, BPM)
    state: dict[str, Any] = field(default_factory=dict)
    key_changes: list[tuple[float, str]] = field(default_factory=list)  # (beat, "F#m")


def parse_caption(caption: str) -> MusicParams:
    """Read tempo, mode, key, intensity, instruments and drums from a free-text caption."""
    words = re.findall(r"[a-z]+", caption.lower())
    bpm = re.search(r"(\d{2,3})\s*bpm", caption.lower())
    tempos = [TEMPO_WORDS[w] for w in words if w in TEMPO_WORDS]
    tempo = float(bpm.group(1)) if bpm else float(np.mean(tempos)) if tempos else 100.0
    key = re.search(r"\b([a-g])\s*(#|sharp|b|flat)?\s*(major|minor)\b", caption.lower())
    tonic = None
    if key:
        tonic = (
            NOTE_NAMES[key.group(1)]
            + {"#": 1, "sharp": 1, "b": -1, "flat": -1}.get(key.group(2) or "", 0)
        ) % 12
    minor = key.group(3) == "minor" if key else sum(MODE_WORDS.get(w, 0) for w in words) > 0
    intensity = 0.45 + sum(INTENSITY_WORDS.get(w, 0.0) for w in words)
    intensity = float(np.clip(intensity + (tempo - 100.0) / 200.0, 0.05, 1.0))
    style = "intense" if intensity >= 0.7 else "dark" if minor else "calm"
    programs = dict(DEFAULT_ENSEMBLES[style])
    named = [INSTRUMENT_WORDS[w] for w in words if w in INSTRUMENT_WORDS]
    for role in ("lead", "harmony", "pad", "bass"):
        chosen = [program for r, program in named if r == role]
        if chosen:
            programs[role] = chosen[0]
    if {"electronic", "synth", "synths"} & set(words):
        programs.update(bass=38, kit=25)
    if tonic is None:  # the same caption always gets the same key: a theme per scene
        choices = (9, 2, 4, 0) if minor else (0, 7, 5, 2)
        tonic = choices[zlib.crc32(" ".join(words).encode()) % len(choices)]
    drums = bool(DRUM_WORDS & set(words)) or (
        bool(DRIVING_WORDS & set(words) or intensity >= 0.7) and not QUIET_WORDS & set(words)
    )
    return MusicParams(
        tempo=float(np.clip(tempo, 50.0, 190.0)),
        minor=minor,
        tonic=tonic,
        intensity=intensity,
        programs=programs,
        drums=drums,
    )


KEY_NAMES = {
    False: ("C", "Db", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B"),
    True: ("Cm", "C#m", "Dm", "Ebm", "Em", "Fm", "F#m", "Gm", "G#m", "Am", "Bbm", "Bm"),
}


def key_name(tonic: int, minor: bool) -> str:
    """The key as a MIDI key signature name: ``"G"``, ``"F#m"``."""
    return KEY_NAMES[bool(minor)][tonic % 12]


class _Grid:
    """Beat <-> seconds for one segment: a tempo constant between breakpoints (beat, BPM),
    beats counted from the segment start, the first breakpoint at beat 0."""

    def __init__(self, points: list[tuple[float, float]]):
        self.points = points
        self.beats_at = np.array([b for b, _ in points])
        self.bpm = np.array([t for _, t in points])
        spans = np.diff(self.beats_at) * 60.0 / self.bpm[:-1]
        self.times = np.concatenate([[0.0], np.cumsum(spans)])

    @classmethod
    def ramp(cls, before: float, at: float, after: float) -> _Grid:
        """``before`` BPM until beat ``at``, then one bar ramping into ``after``."""
        steps = [float(t) for t in np.linspace(before, after, RAMP_BEATS + 2)[1:-1]]
        ramp = [(at + i, t) for i, t in enumerate(steps)] + [(at + RAMP_BEATS, float(after))]
        return cls(([(0.0, float(before))] if at > 0 else []) + ramp)

    def seconds(self, beat: float) -> float:
        """Seconds from the segment start at ``beat`` (negative before it)."""
        i = max(int(np.searchsorted(self.beats_at, beat, side="right")) - 1, 0)
        return float(self.times[i] + (beat - self.beats_at[i]) * 60.0 / self.bpm[i])

    def beats(self, seconds: float) -> float:
        """Inverse of ``seconds``."""
        i = max(int(np.searchsorted(self.times, seconds, side="right")) - 1, 0)
        return float(self.beats_at[i] + (seconds - self.times[i]) * self.bpm[i] / 60.0)


def _scale(state: Mapping[str, Any]) -> tuple[int, ...]:
    return MINOR_SCALE if state["minor"] else MAJOR_SCALE


def _chord(state: Mapping[str, Any], degree: int, dominant: bool = False) -> list[int]:
    """Triad pitch classes (root, third, fifth) on a scale degree; ``dominant`` forces V major."""
    scale = _scale(state)
    tones = [state["tonic"] + scale[(degree + step) % 7] for step in (0, 2, 4)]
    if dominant:
        tones[1] = state["tonic"] + 11  # the leading tone: V is major in minor keys too
    return [t % 12 for t in tones]


def _voice(pitch_classes: list[int], around: int) -> list[int]:
    """Place pitch classes in the octave nearest ``around`` (smooth voice leading)."""
    return sorted(around + ((pc - around + 6) % 12) - 6 for pc in pitch_classes)


def _motif(theme: int, letter: str) -> list[list[float]]:
    """A two-bar melodic motif (beat, scale step) of one section letter of a theme."""
    rng = np.random.default_rng([theme, ord(letter)])
    steps = rng.choice([0, 1, 2, 1, -1, -2, 2, -1], size=6)
    onsets = sorted({0.0, *rng.choice(np.arange(0.5, 8, 0.5), size=5, replace=False).tolist()})
    return [[float(b), int(s)] for b, s in zip(onsets, steps, strict=False)]


def _new_piece(
    params: MusicParams, rng: np.random.Generator, bar: int, cue: list[list[int]]
) -> dict[str, Any]:
    """The musical plan of a scene: key, tempo, ensemble, drums, two progressions (A and B
    sections) and their motifs. Phrase 0 starts after the ``cue`` bars (the transition)."""
    progressions = PROGRESSIONS[params.minor]
    a, b = rng.choice(len(progressions), size=2, replace=False)
    theme = int(rng.integers(2**31))
    return {
        "tonic": params.tonic,
        "minor": params.minor,
        "tempo": params.tempo,
        "programs": dict(params.programs),
        "drums": params.drums,
        "intensity": params.intensity,
        "theme": theme,
        "progressions": {"A": list(progressions[a]), "B": list(progressions[b])},
        "motifs": {letter: _motif(theme, letter) for letter in "AB"},
        "cue": [[bar + i, *chord] for i, chord in enumerate(cue)],
        "bar0": bar + len(cue),
        "beat": 0.0,
    }


def _dominant_seventh(state: Mapping[str, Any]) -> list[int]:
    return [*_chord(state, 4, dominant=True), (state["tonic"] + 5) % 12]


def _modulation(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[list[int]]:
    """Transition chords into ``new``'s key: a pivot chord common to both keys (IV, ii, vi or
    I of the new key, the first that the old key also holds), then the new dominant seventh."""
    old_scale = {(old["tonic"] + step) % 12 for step in _scale(old)}
    for degree in (3, 1, 5, 0):
        chord = _chord(new, degree)
        if set(chord) <= old_scale:
            return [chord, _dominant_seventh(new)]
    return [_dominant_seventh(new)]


def _jitter(beat: float, pitch: int, role: str) -> float:
    """Humanised timing, up to 6 ms either way: a function of the note's place on the grid,
    so two segments that both play a note agree on when it began. (Velocities are not
    humanised: every distinct velocity is another note for the synth backend to render.)"""
    return (zlib.crc32(f"{beat:.4f}/{pitch}/{role}".encode()) % 1201 - 600) / 100_000


ROLES = ("lead", "harmony", "pad", "bass")


class _Writer:
    """Collects notes on the beat grid, clipped to the segment."""

    def __init__(self, grid: _Grid, start_beat: float, end_beat: float):
        self.grid, self.start, self.end = grid, start_beat, end_beat
        self.intensity, self.level = 0.5, 1
        self.programs: Mapping[str, int] = {}
        self.notes: list[Note] = []

    def play(self, state: Mapping[str, Any]) -> None:
        """Write the next notes with this piece's ensemble and dynamics."""
        self.programs, self.intensity = state["programs"], state["intensity"]
        self.level = 0 if self.intensity < 0.4 else 1 if self.intensity < 0.7 else 2

    def add(self, role: str, beat: float, beats: float, pitch: int, velocity: float) -> None:
        """A note at global ``beat`` lasting ``beats`` (one begun earlier sounds on)."""
        stop = beat + beats
        if stop <= self.start or beat >= self.end:
            return
        on = self.grid.seconds(beat - self.start)
        duration = round(max(self.grid.seconds(stop - self.start) - on, 0.05), 2)
        on += _jitter(beat, pitch, role)
        # A note begun before the segment (a held chord) sounds from where it has got to, so
        # the head of this segment matches the tail of the previous one sample for sample.
        skip = round(max(-on, 0.0), 6)
        drums = role == "drums"
        self.notes.append(
            Note(
                start=round(max(on, 0.0), 6),
                duration=duration,
                skip=skip,
                channel=DRUM_CHANNEL if drums else ROLES.index(role),
                program=self.programs["kit" if drums else role],
                pitch=min(max(int(pitch), 0), 127),
                velocity=min(max(round(velocity * (0.7 + 0.3 * self.intensity) / 4) * 4, 1), 127),
                role=role,
            )
        )


@dataclass(frozen=True)
class _Section:
    """Where a bar sits in the piece's form: its section letter, its bar within the 8-bar
    section (a phrase of two 4-bar halves) and the section's variation number."""

    letter: str
    bar: int  # 0..7
    variation: int  # the section count: every section is varied from the last

    @classmethod
    def of(cls, state: Mapping[str, Any], bar: int) -> _Section:
        """The section of ``bar`` (bars before phrase 0 count as the start of the form)."""
        number, inside = divmod(max(bar - state["bar0"], 0), SECTION_BARS)
        return cls(FORM[number % len(FORM)], inside, number)


def _section_chord(state: Mapping[str, Any], section: _Section) -> list[int]:
    """Three bars of the section's progression and a half cadence on V, then the
    progression's first chord, IV, V and a full cadence on I."""
    progression = state["progressions"][section.letter]
    degrees = [*progression, 4, progression[0], 3, 4, 0]
    degree = degrees[section.bar]
    return _chord(state, degree, dominant=degree == 4)


def _write_bar(w: _Writer, state: Mapping[str, Any], bar: int) -> None:
    """One 4/4 bar for every part: a transition (cue) chord or the section's."""
    cue = {int(c[0]): [int(p) for p in c[1:]] for c in state["cue"]}
    section = _Section.of(state, bar)
    chord = cue.get(bar) or _section_chord(state, section)
    w.play(state)
    b0 = bar * 4.0
    _write_accompaniment(w, b0, chord, section.variation)
    if state["drums"]:
        _write_drums(w, b0, section)
    if bar in cue:  # the new lead enters on the transition chord's third (the leading tone)
        w.add("lead", b0, 3.8, _voice(chord[1:2], 72)[0], 70 + 6 * w.level)
        if bar + 1 not in cue and state["drums"]:
            _write_fill(w, b0 + 4.0)
        return
    _write_melody(w, state, b0, chord, section)


def _write_accompaniment(w: _Writer, b0: float, chord: list[int], variation: int) -> None:
    """Pad, harmony and bass, their patterns by intensity, re-voiced every other section."""
    level, alt = w.level, variation % 2
    voiced = _voice(chord, 62 + 3 * alt)
    root = 36 + (chord[0] - 36) % 12
    for p in _voice(chord, 57 - 5 * alt):
        w.add("pad", b0, 4.0, p, 52 + 10 * level)
    if level == 0:
        rise = [*voiced[:3], voiced[0] + 12]
        shape = [*rise, *rise[::-1]] if alt else [*rise, *rise]
        for i, p in enumerate(shape):  # accented on the beat, so the pulse is heard
            w.add("harmony", b0 + i * 0.5, 1.5, p, 50 + 16 * (i % 2 == 0))
    elif level == 1:
        order = (0, 2, 1, 2) if alt else (0, 1, 2, 1)
        for i in range(8):
            w.add("harmony", b0 + i * 0.5, 0.5, voiced[order[i % 4]], 64 + 8 * (i % 2 == 0))
    else:
        for step in (0.0, 1.5, 2.5, 3.5) if alt else (0.0, 0.75, 2.0, 2.75):
            for p in voiced:
                w.add("harmony", b0 + step, 0.4, p, 86)
    fifth = root + 7
    pattern = {
        0: [(0.0, 4.0, root)] if not alt else [(0.0, 2.0, root), (2.0, 2.0, fifth - 12)],
        1: [(0.0, 2.0, root), (2.0, 1.5, fifth), (3.5, 0.5, root)],
        2: [(i * 0.5, 0.45, root + 12 * (i % 4 == 3 - alt)) for i in range(8)],
    }[level]
    for beat, length, p in pattern:
        w.add("bass", b0 + beat, length, p, 78 + 8 * level)


def _write_drums(w: _Writer, b0: float, section: _Section) -> None:
    d = GM_DRUMS
    hits = {
        0: [(0.0, d["kick"], 70), (2.0, d["stick"], 50)]
        + [(i * 1.0, d["ride"], 52) for i in range(4)]
        + [(i * 0.5 + 0.5, d["shaker"], 40) for i in range(0, 8, 2)],
        1: [
            (0.0, d["kick"], 90),
            (2.0, d["kick"], 84),
            (1.0, d["snare"], 80),
            (3.0, d["snare"], 82),
        ]
        + [(i * 0.5, d["hat"], 62 + 10 * (i % 2 == 0)) for i in range(8)],
        2: [
            (0.0, d["kick"], 110),
            (1.5, d["kick"], 96),
            (2.0, d["kick"], 104),
            (1.0, d["snare"], 104),
            (3.0, d["snare"], 108),
        ]
        + [(i * 0.25, d["hat"], 70 + 14 * (i % 2 == 0)) for i in range(16)],
    }[w.level]
    if section.bar == 0 and w.level > 0:
        hits.append((0.0, d["crash"], 90))
    if section.bar == SECTION_BARS - 1:  # the phrase ends with a fill
        hits = [h for h in hits if h[0] < 3.0]
        _write_fill(w, b0 + 4.0)
    for beat, pitch, velocity in hits:
        w.add("drums", b0 + beat, 0.25, pitch, velocity)


def _melody_line(
    state: Mapping[str, Any], chord: list[int], section: _Section
) -> list[tuple[float, float, int]]:
    """(beat in bar, beats, scale degree) of the lead in one bar: the section's motif from
    the chord root, a sequence a third higher, a half cadence on the supertonic, the tonic
    at the phrase end."""
    scale = _scale(state)
    offset = (chord[0] - state["tonic"]) % 12
    root = scale.index(offset) if offset in scale else 0
    if section.bar == 3:
        return [(0.0, 2.0, 2), (2.0, 1.9, 1)]
    if section.bar == SECTION_BARS - 1:
        return [(0.0, 3.5, 0)]
    half = 4.0 * (section.bar % 2)
    degree = root + (2 if section.bar == 2 else 0)
    motif = state["motifs"][section.letter]
    line = []
    for i, (beat, step) in enumerate(motif):
        degree += int(step)
        nxt = motif[i + 1][0] if i + 1 < len(motif) else 8.0
        if half <= beat < half + 4.0:
            line.append((beat - half, min(nxt - beat, 2.0) * 0.95, degree))
    return line


def _write_melody(
    w: _Writer, state: Mapping[str, Any], b0: float, chord: list[int], section: _Section
) -> None:
    """The lead's line, varied per section: up an octave every third section, an upper
    neighbour before its long notes every other one; calm B sections open without it."""
    if w.level == 0 and section.letter == "B" and section.bar < 4:
        return
    scale = _scale(state)
    base = 72 + state["tonic"] % 12 - 12 * (state["tonic"] > 6) + 12 * (section.variation % 3 == 2)
    for beat, beats, degree in _melody_line(state, chord, section):
        octave, idx = divmod(degree, 7)
        pitch = base + 12 * octave + scale[idx]
        if section.variation % 2 and beats >= 0.9:
            upper = base + 12 * ((degree + 1) // 7) + scale[(degree + 1) % 7]
            w.add("lead", b0 + beat, 0.45, upper, 72 + 6 * w.level)
            beat, beats = beat + 0.5, beats - 0.5
        w.add("lead", b0 + beat, beats, pitch, 76 + 6 * w.level)


def _write_fill(w: _Writer, beat: float) -> None:
    """A tom fill over one beat ending on ``beat`` (a downbeat)."""
    toms = [GM_DRUMS[t] for t in ("tom_hi", "tom_hi", "tom_mid", "tom_lo")]
    for i, pitch in enumerate(toms):
        w.add("drums", beat - 1.0 + i * 0.25, 0.25, pitch, 84 + 6 * i)


def _write_stinger(w: _Writer, state: Mapping[str, Any]) -> None:
    """Combat onset: crash, low timpani and a brass stab on the tonic chord at the downbeat."""
    w.play(state)
    w.add("drums", w.start, 0.5, GM_DRUMS["crash"], 120)
    w.add("drums", w.start, 0.5, GM_DRUMS["kick"], 120)
    w.notes.append(Note(0.0, 1.2, 4, 47, 36 + state["tonic"], 118, "stinger"))
    for p in _voice(_chord(state, 0), 60):
        w.notes.append(Note(0.0, 0.6, 5, 61, p, 112, "stinger"))


def _plan(
    params: MusicParams, seed: int, prev: Mapping[str, Any] | None, transition: str
) -> tuple[list[tuple[int, dict[str, Any]]], _Grid]:
    """The pieces that sound in this segment, each from its first bar, and the tempo grid.

    No anchor: a new piece opening IV-V with a one-bar ramp into its tempo. ``change``: the
    previous piece plays on to the next bar line, then the new scene's piece (its key, tempo,
    ensemble) enters through a pivot chord and the new dominant while the tempo ramps over a
    bar. ``continue``: the same piece; a caption that names another key modulates through
    the new dominant at the next bar line, another tempo ramps over a bar from the segment's
    second beat (ensemble unchanged).
    """
    rng = np.random.default_rng(seed)
    if prev is None:
        key = {"tonic": params.tonic, "minor": params.minor}
        piece = _new_piece(params, rng, 0, [_chord(key, 3), _dominant_seventh(key)])
        return [(0, piece)], _Grid.ramp(params.tempo * 0.85, 0.0, params.tempo)
    start = float(prev["beat"])
    bar = int(np.ceil(start / 4.0 - 1e-9))
    if transition == "change":
        piece = _new_piece(params, rng, bar, [])
        cue = _modulation(prev, piece)
        piece.update(cue=[[bar + i, *c] for i, c in enumerate(cue)], bar0=bar + len(cue))
    elif (params.tonic, params.minor) != (prev["tonic"], prev["minor"]):
        piece = {**prev, "tonic": params.tonic, "minor": params.minor}
        piece["cue"] = [[bar, *_dominant_seventh(piece)]]
    else:
        piece = dict(prev)
    piece.update(tempo=params.tempo, intensity=params.intensity)
    pieces = [(-(2**31), dict(prev)), (bar, piece)]  # dynamics too change at the bar line
    if abs(params.tempo / prev["tempo"] - 1.0) <= 0.01:
        return pieces, _Grid([(0.0, float(prev["tempo"]))])
    # The ramp starts a beat in (the crossfade with the previous tail stays on its grid),
    # not at the bar line: at 60 BPM waiting for it would hold the old tempo for 4 s.
    return pieces, _Grid.ramp(float(prev["tempo"]), min(bar * 4.0 - start, 1.0), params.tempo)


def arrange(
    params: MusicParams,
    duration_s: float,
    hop_s: float,
    seed: int,
    *,
    prev_state: Mapping[str, Any] | None,
    transition: str = "continue",
    stinger: bool = False,
) -> Arrangement:
    """Compose ``duration_s`` of music; ``hop_s`` is where the next segment will start.

    ``prev_state`` is the anchor (None at a start or restart); ``transition`` says whether
    this segment continues the anchor's piece or changes scene from it (see ``_plan``).
    The caption decides key, tempo and, at a scene's start, its ensemble and drums; within a
    scene it may change only dynamics and density. The piece has form: 8-bar sections in
    AABA order, each two 4-bar halves ending on a half and a full cadence, every section
    re-voiced and its melody varied, so no 4-bar phrase repeats itself exactly.
    """
    pieces, grid = _plan(params, seed, prev_state, transition)
    start_beat = float(prev_state["beat"]) if prev_state is not None else 0.0
    end_beat = start_beat + grid.beats(duration_s)
    writer = _Writer(grid, start_beat, end_beat)
    first_bar = int(start_beat // 4) - (prev_state is not None)  # notes held over into it
    for bar in range(first_bar, int(np.ceil(end_beat / 4.0)) + 1):
        state = next(s for first, s in reversed(pieces) if first <= bar)
        _write_bar(writer, state, bar)
    state = pieces[-1][1]
    if stinger:
        _write_stinger(writer, state)
    notes = sorted((n for n in writer.notes if n.start < duration_s), key=lambda n: n.start)
    keys = [(0.0, key_name(pieces[0][1]["tonic"], pieces[0][1]["minor"]))]
    if len(pieces) > 1 and key_name(state["tonic"], state["minor"]) != keys[0][1]:
        keys.append((pieces[-1][0] * 4.0 - start_beat, key_name(state["tonic"], state["minor"])))
    return Arrangement(
        notes=notes,
        tempo_changes=list(grid.points),
        state={**state, "beat": start_beat + grid.beats(hop_s)},
        key_changes=keys,
    )


def to_midi(arrangement: Arrangement) -> bytes:
    """The arrangement as a type-1 Standard MIDI File: a conductor track (tempo and key
    signatures) and one track per part. A note held over from the previous segment
    (``skip > 0``) is left out: it belongs to the previous segment's file, so the files of a
    run laid end to end hold every note once."""
    song = mido.MidiFile(type=1, ticks_per_beat=TICKS_PER_BEAT)
    meta = [
        (round(beat * TICKS_PER_BEAT), mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(bpm)))
        for beat, bpm in arrangement.tempo_changes
    ] + [
        (round(beat * TICKS_PER_BEAT), mido.MetaMessage("key_signature", key=key))
        for beat, key in arrangement.key_changes
    ]
    song.tracks.append(_track(sorted(meta, key=lambda event: event[0])))
    times = _seconds_to_ticks(arrangement.tempo_changes)
    by_channel: dict[int, list[Note]] = {}
    for note in arrangement.notes:
        if note.skip == 0.0:
            by_channel.setdefault(note.channel, []).append(note)
    for channel, notes in sorted(by_channel.items()):
        events = [(0, -1, mido.MetaMessage("track_name", name=notes[0].role))]
        program = None
        for n in notes:  # in time order
            on = times(n.start)
            if channel != DRUM_CHANNEL and n.program != program:
                program = n.program
                events.append((on, 0, _message("program_change", channel, program=program)))
            off = max(on, times(n.start + n.duration))
            events.append((on, 2, _message("note_on", channel, note=n.pitch, velocity=n.velocity)))
            events.append((off, 1, _message("note_off", channel, note=n.pitch, velocity=0)))
        song.tracks.append(_track([(t, m) for t, _, m in sorted(events, key=lambda e: e[:2])]))
    buffer = io.BytesIO()
    song.save(file=buffer)
    return buffer.getvalue()


def _message(kind: str, channel: int, **values: int) -> mido.Message:
    """A channel message built without mido's per-field checks: ``_Writer.add`` clamps
    pitches and velocities into MIDI's range and programs come from General MIDI tables, and
    checking every note of an hour of music cost a tenth of the render."""
    return mido.Message(kind, skip_checks=True, channel=channel, time=0, **values)


def _track(events: list[tuple[int, Any]]) -> mido.MidiTrack:
    """A MIDI track from (absolute tick, message) pairs in time order."""
    track, last = mido.MidiTrack(), 0
    for tick, message in events:
        message.time = tick - last  # each message object is used once
        track.append(message)
        last = tick
    return track


def _seconds_to_ticks(tempo_changes: list[tuple[float, float]]):
    """A function mapping seconds to MIDI ticks under the given tempo changes."""
    beats = [float(b) for b, _ in tempo_changes]
    bpms = [float(t) for _, t in tempo_changes]
    starts = [0.0, *np.cumsum(np.diff(beats) * 60.0 / np.array(bpms[:-1])).tolist()]

    def ticks(seconds: float) -> int:
        i = bisect.bisect_right(starts, seconds) - 1
        beat = beats[i] + (seconds - starts[i]) * bpms[i] / 60.0
        return round(beat * TICKS_PER_BEAT)

    return ticks
