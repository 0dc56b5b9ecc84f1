"""narrate: both stages over a characterized frame, deduplication, the persistent cache."""

import json
from collections.abc import Sequence

import polars as pl
import pytest

from bgm_batch.settings import TextSettings
from bgm_batch.stages.narrate import clean_completion, narrate
from bgm_batch.text.template import TemplateTextBackend

PLAINS = json.dumps({"Biome": {"Plains": 100.0}, "Time": {"Night": 100.0}})
CAVE = json.dumps(
    {"Biome": {"Deep Dark": 100.0}, "Time": {"Day": 100.0}, "Placing": {"On Ground": 100.0}}
)


def frame(infos: Sequence[str]) -> pl.DataFrame:
    n = len(infos)
    return pl.DataFrame(
        {
            "recording": ["r1"] * n,
            "index": list(range(n)),
            "start_s": [10.0 * i for i in range(n)],
            "end_s": [10.0 * i + 10 for i in range(n)],
            "combat": [False] * n,
            "info_str": list(infos),
        }
    )


class CountingTemplate(TemplateTextBackend):
    """The template backend, counting what it is asked to generate."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def generate(self, prompts: Sequence[str], *, max_new_tokens: int, seed: int) -> list[str]:
        self.asked.extend(prompts)
        return super().generate(prompts, max_new_tokens=max_new_tokens, seed=seed)


def test_two_stage_adds_narrative_and_caption_and_dedups(tmp_path):
    frames = frame([PLAINS, CAVE, PLAINS, PLAINS])
    before = frames.clone()
    backend = CountingTemplate()
    out, stats = narrate(frames, backend, TextSettings(cache_dir=None), seed=0, progress=True)
    assert frames.equals(before)
    assert out.columns == [*frames.columns, "narrative", "caption"]
    assert out.schema["narrative"] == pl.String and out.schema["caption"] == pl.String
    assert out["narrative"].null_count() == 0 and out["caption"].null_count() == 0
    assert out["caption"][0] == out["caption"][2] and out["caption"][0] != out["caption"][1]
    assert "night" in out["narrative"][0] or "moonlight" in out["narrative"][0]
    assert len(backend.asked) == 4  # 2 distinct narratives, then 2 distinct captions
    assert stats.deduplicated == 4 and stats.generated == 4 and stats.prompts == 8
    assert stats.cache_hits == stats.cache_misses == 0
    assert set(stats.as_dict()) >= {"generated", "cache_hits", "cache_misses", "deduplicated"}


def test_direct_mode_has_null_narrative():
    out, stats = narrate(
        frame([PLAINS, CAVE]),
        TemplateTextBackend(),
        TextSettings(mode="direct", cache_dir=None),
        seed=0,
    )
    assert out["narrative"].dtype == pl.String and out["narrative"].null_count() == 2
    assert all("BPM" in caption for caption in out["caption"])
    assert stats.prompts == 2


def test_cache_reuses_results_across_runs_and_keys_on_seed(tmp_path):
    settings = TextSettings(cache_dir=tmp_path / "cache")
    frames = frame([PLAINS, CAVE, PLAINS])
    first, stats1 = narrate(frames, CountingTemplate(), settings, seed=0)
    assert (stats1.cache_hits, stats1.cache_misses, stats1.generated) == (0, 4, 4)
    again = CountingTemplate()
    second, stats2 = narrate(frames, again, settings, seed=0)
    assert second.equals(first) and again.asked == []
    assert (stats2.cache_hits, stats2.cache_misses, stats2.generated) == (4, 0, 0)
    other = CountingTemplate()
    _, stats3 = narrate(frames, other, settings, seed=1)
    assert stats3.cache_hits == 0 and len(other.asked) == 4


def test_empty_frame():
    out, stats = narrate(frame([]), TemplateTextBackend(), TextSettings(cache_dir=None), seed=0)
    assert out.height == 0 and "caption" in out.columns and stats.generated == 0


@pytest.mark.parametrize(
    ("raw", "cleaned"),
    [
        (
            'Sure! Here is a music description:\n\n"Soft harp at 70 BPM in C major."',
            "Soft harp at 70 BPM in C major.",
        ),
        (
            "Certainly! Here's a concise description: Wind sweeps the plains.",
            "Wind sweeps the plains.",
        ),
        ("Music description: Tense strings.", "Tense strings."),
        ("Here is where the river bends.", "Here is where the river bends."),
        ("Surely the night is dark.", "Surely the night is dark."),
    ],
)
def test_clean_completion_strips_preambles_and_quotes(raw, cleaned):
    assert clean_completion(raw, 20) == cleaned


def test_clean_completion_cuts_at_a_sentence_end_when_close_enough():
    first = "One two three four five six seven eight nine ten eleven twelve."
    text = f"{first} Then a second sentence runs on well past the twenty word limit here."
    assert clean_completion(text, 20) == first
    long_sentence = " ".join(["word"] * 30)
    assert clean_completion(long_sentence, 20) == " ".join(["word"] * 20) + "."
    assert clean_completion("Short. " + long_sentence, 20).split()[-1] == "word."
    assert len(clean_completion("Short. " + long_sentence, 20).split()) == 20


def test_hf_backend_end_to_end_with_limits_and_cache(tmp_path):
    pytest.importorskip("transformers")
    from bgm_batch.testing.tiny_llm import build_tiny_llm
    from bgm_batch.text.hf import load_hf_backend

    model = build_tiny_llm(tmp_path / "llm")
    settings = TextSettings(
        backend="hf",
        model=str(model),
        device="cpu",
        narrative_max_new_tokens=24,
        caption_max_new_tokens=16,
        cache_dir=tmp_path / "cache",
    )
    backend = load_hf_backend(settings)
    out, stats = narrate(frame([PLAINS, CAVE]), backend, settings, seed=0)
    assert stats.generated == 4
    assert all(len(text.split()) <= 50 for text in out["narrative"])
    assert all(len(text.split()) <= 20 for text in out["caption"])
    again, stats = narrate(frame([PLAINS, CAVE]), backend, settings, seed=0)
    assert again.equals(out) and stats.cache_hits == 4 and stats.generated == 0
