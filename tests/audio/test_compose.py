"""The synth's composer on its notes: form, one ensemble per scene, truthful tempo and key,
drums only where called for, anchored scene changes through a pivot and a tempo ramp."""

from __future__ import annotations

import io

import mido
import pytest

from bgm_batch.audio.synth.compose import (
    DRUM_CHANNEL,
    arrange,
    key_name,
    parse_caption,
    to_midi,
)

PLAINS = "A calm, warm classical piece at 92 BPM in G major, with soft piano and strings."
RAIN = "Melancholic soft piano at 85 BPM in G minor; calm and warm, with flute."
CAVE = "Dark eerie ambient music at 64 BPM in E minor, with a drone and bells."
FIGHT = "Tense epic cinematic music at 150 BPM in E minor, with pounding drums and brass."


def run(captions: list[str], transitions: list[str] | None = None, hop: float = 10.0):
    """Arrange a run of windows the way the render stage chains them."""
    transitions = transitions or ["start"] + ["continue"] * (len(captions) - 1)
    state, out = None, []
    for i, (caption, transition) in enumerate(zip(captions, transitions, strict=True)):
        prev = None if transition in ("start", "restart") else state
        arrangement = arrange(
            parse_caption(caption), hop + 1.0, hop, i, prev_state=prev, transition=transition
        )
        state = arrangement.state
        out.append(arrangement)
    return out


def phrases(arrangements, hop: float = 10.0) -> list[tuple]:
    """The notes of each 4-bar phrase of a run (bar-relative beat, channel, pitch)."""
    notes = []
    beat0 = 0.0
    for arrangement in arrangements:
        song = mido.MidiFile(file=io.BytesIO(to_midi(arrangement)))
        for track in song.tracks:
            tick = 0
            for message in track:
                tick += message.time
                beat = beat0 + tick / song.ticks_per_beat
                if message.type == "note_on" and message.velocity:
                    notes.append((beat, message.channel, message.note))
        beat0 = arrangement.state["beat"]
    bars: dict[int, set] = {}
    for beat, channel, pitch in notes:
        bars.setdefault(int(beat // 16), set()).add((round(beat % 16, 2), channel, pitch))
    return [frozenset(bars.get(i, ())) for i in range(max(bars))]


def test_a_long_scene_has_form_not_a_loop():
    arrangements = run([PLAINS] * 18)
    song = phrases(arrangements)
    assert len(song) >= 15
    assert all(a != b for a, b in zip(song, song[1:], strict=False))  # never twice in a row
    assert len(set(song)) / len(song) > 0.8
    state = arrangements[-1].state
    assert state["progressions"]["A"] != state["progressions"]["B"]


def test_the_ensemble_is_the_scene_s_and_only_a_change_replaces_it():
    other_band = PLAINS.replace("piano and strings", "harp and violin")
    first, same, changed = run([PLAINS, other_band, CAVE], ["start", "continue", "change"])
    assert same.state["programs"] == first.state["programs"]
    assert changed.state["programs"] == parse_caption(CAVE).programs != first.state["programs"]


def test_drums_only_where_the_caption_calls_for_them():
    assert not parse_caption(CAVE).drums and not parse_caption(PLAINS).drums
    assert parse_caption(FIGHT).drums
    cave, fight = (run([c])[0] for c in (CAVE, FIGHT))
    assert not any(n.channel == DRUM_CHANNEL for n in cave.notes)
    assert any(n.channel == DRUM_CHANNEL for n in fight.notes)


@pytest.mark.parametrize("caption", [PLAINS, RAIN, CAVE, FIGHT])
def test_the_caption_s_tempo_and_key_are_what_plays(caption):
    params = parse_caption(caption)
    arrangement = run([PLAINS, caption])[1]
    assert arrangement.tempo_changes[-1][1] == params.tempo
    assert arrangement.key_changes[-1][1] == key_name(params.tonic, params.minor)


def test_a_minor_mood_within_a_scene_is_the_parallel_minor():
    plains, rain = run([PLAINS, RAIN])
    assert (plains.state["tonic"], plains.state["minor"]) == (7, False)
    assert (rain.state["tonic"], rain.state["minor"]) == (7, True)
    assert rain.state["programs"] == plains.state["programs"]  # a mood, not a new band


def test_a_scene_change_pivots_ramps_and_keeps_the_anchor_s_grid():
    plains, cave = run([PLAINS, CAVE], ["start", "change"])
    assert cave.state["beat"] > plains.state["beat"]  # the grid runs on
    ramp = [bpm for _, bpm in cave.tempo_changes]
    assert ramp[0] == 92.0 and ramp[-1] == 64.0 and len(ramp) >= 5  # a bar-long ramp
    first_new_bar = cave.state["cue"][0][0]
    assert first_new_bar * 4 >= plains.state["beat"]  # the old piece plays to the bar line
    pivot, dominant = (c[1:] for c in cave.state["cue"])
    g_major = {7, 9, 11, 0, 2, 4, 6}
    assert set(pivot) <= g_major  # a chord both keys share
    assert dominant[:3] == [11, 3, 6]  # B major: the dominant of E minor
    assert [k for _, k in cave.key_changes] == ["G", "Em"]
