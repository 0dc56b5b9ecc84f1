"""The whole recording as one Standard MIDI File (``track.mid``) to open in a DAW.

A backend that composes symbolically (the synth) leaves a MIDI file per segment. Segment k
sits at its window's ``start_s`` in the track, like its audio, and owns the notes that begin
before the next segment does (a segment's MIDI leaves out the notes it merely holds over, so
laid end to end the segments hold every note once). The score gathers those notes in seconds,
then writes them on one tempo map built from the segments' ``set_tempo`` events:

- a conductor track with every ``set_tempo`` and ``key_signature`` where it changes and a
  ``marker`` (named by the scene) at the recording's start and at each scene change or restart;
- one track per instrument role (lead, harmony, pad, bass, stinger, drums), each with its
  ``program_change`` wherever the scene's ensemble changes.
"""

from __future__ import annotations

import io
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import mido
import numpy as np
import polars as pl
from mido.midifiles.midifiles import DEFAULT_TEMPO

from bgm_batch.atomic import write_bytes
from bgm_batch.stages.transitions import ANCHORED

TICKS_PER_BEAT = 480
ROLE_OF_CHANNEL = {0: "lead", 1: "harmony", 2: "pad", 3: "bass", 4: "stinger", 5: "stinger"}
DRUM_CHANNEL = 9
MARKED = ("start", "change", "restart")
STATED = {"set_tempo": "tempo", "key_signature": "key"}
NOTE_OFF_VELOCITY = 64  # the MIDI default for a note-off (mido's too)


@dataclass(frozen=True)
class _Event:
    """A meta message (tempo, key, marker) at an absolute time in the track (seconds)."""

    seconds: float  # (the conductor track keeps equal times in the order gathered)
    message: mido.MetaMessage


class _ChannelEvents:
    """The recording's channel messages (program changes, note-ons and note-offs) in
    compact arrays, about 12 bytes each: an hour of music holds some 100,000, which as mido
    objects took 22 MB, so the memory of a long recording grew with its length."""

    ORDER = {"program_change": 1, "note_off": 2, "note_on": 3}  # at equal times

    def __init__(self) -> None:
        self.seconds = array("d")
        self.order = array("b")
        self.channel = array("B")
        self.data = array("B")  # note or program
        self.velocity = array("B")

    def add(self, seconds: float, kind: str, channel: int, data: int, velocity: int = 0) -> None:
        self.seconds.append(seconds)
        self.order.append(self.ORDER[kind])
        self.channel.append(channel)
        self.data.append(data)
        self.velocity.append(velocity)

    def channels(self) -> list[int]:
        return sorted(set(self.channel))

    def track(self, channel: int, ticks: Callable[[np.ndarray], np.ndarray]) -> Iterator:
        """One channel's messages in time order with delta ticks, made one by one as mido
        writes them; a program change that restates the channel's program is left out."""
        seconds = np.frombuffer(self.seconds)
        order = np.frombuffer(self.order, dtype=np.int8)
        mine = np.flatnonzero(np.frombuffer(self.channel, dtype=np.uint8) == channel)
        mine = mine[np.lexsort((order[mine], seconds[mine]))]  # stable: ties keep file order
        programs = mine[order[mine] == self.ORDER["program_change"]]
        values = np.frombuffer(self.data, dtype=np.uint8)[programs]
        mine = mine[~np.isin(mine, programs[1:][values[1:] == values[:-1]])]
        deltas = _delta_ticks(seconds[mine], ticks)
        kinds = {v: k for k, v in self.ORDER.items()}
        for i, delta in zip(mine, deltas, strict=True):  # one message at a time: no lists
            kind, value, time = kinds[self.order[i]], self.data[i], int(delta)
            if kind == "program_change":
                yield mido.Message(kind, True, channel=channel, program=value, time=time)
            else:
                velocity = self.velocity[i]
                yield mido.Message(
                    kind, True, channel=channel, note=value, velocity=velocity, time=time
                )


def _segment_events(
    path: Path, offset: float, until: float, meta: list[_Event], notes: _ChannelEvents
) -> None:
    """Gather the events of one segment file that belong to it: notes that begin before
    ``until`` seconds (with their note-offs, wherever they fall), tempo and key changes
    before it."""
    sounding: set[tuple[int, int]] = set()
    for seconds, message in _in_seconds(mido.MidiFile(path)):
        at = offset + seconds
        if message.type in ("set_tempo", "key_signature") and seconds < until:
            meta.append(_Event(at, message))
        elif message.type == "program_change" and seconds < until:
            notes.add(at, "program_change", message.channel, message.program)
        elif message.type == "note_on" and message.velocity and seconds < until:
            sounding.add((message.channel, message.note))
            notes.add(at, "note_on", message.channel, message.note, message.velocity)
        elif (
            message.type in ("note_off", "note_on") and (message.channel, message.note) in sounding
        ):
            sounding.discard((message.channel, message.note))
            notes.add(at, "note_off", message.channel, message.note, NOTE_OFF_VELOCITY)


def _in_seconds(midi: mido.MidiFile) -> Iterator[tuple[float, mido.Message]]:
    """The file's messages (end-of-track markers left out) in time order, ties in track
    order, each with its time in seconds: the times that iterating a ``mido.MidiFile`` gives,
    summed the same way, without the three copies of every message that iteration makes
    (a fifth of the time an hour's score took)."""
    timed = []
    for track in midi.tracks:
        ticks = 0
        for message in track:
            ticks += message.time
            if message.type != "end_of_track":
                timed.append((ticks, message))
    timed.sort(key=lambda item: item[0])  # stable
    tempo, seconds, last = DEFAULT_TEMPO, 0.0, 0  # mido's 120 BPM before any set_tempo
    for ticks, message in timed:
        if ticks > last:
            seconds += mido.tick2second(ticks - last, midi.ticks_per_beat, tempo)
            last = ticks
        yield seconds, message
        if message.type == "set_tempo":
            tempo = message.tempo


def _delta_ticks(seconds: np.ndarray, ticks: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Delta ticks of events in time order (rounding never steps back in time)."""
    return np.diff(np.maximum.accumulate(ticks(seconds)), prepend=0)


def _tick_map(tempos: list[_Event]) -> Callable[[np.ndarray], np.ndarray]:
    """Seconds -> ticks under the track's tempo map (120 BPM until its first ``set_tempo``)."""
    starts = np.array([0.0] + [e.seconds for e in tempos])
    per_second = np.array([2.0] + [1e6 / e.message.tempo for e in tempos]) * TICKS_PER_BEAT
    ticks_at = np.concatenate([[0.0], np.cumsum(np.diff(starts) * per_second[:-1])])

    def ticks(seconds: np.ndarray) -> np.ndarray:
        i = np.searchsorted(starts, seconds, side="right") - 1
        return np.rint(ticks_at[i] + (seconds - starts[i]) * per_second[i]).astype(np.int64)

    return ticks


def _deduplicated(events: list[_Event]) -> list[_Event]:
    """Tempo and key changes without restatements: each segment restates its tempo and key
    at its start; only real changes stay."""
    kept: list[_Event] = []
    last: dict[str, object] = {}
    for event in sorted(events, key=lambda e: e.seconds):
        value = getattr(event.message, STATED[event.message.type])
        if last.get(event.message.type) != value:
            kept.append(event)
            last[event.message.type] = value
    return kept


def _conductor(events: list[_Event], ticks: Callable[[np.ndarray], np.ndarray]) -> Iterator:
    events = sorted(events, key=lambda e: e.seconds)
    deltas = _delta_ticks(np.array([e.seconds for e in events]), ticks)
    for event, delta in zip(events, deltas.tolist(), strict=True):
        event.message.time = delta  # each event's message is its own
        yield event.message


def _named(name: str, messages: Iterator) -> Iterator:
    """A track for ``mido.MidiFile.save``, which takes any iterable of messages: its name,
    then its messages as they are made."""
    yield mido.MetaMessage("track_name", name=name, time=0)
    yield from messages


def score_midi(rows: pl.DataFrame, segment_seconds: float) -> bytes | None:
    """The whole-recording MIDI file of one recording's rows (``index``, ``start_s``,
    ``transition``, ``scene``, ``midi_path``), or None when no segment has MIDI."""
    rows = rows.filter(pl.col("midi_path").is_not_null()).sort("index")
    if rows.is_empty():
        return None
    starts = rows["start_s"].to_list()
    # a segment owns its notes up to the next segment of its run (across a bridged gap too)
    follows = [t in ANCHORED for t in rows["transition"].to_list()[1:]] + [False]
    ends = [
        nxt if anchored else start + segment_seconds
        for start, nxt, anchored in zip(starts, [*starts[1:], 0.0], follows, strict=True)
    ]
    meta: list[_Event] = []
    notes = _ChannelEvents()
    for path, start, end in zip(rows["midi_path"], starts, ends, strict=True):
        _segment_events(Path(path), start, end - start, meta, notes)
    conductor = _deduplicated(meta)
    ticks = _tick_map([e for e in conductor if e.message.type == "set_tempo"])
    conductor += [
        _Event(start, mido.MetaMessage("marker", text=scene))
        for start, scene, transition in rows.select("start_s", "scene", "transition").iter_rows()
        if transition in MARKED
    ]
    song = mido.MidiFile(type=1, ticks_per_beat=TICKS_PER_BEAT)
    song.tracks.append(_named("conductor", _conductor(conductor, ticks)))
    for channel in notes.channels():
        name = "drums" if channel == DRUM_CHANNEL else ROLE_OF_CHANNEL.get(channel, "part")
        song.tracks.append(_named(name, notes.track(channel, ticks)))
    out = io.BytesIO()
    song.save(file=out)
    return out.getvalue()


def write_score_midis(
    frame: pl.DataFrame, segments: pl.DataFrame, track_paths: dict[str, Path], segment_s: float
) -> dict[str, Path]:
    """``track.mid`` next to each recording's track (same name, ``.mid``) from the planned
    frame and the rendered segments; recordings without MIDI get none."""
    joined = frame.join(
        segments.select("recording", "index", "midi_path"), on=["recording", "index"]
    )
    written = {}
    for recording, path in track_paths.items():
        rows = joined.filter(pl.col("recording") == recording)
        data = score_midi(rows, segment_s)
        if data is not None:
            written[recording] = Path(path).with_suffix(".mid")
            write_bytes(written[recording], data)
    return written
