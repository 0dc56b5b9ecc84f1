"""``track.mid``: the whole recording's score from the synth's segment MIDI files."""

from __future__ import annotations

import tracemalloc

import mido
import polars as pl

from bgm_batch.audio.synth.compose import arrange, parse_caption, to_midi
from bgm_batch.stages.score_midi import _in_seconds, score_midi, write_score_midis

PLAINS = "A calm, warm classical piece at 92 BPM in G major, with soft piano and strings."
FIGHT = "Tense epic cinematic music at 150 BPM in E minor, with pounding drums and brass."
PLAN = [("start", PLAINS), ("continue", PLAINS), ("change", FIGHT), ("continue", FIGHT)]


def segments(tmp_path):
    """Four synth segments of one run, written as the render stage writes them."""
    rows, state, owned = [], None, 0
    for index, (transition, caption) in enumerate(PLAN):
        arrangement = arrange(
            parse_caption(caption),
            11.0,
            10.0,
            index,
            prev_state=state,
            transition=transition,
        )
        state = arrangement.state
        path = tmp_path / f"{index:06d}.mid"
        path.write_bytes(to_midi(arrangement))
        owned += sum(n.skip == 0 and (n.start < 10.0) for n in arrangement.notes)
        rows.append(
            {
                "recording": "r",
                "index": index,
                "start_s": 10.0 * index,
                "transition": transition,
                "scene": "fight" if caption == FIGHT else "plains",
                "midi_path": str(path),
            }
        )
    return pl.DataFrame(rows), owned


def test_the_whole_recording_in_one_file(tmp_path):
    frame, owned = segments(tmp_path)
    written = write_score_midis(
        frame.drop("midi_path"),
        frame.select("recording", "index", "midi_path"),
        {"r": tmp_path / "track.flac"},
        10.0,
    )
    song = mido.MidiFile(written["r"])
    assert written["r"].name == "track.mid" and song.type == 1
    names = [track.name for track in song.tracks]
    assert names[0] == "conductor" and {"lead", "harmony", "pad", "bass", "drums"} <= set(names)
    conductor = song.tracks[0]
    tempos = [round(mido.tempo2bpm(m.tempo)) for m in conductor if m.type == "set_tempo"]
    assert tempos[0] < 92 and 92 in tempos and tempos[-1] == 150  # opening ramp, scene ramp
    assert [m.key for m in conductor if m.type == "key_signature"] == ["G", "Em"]
    assert [m.text for m in conductor if m.type == "marker"] == ["plains", "fight"]
    notes = [m for track in song.tracks for m in track if m.type == "note_on" and m.velocity]
    assert len(notes) == owned  # every note once: no overlap doubled, none lost
    lead = next(track for track in song.tracks if track.name == "lead")
    programs = [m.program for m in lead if m.type == "program_change"]
    assert programs == [73, 56]  # the ensemble changes with the scene, only then
    assert 38.0 < song.length < 42.0


def test_no_midi_no_score(tmp_path):
    frame, _ = segments(tmp_path)
    none = frame.with_columns(pl.lit(None, dtype=pl.String).alias("midi_path"))
    assert write_score_midis(frame, none.select("recording", "index", "midi_path"), {}, 10.0) == {}
    assert (
        write_score_midis(
            frame.drop("midi_path"),
            none.select("recording", "index", "midi_path"),
            {"r": tmp_path / "track.flac"},
            10.0,
        )
        == {}
    )


def test_a_long_recording_holds_its_notes_compactly(tmp_path):
    """The score's memory grows by under 200 bytes per note with the recording's length
    (the four files above reused as a longer recording; as mido objects, it grew by about
    900 bytes per note: 23 MB per hour of music)."""
    frame, owned = segments(tmp_path)

    def peak(repeats: int) -> tuple[int, int]:
        long = pl.concat(
            frame.with_columns(
                pl.col("index") + 4 * k,
                pl.col("start_s") + 40.0 * k,
                pl.when(pl.col("transition") == "start")
                .then(pl.lit("continue" if k else "start"))
                .otherwise(pl.col("transition"))
                .alias("transition"),
            )
            for k in range(repeats)
        )
        tracemalloc.start()
        try:
            data = score_midi(long, 10.0)
            return tracemalloc.get_traced_memory()[1], len(data or b"")
        finally:
            tracemalloc.stop()

    (short, _), (long, size) = peak(5), peak(25)
    assert size > 20 * 5 * owned  # every note there: on and off, at least 2 bytes each
    assert (long - short) / (20 * owned) < 200


def test_segment_times_match_midos_own_iteration():
    """The score reads each segment's messages with their times in seconds without mido's
    copies: the same messages, order and float times as iterating the ``MidiFile``, here on
    a file with tempo changes inside it, messages tied across tracks and an end-of-track
    marker that carries time."""
    midi = mido.MidiFile(type=1, ticks_per_beat=96)
    conductor = mido.MidiTrack(
        [
            mido.MetaMessage("set_tempo", tempo=600_000, time=0),
            mido.MetaMessage("set_tempo", tempo=410_000, time=37),
            mido.MetaMessage("key_signature", key="Em", time=0),
            mido.MetaMessage("set_tempo", tempo=1_000_003, time=211),
            mido.MetaMessage("end_of_track", time=5),
        ]
    )
    notes = mido.MidiTrack()
    for step, pitch in enumerate((60, 64, 67, 72, 76)):
        notes.append(mido.Message("note_on", note=pitch, velocity=80, time=37 if step else 0))
        notes.append(mido.Message("note_off", note=pitch, time=53 + step))
    notes.append(mido.MetaMessage("end_of_track", time=0))
    midi.tracks += [conductor, notes]

    expected, seconds = [], 0.0
    for message in midi:
        seconds += message.time
        if message.type != "end_of_track":
            expected.append((seconds, message.copy(time=0)))
    got = [(at, message.copy(time=0)) for at, message in _in_seconds(midi)]
    assert got == expected
