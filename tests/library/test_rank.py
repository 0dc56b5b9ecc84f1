"""Ranking the synth-rendered library with the real MiniLM: fitting picks per stretch, no
repeats, feedback that moves the picks, reasons from what matched (template and a tiny LLM)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bgm_batch.evaluation.embeddings import load_embedder
from bgm_batch.library import rank, reasons
from bgm_batch.library.index import load_index

pytest_plugins = ["musiclib"]

COMBAT = "Intense and energetic battle music in F minor at 150 BPM: pounding drums and brass."
CALM = "A gentle, peaceful pastoral piece at 72 BPM in G major, with soft piano and flute."
BATTLE_TRACKS = {"iron_charge.flac", "steel_storm.wav"}
CALM_TRACKS = {"meadow_morning.flac", "quiet_stream.ogg"}


def stretch(first: int, caption: str, scene: str, recording: str = "rec") -> rank.Stretch:
    return rank.Stretch(
        id=f"{recording}:{first}",
        recording=recording,
        indexes=list(range(first, first + 3)),
        start_s=10.0 * first,
        end_s=10.0 * first + 30,
        scene=scene,
        captions=[caption],
        narratives=[],
    )


@pytest.fixture(scope="module")
def ranker(index_dir: Path) -> rank.Ranker:
    return rank.Ranker(load_index(index_dir), load_embedder().encode)


def picked(ranker: rank.Ranker, items, feedback=(), margin: float = 0.15) -> list[str]:
    files = ranker.index.tracks["file"].to_list()
    return [files[i] for i in rank.assign(items, ranker.scores(items, feedback), margin)]


def test_combat_and_calm_stretches_get_fitting_tracks(ranker: rank.Ranker) -> None:
    items = [
        stretch(0, CALM, "Biome=Plains|Time=day"),
        stretch(3, COMBAT, "Biome=Plains|Time=day|combat"),
    ]
    calm, combat = picked(ranker, items)
    assert calm in CALM_TRACKS and combat in BATTLE_TRACKS


def test_no_track_repeats_while_fitting_ones_remain(ranker: rank.Ranker) -> None:
    items = [stretch(3 * k, CALM, "Biome=Plains|Time=day") for k in range(3)]
    assert len(set(picked(ranker, items, margin=1.0))) == 3
    assert len(set(picked(ranker, items, margin=0.0))) == 1  # only the best fits: it repeats
    other = [stretch(0, CALM, "Biome=Plains|Time=day", recording=r) for r in ("a", "b")]
    assert len(set(picked(ranker, other))) == 1  # another recording may use it again


def test_feedback_moves_the_pick_the_asked_way(ranker: rank.Ranker) -> None:
    combat = [stretch(0, COMBAT, "Biome=Plains|Time=day|combat")]
    files = ranker.index.tracks["file"].to_list()
    iron, steel = files.index("iron_charge.flac"), files.index("steel_storm.wav")
    before = ranker.scores(combat)[0]
    turn = rank.Feedback("less vocals, more epic strings", previous={"rec:0": "steel_storm.wav"})
    after = ranker.scores(combat, [turn])[0]
    assert after[iron] - after[steel] > before[iron] - before[steel] + 0.2
    assert picked(ranker, combat, [turn]) == ["iron_charge.flac"]
    away = rank.Feedback("more vocals and choir, less strings")
    assert picked(ranker, combat, [away]) == ["steel_storm.wav"]


def test_feedback_applies_only_to_its_scope(ranker: rank.Ranker) -> None:
    items = [stretch(0, CALM, "Biome=Plains|Time=day"), stretch(3, CALM, "Biome=Desert|Time=day")]
    turn = rank.Feedback("more cheerful folk guitar dance", scope="Desert")
    plain = ranker.scores(items)
    refined = ranker.scores(items, [turn])
    assert np.array_equal(plain[0], refined[0]) and not np.array_equal(plain[1], refined[1])
    assert picked(ranker, items, [turn])[1] == "village_dance.flac"


def test_feedback_phrases_and_scopes() -> None:
    turn = rank.Feedback("Less vocals, more epic strings and no drums; add a choir")
    assert turn.phrases() == (["epic strings", "a choir"], ["vocals", "drums"])
    item = stretch(6, CALM, "Biome=Desert|Time=night|combat")  # 60 s .. 90 s
    assert rank.covers(None, item) and rank.covers("combat", item) and rank.covers("desert", item)
    assert not rank.covers("Forest", item)
    assert rank.covers("1:20-2:00", item) and rank.covers("0-61", item)
    assert not rank.covers("90-120", item) and not rank.covers("0:00-1:00", item)


def test_template_reasons_name_what_matched(ranker: rank.Ranker) -> None:
    rows = ranker.index.tracks.to_dicts()
    iron = next(r for r in rows if r["file"] == "iron_charge.flac")
    item = stretch(0, COMBAT, "Biome=Plains|Time=day|combat")
    turn = rank.Feedback("less vocals, more epic strings", scope="combat")
    (reason,) = reasons.reasons([item], [iron], [turn])
    assert reason.startswith("\u201cIron Charge\u201d for the Plains, day, combat, battle stretch")
    assert "battle" in reason and "drums" in reason and "brass" in reason  # shared words
    assert "less vocals, more epic strings" in reason
    assert reason.count(".") <= 3  # one or two sentences
    (plain,) = reasons.reasons([item], [iron], [rank.Feedback("calmer", scope="Forest")])
    assert "feedback" not in plain


def test_an_llm_writes_the_reason_when_asked(tmp_path: Path, ranker: rank.Ranker) -> None:
    pytest.importorskip("transformers")
    from bgm_batch.settings import TextSettings
    from bgm_batch.testing.tiny_llm import build_tiny_llm
    from bgm_batch.text.protocol import TEXT_BACKENDS

    model = build_tiny_llm(tmp_path / "llm", seed=0)
    backend = TEXT_BACKENDS.create("hf", TextSettings(backend="hf", model=str(model)))
    rows = ranker.index.tracks.to_dicts()
    item = stretch(0, CALM, "Biome=Plains|Time=day")
    written = reasons.reasons([item], [rows[0]], [], backend, seed=0)
    template = reasons.reasons([item], [rows[0]], [])
    assert written[0] and written != template
    assert written == reasons.reasons([item], [rows[0]], [], backend, seed=0)  # seeded
