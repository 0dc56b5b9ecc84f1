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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mido
import numpy as np
import polars as pl

from bgm_batch.atomic import write_bytes
from bgm_batch.stages.transitions import ANCHORED

TICKS_PER_BEAT = 480
ROLE_OF_CHANNEL = {0: "lead", 1: "harmony", 2: "pad", 3: "bass", 4: "stinger", 5: "stinger"}
DRUM_CHANNEL = 9
MARKED = ("start", "change", "restart")
STATED = {"set_tempo": "tempo", "key_signature": "key", "program_change": "program"}


@dataclass(frozen=True)
class _Event:
    """A MIDI message at an absolute time in the track (seconds)."""

    seconds: float
    order: int  # at equal times: meta, program, note off, note on
    message: mido.Message | mido.MetaMessage


def _segment_events(path: Path, offset: float, until: float) -> Iterator[_Event]:
    """The events of one segment file that belong to it: notes that begin before ``until``
    seconds (with their note-offs, wherever they fall), tempo and key changes before it.
    Iterating a ``MidiFile`` yields fresh message objects, so each event keeps its own, and
    ``_track`` sets its delta time in place (copying every message of an hour, each copy
    checked field by field, took most of this stage)."""
    sounding: set[tuple[int, int]] = set()
    seconds = 0.0
    for message in mido.MidiFile(path):  # merged tracks, delta times in seconds
        seconds += message.time
        at = offset + seconds
        if message.type in ("set_tempo", "key_signature") and seconds < until:
            yield _Event(at, 0, message)
        elif message.type == "program_change" and seconds < until:
            yield _Event(at, 1, message)
        elif message.type == "note_on" and message.velocity and seconds < until:
            sounding.add((message.channel, message.note))
            yield _Event(at, 3, message)
        elif (
            message.type in ("note_off", "note_on") and (message.channel, message.note) in sounding
        ):
            sounding.discard((message.channel, message.note))
            channel, note = message.channel, message.note
            yield _Event(at, 2, mido.Message("note_off", True, channel=channel, note=note))


def _tick_map(tempos: list[_Event]):
    """Seconds -> ticks under the track's tempo map (120 BPM until its first ``set_tempo``)."""
    starts = np.array([0.0] + [e.seconds for e in tempos])
    per_second = np.array([2.0] + [1e6 / e.message.tempo for e in tempos]) * TICKS_PER_BEAT
    ticks_at = np.concatenate([[0.0], np.cumsum(np.diff(starts) * per_second[:-1])])

    def ticks(seconds: float) -> int:
        i = int(np.searchsorted(starts, seconds, side="right")) - 1
        return round(ticks_at[i] + (seconds - starts[i]) * per_second[i])

    return ticks


def _deduplicated(events: list[_Event]) -> list[_Event]:
    """Events without restatements: each segment restates its tempo, key and programs at
    its start; only real changes stay. Notes pass through."""
    kept: list[_Event] = []
    last: dict[tuple, object] = {}
    for event in sorted(events, key=lambda e: (e.seconds, e.order)):
        message = event.message
        if message.type not in STATED:
            kept.append(event)
            continue
        slot = (message.type, getattr(message, "channel", None))
        value = getattr(message, STATED[message.type])
        if last.get(slot) != value:
            kept.append(event)
            last[slot] = value
    return kept


def _track(name: str, events: list[_Event], ticks) -> mido.MidiTrack:
    track = mido.MidiTrack([mido.MetaMessage("track_name", name=name, time=0)])
    last = 0
    for event in sorted(events, key=lambda e: (e.seconds, e.order)):
        tick = max(ticks(event.seconds), last)
        event.message.time = tick - last  # each event's message is its own (above)
        track.append(event.message)
        last = tick
    return track


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
    events = _deduplicated(
        [
            event
            for path, start, end in zip(rows["midi_path"], starts, ends, strict=True)
            for event in _segment_events(Path(path), start, end - start)
        ]
    )
    conductor = [e for e in events if e.message.is_meta]
    conductor += [
        _Event(start, 0, mido.MetaMessage("marker", text=scene))
        for start, scene, transition in rows.select("start_s", "scene", "transition").iter_rows()
        if transition in MARKED
    ]
    ticks = _tick_map([e for e in conductor if e.message.type == "set_tempo"])
    song = mido.MidiFile(type=1, ticks_per_beat=TICKS_PER_BEAT)
    song.tracks.append(_track("conductor", conductor, ticks))
    by_channel: dict[int, list[_Event]] = {}
    for event in events:
        if not event.message.is_meta:
            by_channel.setdefault(event.message.channel, []).append(event)
    for channel, channel_events in sorted(by_channel.items()):
        name = "drums" if channel == DRUM_CHANNEL else ROLE_OF_CHANNEL.get(channel, "part")
        song.tracks.append(_track(name, channel_events, ticks))
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
