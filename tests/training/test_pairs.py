"""Fine-tuning pairs: both tasks from a teacher, reverse generation, deduplication, split."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import polars as pl
import pytest
from conftest import characterized

from bgm_batch.settings import TextSettings
from bgm_batch.text.prompts import caption_prompt, narrative_prompt
from bgm_batch.text.protocol import TEXT_BACKENDS
from bgm_batch.training import pairs as P


@pytest.fixture
def template_settings() -> TextSettings:
    return TextSettings(backend="template", cache_dir=None)


def test_scene_pairs_rebuild_the_inference_prompts(tmp_path: Path, template_settings) -> None:
    teacher = TEXT_BACKENDS.create("template", template_settings)
    frame = characterized()
    result = P.make_pairs(
        tmp_path, teacher, frame=frame, text_settings=template_settings, val_fraction=0.34
    )
    records = P.read_jsonl(result.train) + P.read_jsonl(result.validation)
    assert result.counts == {"scene/narrative": 12, "scene/music": 12}
    assert result.n_train + result.n_validation == 24
    by_input = {r["input"]: r for r in records if r["task"] == "narrative"}
    for info in frame["info_str"]:
        narrative = by_input[info]["output"]
        assert P.render_prompt(by_input[info]) == narrative_prompt(info)
        music = next(r for r in records if r["task"] == "music" and r["input"] == narrative)
        assert P.render_prompt(music) == caption_prompt(narrative)
        assert 0 < len(music["output"].split()) <= 20


def test_split_keeps_recordings_whole(tmp_path: Path, template_settings) -> None:
    teacher = TEXT_BACKENDS.create("template", template_settings)
    result = P.make_pairs(
        tmp_path,
        teacher,
        frame=characterized(5, 3),
        text_settings=template_settings,
        val_fraction=0.4,
        seed=3,
    )
    train = {r["group"] for r in P.read_jsonl(result.train)}
    val = {r["group"] for r in P.read_jsonl(result.validation)}
    assert len(val) == 2 and len(train) == 3 and not train & val
    manifest = json.loads((tmp_path / "pairs.json").read_text())
    assert manifest["validation_groups"] == sorted(val)
    assert manifest["teacher"]["backend"] == "template"


def test_duplicates_are_dropped_before_the_split(tmp_path: Path, template_settings) -> None:
    teacher = TEXT_BACKENDS.create("template", template_settings)
    frame = characterized(2, 2)
    # the same snapshots again under another recording: same prompts, same teacher output
    again = frame.with_columns(recording=pl.lit("rec9"))  # sorts after rec0, rec1
    result = P.make_pairs(
        tmp_path,
        teacher,
        frame=pl.concat([frame, again]),
        text_settings=template_settings,
        val_fraction=0.5,
    )
    assert result.n_duplicates == 8
    assert result.n_train + result.n_validation == 8
    groups = {r["group"] for r in P.read_jsonl(result.train) + P.read_jsonl(result.validation)}
    assert groups == {"rec0", "rec1"}  # the first occurrence (recording, index order) stays


def test_deduplicate_ignores_case_and_spacing() -> None:
    a = P.Pair("do {payload}", "Calm  night", "Soft piano.", "music", "scene", "r1")
    b = P.Pair("do {payload}", "calm night", "soft   piano.", "music", "scene", "r2")
    c = P.Pair("do {payload}", "calm night", "loud drums", "music", "scene", "r2")
    assert P.deduplicate([a, b, c]) == [a, c]


def test_render_prompt_without_placeholder_is_alpaca_style() -> None:
    assert (
        P.render_prompt({"instruction": "Describe.", "input": "x", "output": "y"})
        == "Describe.\n\nx"
    )
    assert P.render_prompt({"instruction": "Describe.", "output": "y"}) == "Describe."


def test_reverse_generation_needs_a_language_model(template_settings) -> None:
    teacher = TEXT_BACKENDS.create("template", template_settings)
    with pytest.raises(P.PairsError, match="language model"):
        P.reverse_pairs(P.load_caption_sample().head(2), teacher, seed=0)


def test_reverse_generation_with_a_tiny_llm(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from bgm_batch.testing.tiny_llm import build_tiny_llm

    model = build_tiny_llm(tmp_path / "llm")
    settings = TextSettings(
        backend="hf", model=str(model), device="cpu", cache_dir=None, narrative_max_new_tokens=24
    )
    teacher = TEXT_BACKENDS.create("hf", settings)
    captions = P.load_caption_sample().head(6)
    result = P.make_pairs(
        tmp_path / "pairs", teacher, captions=captions, text_settings=settings, val_fraction=0.2
    )
    records = P.read_jsonl(result.train) + P.read_jsonl(result.validation)
    assert result.counts == {"reverse/music": len(records)} and len(records) >= 5
    assert {r["output"] for r in records} <= set(captions["caption"])
    assert all(r["group"].startswith("musiccaps:") and r["input"] for r in records)
    assert all(P.render_prompt(r) == caption_prompt(r["input"]) for r in records)
    assert result.n_validation >= 1


def test_pairs_file_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "x", "output": "y"}\n\n{"input": "no instruction"}\n')
    with pytest.raises(P.PairsError, match="bad.jsonl:3"):
        P.read_jsonl(bad)
    with pytest.raises(P.PairsError, match="give characterized windows"):
        P.make_pairs(tmp_path, object())


def test_shipped_caption_sample_and_attribution() -> None:
    sample = P.load_caption_sample()
    assert sample.height == 300 and sample["ytid"].n_unique() == 300
    assert sample["caption"].str.split(" ").list.len().max() <= 60
    folder = resources.files("bgm_batch") / "resources"
    attribution = (folder / "ATTRIBUTION_musiccaps_captions.md").read_text()
    assert "CC BY-SA 4.0" in attribution and "MusicCaps" in attribution
