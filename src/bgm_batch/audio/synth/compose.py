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
# Progressions as scale degrees (0 = tonic), one chord per bar.
PROGRESSIONS = {
    False: ((0, 5, 3, 4), (0, 3, 4, 3), (0, 4, 5, 3), (3, 0, 4, 5)),
    True: ((0, 5, 2, 6), (0, 3, 6, 2), (0, 5, 3, 4), (0, 6, 5, 6)),
}
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
    """A segment's notes, its tempo map and the state the next segment continues from."""

    notes: list[Note]
    tempo_changes: list[tuple[float, float]]  # (beat from segment start, BPM)
    state: dict[str, Any] = field(default_factory=dict)


def parse_caption(caption: str) -> MusicParams:
    """Read tempo, mode, key, intensity and instruments from a free-text music caption."""
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
    return MusicParams(
        tempo=float(np.clip(tempo, 50.0, 190.0)),
        minor=minor,
        tonic=tonic,
        intensity=intensity,
        programs=programs,
    )


class _Grid:
    """Beat <-> seconds for one segment: an optional one-bar tempo ramp, then a constant
    tempo. Beats count from the segment start."""

    def __init__(self, ramp_from: float | None, tempo: float):
        self.tempo = tempo
        self.ramp = (
            []
            if ramp_from is None
            else [float(t) for t in np.linspace(ramp_from, tempo, RAMP_BEATS + 1)[:-1]]
        )
        self.times = np.concatenate([[0.0], np.cumsum(60.0 / np.asarray(self.ramp))])

    def seconds(self, beat: float) -> float:
        """Seconds from the segment start at ``beat``."""
        n = len(self.ramp)
        if beat < 0:  # a note begun before the segment
            return beat * 60.0 / (self.ramp[0] if self.ramp else self.tempo)
        if beat < n:
            i = int(beat)
            return float(self.times[i] + (beat - i) * 60.0 / self.ramp[i])
        return float(self.times[-1] + (beat - n) * 60.0 / self.tempo)

    def beats(self, seconds: float) -> float:
        """Inverse of ``seconds``."""
        ramp_s = float(self.times[-1])
        if seconds >= ramp_s:
            return len(self.ramp) + (seconds - ramp_s) * self.tempo / 60.0
        i = int(np.searchsorted(self.times, seconds, side="right")) - 1
        return i + (seconds - float(self.times[i])) * self.ramp[i] / 60.0


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


def _new_state(params: MusicParams, rng: np.random.Generator) -> dict[str, Any]:
    """The musical identity of a run: key, tempo, progression and melodic motif."""
    tonic = params.tonic
    progressions = PROGRESSIONS[params.minor]
    motif_steps = rng.choice([0, 1, 2, 1, 0, -1, -2, 2], size=6)
    motif_rhythm = sorted(rng.choice(np.arange(0, 8, 0.5), size=6, replace=False).tolist())
    return {
        "tonic": tonic,
        "minor": params.minor,
        "tempo": params.tempo,
        "progression": list(progressions[int(rng.integers(len(progressions)))]),
        "motif": [[float(b), int(s)] for b, s in zip(motif_rhythm, motif_steps, strict=True)],
        "beat": 0.0,  # the grid position where the segment starts
        "pivot_bars": 2,  # a fresh run opens IV, V, then its progression
    }


def _departs(state: Mapping[str, Any], params: MusicParams) -> bool:
    """Does the caption ask for clearly different music than the anchor plays?"""
    ratio = params.tempo / state["tempo"]
    return params.minor != state["minor"] or not 0.85 <= ratio <= 1.18


def _jitter(beat: float, pitch: int, role: str) -> float:
    """Humanised timing, up to 6 ms either way: a function of the note's place on the grid,
    so two segments that both play a note agree on when it began. (Velocities are not
    humanised: every distinct velocity is another note for the synth backend to render.)"""
    return (zlib.crc32(f"{beat:.4f}/{pitch}/{role}".encode()) % 1201 - 600) / 100_000


class _Writer:
    """Collects notes on the beat grid, clipped to the segment."""

    def __init__(self, grid: _Grid, start_beat: float, end_beat: float, params: MusicParams):
        self.grid, self.start, self.end = grid, start_beat, end_beat
        self.params = params
        self.notes: list[Note] = []

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
                channel=DRUM_CHANNEL if drums else ("lead", "harmony", "pad", "bass").index(role),
                program=self.params.programs["kit" if drums else role],
                pitch=int(pitch),
                velocity=min(
                    max(round(velocity * (0.7 + 0.3 * self.params.intensity) / 4) * 4, 1), 127
                ),
                role=role,
            )
        )


def _bar_chord(state: Mapping[str, Any], bar: int) -> list[int]:
    """Pitch classes of a bar's chord. A run that opens with a transition plays its pivot
    chord (IV, common to the old key and the new one) and the dominant first."""
    if bar < state["pivot_bars"]:
        return _chord(state, 3) if bar == 0 else _chord(state, 4, dominant=True)
    progression = state["progression"]
    return _chord(state, progression[(bar - state["pivot_bars"]) % len(progression)])


def _write_bar(w: _Writer, state: Mapping[str, Any], bar: int, chord: list[int]) -> None:
    """One 4/4 bar for every part, shaped by intensity."""
    level = 0 if w.params.intensity < 0.4 else 1 if w.params.intensity < 0.7 else 2
    b0 = bar * 4.0
    voiced = _voice(chord, 62)
    root = 36 + (chord[0] - 36) % 12
    # Pad: the chord held for the bar.
    for p in _voice(chord, 57):
        w.add("pad", b0, 4.0, p, 52 + 10 * level)
    # Harmony: arpeggio (calm), broken chord eighths (moderate), offbeat stabs (intense).
    if level == 0:
        for i, p in enumerate([*voiced, voiced[0] + 12, *voiced[::-1]][:8]):
            w.add("harmony", b0 + i * 0.5, 1.5, p, 58)
    elif level == 1:
        for i in range(8):
            w.add("harmony", b0 + i * 0.5, 0.5, voiced[(0, 2, 1, 2)[i % 4]], 64 + 8 * (i % 2 == 0))
    else:
        for step in (0.0, 1.5, 2.5, 3.5):
            for p in voiced:
                w.add("harmony", b0 + step, 0.4, p, 86)
    # Bass: whole note, root + fifth, driving eighths.
    fifth = root + 7
    pattern = {
        0: [(0.0, 4.0, root)],
        1: [(0.0, 2.0, root), (2.0, 1.5, fifth), (3.5, 0.5, root)],
        2: [(i * 0.5, 0.45, root + 12 * (i % 4 == 3)) for i in range(8)],
    }[level]
    for beat, length, p in pattern:
        w.add("bass", b0 + beat, length, p, 78 + 8 * level)
    _write_drums(w, b0, level, bar)
    _write_melody(w, state, b0, chord, level, bar)


def _write_drums(w: _Writer, b0: float, level: int, bar: int) -> None:
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
    }[level]
    if bar % 4 == 0 and level > 0:
        hits.append((0.0, d["crash"], 90))
    for beat, pitch, velocity in hits:
        w.add("drums", b0 + beat, 0.25, pitch, velocity)


def _write_melody(
    w: _Writer, state: Mapping[str, Any], b0: float, chord: list[int], level: int, bar: int
) -> None:
    """The run's motif, two bars long, replayed from the current chord's root."""
    if level == 0 and bar % 4 >= 2:
        return  # calm music breathes: the lead rests every other phrase
    scale = _scale(state)
    degree0 = (
        scale.index((chord[0] - state["tonic"]) % 12)
        if ((chord[0] - state["tonic"]) % 12 in scale)
        else 0
    )
    half = (bar % 2) * 4.0
    motif = state["motif"]
    degree = degree0 + 2 * (bar % 2)
    for i, (beat, step) in enumerate(motif):
        degree += step
        if not half <= beat < half + 4.0:
            continue
        nxt = motif[i + 1][0] if i + 1 < len(motif) else 8.0
        octave, idx = divmod(degree, 7)
        pitch = 72 + state["tonic"] % 12 - 12 * (state["tonic"] > 6) + 12 * octave + scale[idx]
        w.add("lead", b0 + beat - half, min(nxt - beat, 2.0) * 0.95, pitch, 76 + 6 * level)


def _write_fill(w: _Writer, beat: float) -> None:
    """A tom fill over one beat ending on ``beat`` (a downbeat)."""
    toms = [GM_DRUMS[t] for t in ("tom_hi", "tom_hi", "tom_mid", "tom_lo")]
    for i, pitch in enumerate(toms):
        w.add("drums", beat - 1.0 + i * 0.25, 0.25, pitch, 84 + 6 * i)


def _write_stinger(w: _Writer, state: Mapping[str, Any]) -> None:
    """Combat onset: crash, low timpani and a brass stab on the tonic chord at the downbeat."""
    w.add("drums", w.start, 0.5, GM_DRUMS["crash"], 120)
    w.add("drums", w.start, 0.5, GM_DRUMS["kick"], 120)
    w.notes.append(Note(0.0, 1.2, 4, 47, 36 + state["tonic"], 118, "stinger"))
    for p in _voice(_chord(state, 0), 60):
        w.notes.append(Note(0.0, 0.6, 5, 61, p, 112, "stinger"))


def arrange(
    params: MusicParams,
    duration_s: float,
    hop_s: float,
    seed: int,
    *,
    prev_state: Mapping[str, Any] | None,
    stinger: bool = False,
) -> Arrangement:
    """Compose ``duration_s`` of music; ``hop_s`` is where the next segment will start.

    Continues ``prev_state`` when given (same key, tempo, progression, motif, on the same beat
    grid); modulates with a pivot chord, tempo ramp and fill when the caption departs from it;
    opens a fresh run with a fill, a ramp into its tempo and IV-V-I otherwise.
    """
    rng = np.random.default_rng(seed)
    fresh = _new_state(params, rng)
    if prev_state is not None and not _departs(prev_state, params):
        state, ramp_from = dict(prev_state), None
    elif prev_state is not None:
        state = {**fresh, "tonic": _pivot_tonic(prev_state, params)}
        ramp_from = float(prev_state["tempo"])
    else:
        state, ramp_from = fresh, params.tempo * 0.85
    start_beat = float(state["beat"])
    grid = _Grid(ramp_from, state["tempo"])
    end_beat = start_beat + grid.beats(duration_s)
    writer = _Writer(grid, start_beat, end_beat, params)
    for bar in range(int(start_beat // 4), int(np.ceil(end_beat / 4.0)) + 1):
        _write_bar(writer, state, bar, _bar_chord(state, bar))
    if ramp_from is not None:
        _write_fill(writer, 4.0 * state["pivot_bars"])
    if stinger:
        _write_stinger(writer, state)
    notes = sorted((n for n in writer.notes if n.start < duration_s), key=lambda n: n.start)
    tempo_changes = [(float(i), t) for i, t in enumerate(grid.ramp)]
    tempo_changes.append((float(len(grid.ramp)), float(state["tempo"])))
    next_state = {**state, "beat": start_beat + grid.beats(hop_s)}
    return Arrangement(notes=notes, tempo_changes=tempo_changes, state=next_state)


def _pivot_tonic(prev_state: Mapping[str, Any], params: MusicParams) -> int:
    """The new key: the relative key when the mode flips (it shares every chord with the old
    one, so the modulation pivots smoothly), else the caption's."""
    if params.minor != prev_state["minor"]:
        return (prev_state["tonic"] + (9 if params.minor else 3)) % 12
    return params.tonic


def to_midi(arrangement: Arrangement) -> bytes:
    """The arrangement as a type-1 Standard MIDI File (tempo track + one track per part)."""
    song = mido.MidiFile(type=1, ticks_per_beat=TICKS_PER_BEAT)
    tempo_track = mido.MidiTrack()
    song.tracks.append(tempo_track)
    last = 0
    for beat, bpm in arrangement.tempo_changes:
        tick = round(beat * TICKS_PER_BEAT)
        tempo_track.append(
            mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(bpm), time=tick - last)
        )
        last = tick
    times = _seconds_to_ticks(arrangement.tempo_changes)
    by_channel: dict[int, list[Note]] = {}
    for note in arrangement.notes:
        by_channel.setdefault(note.channel, []).append(note)
    for channel, notes in sorted(by_channel.items()):
        track = mido.MidiTrack()
        track.append(mido.MetaMessage("track_name", name=notes[0].role))
        if channel != DRUM_CHANNEL:
            track.append(mido.Message("program_change", channel=channel, program=notes[0].program))
        # a held-over note (skip > 0) may end within its first tick: never before it starts
        events = sorted(
            [(times(n.start), 1, n.pitch, n.velocity) for n in notes]
            + [
                (max(times(n.start), times(n.start + n.duration - n.skip)), 0, n.pitch, 0)
                for n in notes
            ]
        )
        last = 0
        for tick, is_on, pitch, velocity in events:
            kind = "note_on" if is_on else "note_off"
            track.append(
                mido.Message(
                    kind,
                    channel=channel,
                    note=pitch,
                    velocity=velocity,
                    time=tick - last,
                    skip_checks=True,
                )
            )
            last = tick
        song.tracks.append(track)
    buffer = io.BytesIO()
    song.save(file=buffer)
    return buffer.getvalue()


def _seconds_to_ticks(tempo_changes: list[tuple[float, float]]):
    """A function mapping seconds to MIDI ticks under the given tempo changes."""
    beats = np.array([b for b, _ in tempo_changes])
    bpms = np.array([t for _, t in tempo_changes])
    starts = np.concatenate([[0.0], np.cumsum(np.diff(beats) * 60.0 / bpms[:-1])])

    def ticks(seconds: float) -> int:
        i = int(np.searchsorted(starts, seconds, side="right")) - 1
        beat = beats[i] + (seconds - starts[i]) * bpms[i] / 60.0
        return round(beat * TICKS_PER_BEAT)

    return ticks
