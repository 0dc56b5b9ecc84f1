"""The fine-tuning flow: recordings and/or MusicCaps captions -> pairs -> LoRA adapter -> scores.

Each task is one call into ``bgm_batch`` (``compare.characterized_frame``, ``pairs.make_pairs``,
``finetune.finetune``, ``compare.compare_table``); nothing else happens here. Resuming a killed
run: ``FinetuneConfig(resume=True)`` continues from the newest checkpoint in the adapter folder.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from bgm_batch import compare, evaluate, finetune, pairs
from bgm_batch.settings import Settings
from bgm_batch.text_backends._base import TEXT_BACKENDS


@task(cache_policy=NO_CACHE)
def build_pairs(
    recordings: list[Path], reverse: int, out_dir: Path, settings: Settings, val_fraction: float
) -> pairs.PairsResult:
    frame = compare.characterized_frame(recordings, settings.profile_model) if recordings else None
    captions = pairs.load_caption_sample().head(reverse) if reverse else None
    teacher = TEXT_BACKENDS.create(settings.text.backend, settings.text)
    return pairs.make_pairs(
        out_dir,
        teacher,
        frame=frame,
        captions=captions,
        text_settings=settings.text,
        seed=settings.seed,
        val_fraction=val_fraction,
        progress=settings.progress,
    )


@task(cache_policy=NO_CACHE)
def train_adapter(
    pairs_dir: Path, base: str, adapter_dir: Path, config: finetune.FinetuneConfig
) -> finetune.FinetuneResult:
    return finetune.finetune(pairs_dir, base, adapter_dir, config)


@task(cache_policy=NO_CACHE)
def score_adapter(
    recordings: list[Path], references: Path, base: str, adapter_dir: Path, settings: Settings
) -> pl.DataFrame:
    frame = compare.characterized_frame(recordings, settings.profile_model)
    return compare.compare_table(
        frame,
        [f"hf:{base}", f"hf:{base}@{adapter_dir}"],
        settings,
        evaluate.read_references(references),
    )


@flow(name="finetune")
def finetune_flow(
    out_dir: Path,
    base: str,
    settings: Settings,
    config: finetune.FinetuneConfig,
    recordings: list[Path] | None = None,
    reverse: int = 0,
    val_fraction: float = 0.1,
    eval_recordings: list[Path] | None = None,
    references: Path | None = None,
) -> tuple[finetune.FinetuneResult, pl.DataFrame | None]:
    """``settings.text`` names the teacher; pairs go to ``out_dir/pairs``, the adapter to
    ``out_dir/adapter``; with ``eval_recordings`` and ``references`` the base model and the
    adapter are scored in both modes (``out_dir/compare.parquet``, ``.md``)."""
    pairs_result = build_pairs(
        list(recordings or []), reverse, out_dir / "pairs", settings, val_fraction
    )
    result = train_adapter(pairs_result.train.parent, base, out_dir / "adapter", config)
    table = None
    if eval_recordings and references:
        table = score_adapter(eval_recordings, references, base, out_dir / "adapter", settings)
        compare.write_table(table, out_dir / "compare.parquet", out_dir / "compare.md")
    return result, table
