"""Table I ablation: direct vs two-stage for several backends, in the paper's layout."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from conftest import characterized

from bgm_batch.evaluation.compare import BackendSpec, compare_table, to_markdown, write_table
from bgm_batch.evaluation.metrics import METRICS
from bgm_batch.settings import Settings, TextSettings
from bgm_batch.training.pairs import load_caption_sample


def test_backend_spec_parsing() -> None:
    assert BackendSpec.parse("template") == BackendSpec("template")
    assert BackendSpec.parse("hf:/m/llama@out/ad") == BackendSpec("hf", "/m/llama", "out/ad")
    assert BackendSpec.parse("hf@out/ad") == BackendSpec("hf", None, "out/ad")
    assert BackendSpec.parse("hf:/m/llama@out/ad").label("x") == "hf:llama + LoRA"
    with pytest.raises(ValueError, match="bad backend spec"):
        BackendSpec.parse(":model")


def references(frame: pl.DataFrame) -> pl.DataFrame:
    """Two real MusicCaps captions per window as references."""
    captions = load_caption_sample()["caption"]
    keys = frame.select("recording", "index")
    return pl.concat(
        [
            keys.with_columns(caption=captions[: frame.height]),
            keys.with_columns(caption=captions[frame.height : 2 * frame.height]),
        ]
    )


def test_table_has_template_and_hf_rows_in_both_modes(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from bgm_batch.testing.tiny_llm import build_tiny_llm

    model = build_tiny_llm(tmp_path / "llm")
    settings = Settings(
        text=TextSettings(
            model=str(model),
            device="cpu",
            cache_dir=None,
            narrative_max_new_tokens=16,
            caption_max_new_tokens=12,
        )
    )
    frame = characterized(2, 2)
    table = compare_table(frame, ["hf"], settings, references(frame), embed=False)
    assert table["model"].to_list() == [
        "template + Direct Generation",
        "template + Two-Stage Generation",
        "hf:llm + Direct Generation",
        "hf:llm + Two-Stage Generation",
    ]
    assert table["n_pairs"].to_list() == [4] * 4 and table["n_unmatched"].to_list() == [0] * 4
    assert table["embed_cos"].null_count() == 4
    for metric in METRICS[:6]:
        assert table[metric].is_between(0, 100).all()
    # the rule-based template writes music words; a random tiny model does not
    template_b1 = table.filter(pl.col("backend") == "template")["bleu1"]
    hf_b1 = table.filter(pl.col("backend") == "hf")["bleu1"]
    assert template_b1.min() > hf_b1.max()

    markdown = write_table(table, tmp_path / "table.parquet", tmp_path / "table.md")
    lines = markdown.splitlines()
    assert lines[0] == "| Model | B-1↑ | B-2↑ | B-3↑ | B-4↑ | METEOR↑ | R-L↑ |"
    assert len(lines) == 6 and (tmp_path / "table.md").read_text() == markdown
    assert pl.read_parquet(tmp_path / "table.parquet").equals(table)


def test_markdown_bolds_the_best_of_each_column() -> None:
    row = {m: 1.0 for m in METRICS}
    table = pl.DataFrame([{"model": "a", **row}, {"model": "b", **row, "bleu1": 51.657}])
    lines = to_markdown(table).splitlines()
    assert lines[2].startswith("| a | 1.00 |") and "**1.00**" in lines[2]
    assert lines[3].startswith("| b | **51.66** |")
    assert "Embed-cos↑" in lines[0]
