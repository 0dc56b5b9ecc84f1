"""The synth backend on its real output: duration, loudness, silence, tempo, continuation."""

from __future__ import annotations

import io

import mido
import numpy as np
import pyloudnorm
import pytest

from bgm_batch.audio.protocol import AUDIO_BACKENDS, STEM_ROLES, SegmentRequest
from bgm_batch.audio.synth.backend import SynthBackend, _NoteCache
from bgm_batch.audio.synth.compose import key_name, parse_caption
from bgm_batch.settings import AudioSettings

SETTINGS = AudioSettings()
CALM = "Gentle and peaceful music with a soft piano melody and flute, 80 bpm."
COMBAT = "Intense fast battle music with pounding drums, brass and strings, 140 bpm."


@pytest.fixture(scope="module")
def synth():
    return AUDIO_BACKENDS.create("synth", SETTINGS)


def request(caption: str, seed: int = 1, duration_s: float = 11.0, **kwargs) -> SegmentRequest:
    return SegmentRequest(key="r/0", caption=caption, duration_s=duration_s, seed=seed, **kwargs)


def test_caption_parsing():
    calm = parse_caption("The music is gentle and soothing, with a soft melody and stable rhythm.")
    fight = parse_caption("Urgent, aggressive battle music with heavy drums and brass.")
    assert calm.tempo < 85 < fight.tempo
    assert calm.intensity < 0.4 < 0.7 < fight.intensity
    assert not calm.minor and fight.minor
    assert fight.programs["harmony"] == 61  # brass section
    keyed = parse_caption("A slow waltz in F# minor played on cello and harp at 90 bpm")
    assert (keyed.tonic, keyed.minor, keyed.tempo) == (6, True, 90.0)
    assert keyed.programs["bass"] == 42 and keyed.programs["harmony"] == 46
    assert parse_caption(CALM) == parse_caption(CALM)  # the key is a stable pick


def test_identity_names_the_procedural_synthesiser(synth):
    identity = synth.identity()
    assert identity["backend"] == "synth"
    assert "procedural" in identity["model"] and "FluidSynth" in identity["model"]
    assert "FluidR3_GM" in identity["revision"]
    assert (
        identity["output_licence"].startswith("publishable") and "MIT" in identity["output_licence"]
    )


@pytest.mark.parametrize(("caption", "bpm"), [(CALM, 80), (COMBAT, 140)])
def test_real_output_is_music_at_the_requested_tempo(synth, caption, bpm):
    import librosa

    segment = synth.render([request(caption)])[0]
    audio = segment.audio
    assert segment.sample_rate == 48000
    assert audio.dtype == np.float32 and audio.shape == (2, 11 * 48000)
    assert np.abs(audio).max() <= 1.0
    frames = np.sqrt(np.mean(audio.reshape(2, -1, 4800) ** 2, axis=(0, 2)))
    assert (frames > 1e-3).mean() > 0.95  # sound all the way through
    loudness = pyloudnorm.Meter(48000).integrated_loudness(audio.T)
    assert -32.0 < loudness < -10.0
    tempo = float(
        np.atleast_1d(
            librosa.beat.beat_track(y=librosa.to_mono(audio), sr=48000, start_bpm=100.0)[0]
        )[0]
    )
    assert min(abs(tempo - bpm), abs(tempo / 2 - bpm), abs(tempo * 2 - bpm)) < 0.08 * bpm
    song = mido.MidiFile(file=io.BytesIO(segment.midi))
    notes = [m for track in song.tracks for m in track if m.type == "note_on" and m.velocity]
    assert len(notes) > 40
    assert any(m.channel == 9 for m in notes) == (bpm > 100)  # drums in the fight only
    assert song.length == pytest.approx(11.0, abs=2.5)


def test_calm_and_combat_differ_where_they_should(synth):
    calm, combat = (synth.render([request(c)])[0].audio for c in (CALM, COMBAT))
    meter = pyloudnorm.Meter(48000)
    assert meter.integrated_loudness(combat.T) > meter.integrated_loudness(calm.T) + 1.5

    def brightness(audio):
        spectrum = np.abs(np.fft.rfft(audio.mean(axis=0)))
        return (spectrum * np.fft.rfftfreq(audio.shape[1], 1 / 48000)).sum() / spectrum.sum()

    assert brightness(combat) > brightness(calm)


def test_same_request_same_samples(synth):
    first = synth.render([request(COMBAT, seed=7)])[0]
    synth.render([request(CALM, seed=3)])  # other work in between changes nothing
    again = synth.render([request(COMBAT, seed=7), request(CALM, seed=3)])[0]
    assert np.array_equal(first.audio, again.audio)
    assert first.midi == again.midi and first.state == again.state


def test_the_note_cache_keeps_a_planned_note_until_its_last_use():
    cache = _NoteCache()
    note = np.full((2, 100), 0.5, dtype=np.float32)
    cache.plan("twice")
    cache.plan("twice")
    cache.plan("once")
    cache.put("once", note.copy())  # its only use: not kept
    assert cache.get("once") is None
    cache.put("twice", note.copy())
    assert cache.get("twice") is not None  # the last planned use: forgotten after it
    assert cache.get("twice") is None
    cache.put("unplanned", note.copy())  # never announced: kept as least-recently-used
    assert cache.get("unplanned") is not None and cache.get("unplanned") is not None


def test_planning_renders_fewer_notes_and_the_same_samples(monkeypatch):
    """Segments composed ahead (as the render stage does) sound exactly as unplanned ones,
    while notes that only one segment plays are not kept in place of those that recur."""
    segments = [request(c, seed=s) for s in (1, 2) for c in (CALM, COMBAT, CALM)]
    played = {"plain": 0, "planned": 0}
    outputs = {}
    for mode in played:
        backend = SynthBackend(SETTINGS)
        backend._notes = _NoteCache(capacity=4 * 2**20)  # a few seconds of notes
        monkeypatch.setattr(backend, "_new_note", _counting(backend._new_note, played, mode))
        if mode == "planned":
            for segment in segments:
                backend.next_state(segment)
        outputs[mode] = [backend.render([segment])[0].audio for segment in segments]
    assert all(map(np.array_equal, outputs["plain"], outputs["planned"]))
    assert played["planned"] < played["plain"]


def _counting(play, counts, mode):
    def counted(note):
        counts[mode] += 1
        return play(note)

    return counted


def test_continuation_keeps_key_and_tempo_and_overlaps_seamlessly(synth):
    keyed = CALM.replace("80 bpm", "80 bpm in G major")
    first = synth.render([request(keyed, transition="start")])[0]
    other_words = keyed.replace("flute", "harp")  # the scene keeps its band all the same
    nxt = synth.render(
        [request(other_words, seed=2, transition="continue", prev_state=first.state)]
    )[0]
    kept = ("tonic", "minor", "tempo", "progressions", "motifs", "programs", "drums")
    assert {k: nxt.state[k] for k in kept} == {k: first.state[k] for k in kept}
    # the previous segment's tail (past the 10 s hop) and the next head play the same bar
    hop = round(SETTINGS.segment_seconds * 48000)
    tail, head = first.audio[:, hop + 4800 :], nxt.audio[:, 4800:48000]
    correlation = np.vdot(tail, head) / np.sqrt(np.vdot(tail, tail) * np.vdot(head, head))
    assert correlation > 0.5


def test_a_scene_change_modulates_to_the_caption_s_key_and_a_stinger_hits(synth):
    calm = synth.render([request(CALM)])[0]
    turned = synth.render(
        [request(COMBAT, transition="change", prev_state=calm.state, stinger=True)]
    )[0]
    wanted = parse_caption(COMBAT)
    assert turned.state["tempo"] == pytest.approx(140.0)
    assert (turned.state["tonic"], turned.state["minor"]) == (wanted.tonic, wanted.minor)
    song = mido.MidiFile(file=io.BytesIO(turned.midi))
    tempos = [round(mido.tempo2bpm(m.tempo)) for m in song.tracks[0] if m.type == "set_tempo"]
    assert tempos[0] == 80 and tempos[-1] == 140 and len(tempos) > 2  # a ramp
    keys = [m.key for m in song.tracks[0] if m.type == "key_signature"]
    assert keys == [key_name(calm.state["tonic"], False), key_name(wanted.tonic, True)]
    first_second = np.abs(turned.audio[:, :4800]).max()
    assert first_second > 0.1  # the stinger lands on the downbeat


def test_a_scene_change_continues_the_anchor_s_sound_into_the_seam(synth):
    """The crossfade at a scene change joins the same music, not two pieces: until the next
    bar line the new segment plays the old piece on the old grid."""
    keyed = CALM.replace("80 bpm", "80 bpm in G major")
    first = synth.render([request(keyed)])[0]
    changed = synth.render([request(COMBAT, seed=2, transition="change", prev_state=first.state)])[
        0
    ]
    hop = round(SETTINGS.segment_seconds * 48000)
    span = round(0.3 * 48000)  # within the first beat: before the tempo ramp begins
    tail, head = first.audio[:, hop : hop + span], changed.audio[:, :span]
    correlation = np.vdot(tail, head) / np.sqrt(np.vdot(tail, tail) * np.vdot(head, head))
    assert correlation > 0.5
    assert changed.state["programs"] != first.state["programs"]  # and then the new band


def test_stems_split_the_mix_by_role_and_sum_to_it(synth):
    """With ``stems`` the same segment comes split by instrument role: the parts that play,
    each shaped like the mix, summing to it (also where the mix clips), and the mix itself
    is the one rendered without stems."""
    with_stems = AUDIO_BACKENDS.create("synth", AudioSettings(stems=True))
    calm = synth.render([request(CALM)])[0]
    fight = request(COMBAT, transition="change", prev_state=calm.state, stinger=True)
    plain, split = synth.render([fight])[0], with_stems.render([fight])[0]
    assert plain.stems is None
    assert {"drums", "bass", "stinger"} <= set(split.stems) <= set(STEM_ROLES)
    total = np.sum(list(split.stems.values()), axis=0)
    assert all(stem.shape == split.audio.shape for stem in split.stems.values())
    assert np.abs(total - split.audio).max() < 1e-6
    assert np.abs(split.audio - plain.audio).max() < 1e-5
    for role, stem in split.stems.items():
        assert np.sqrt(np.mean(stem**2)) > 1e-3, role  # every part given plays


def test_stems_still_sum_to_a_clipped_mix():
    loud = {"a": np.full((2, 8), 0.9, np.float32), "b": np.full((2, 8), 0.6, np.float32)}
    loud["b"][:, :4] = -0.2  # the first half stays under full scale
    mix, stems = SynthBackend._split(loud)
    assert np.abs(mix).max() == pytest.approx(1.0)
    assert np.allclose(stems["a"] + stems["b"], mix, atol=1e-7)
    assert np.array_equal(stems["a"][:, :4], loud["a"][:, :4])  # untouched below the clip
