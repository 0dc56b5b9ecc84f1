"""Stages 1 and 2: characterized windows -> narrative -> music description (or direct).

``narrate`` adds a ``narrative`` column (null in direct mode) and a ``caption`` column to the
characterized frame. Each stage builds its prompts (``bgm_batch.text.prompts``), sends every
distinct prompt once, reuses what the persistent cache already holds (``bgm_batch.text.cache``),
generates the rest with the backend in chunks (the cache is written after each, so a killed run
keeps its work), and cleans the completions: chat preambles and quotes stripped, word limits
enforced at a sentence end where one is close enough.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import polars as pl

from bgm_batch.progress import Progress
from bgm_batch.settings import TextSettings
from bgm_batch.text.cache import TextCache, generation_key
from bgm_batch.text.prompts import (
    CAPTION_MAX_WORDS,
    NARRATIVE_MAX_WORDS,
    caption_prompt,
    direct_prompt,
    narrative_prompt,
)
from bgm_batch.text.protocol import TextBackend

CHUNK_PROMPTS = 256  # prompts per backend call: the unit of progress and of cache writes


@dataclass
class NarrateStats:
    """What a narrate run did; ``generated`` + ``cache_hits`` = distinct prompts.

    ``cache_misses`` counts cache look-ups that found nothing (0 with the cache disabled);
    ``deduplicated`` counts prompts that repeated an earlier prompt of the same run.
    """

    segments: int = 0
    prompts: int = 0
    generated: int = 0
    cache_hits: int = 0
    cache_misses: int = 0
    deduplicated: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, int | float]:
        """Plain dict for logs and the run manifest."""
        return asdict(self)


# "Sure!", "Certainly, here is a description:", "Here's the music description:" - an
# acknowledgement ends at its first ! . : or line break; a "here is" lead-in only at : or a
# line break, so "Here is where the river bends." survives.
_PREAMBLE = re.compile(
    r"^\s*(?:(?:(?:sure|certainly|of course|okay|ok|absolutely)\b[^\n:!.]*[!.:\n]"
    r"|here(?:'s| is| are)\b[^\n:]*(?::|\n)|\n)\s*)+",
    re.IGNORECASE,
)
_LABEL = re.compile(
    r"^\s*(?:\**(?:music )?(?:description|narrative|caption|scene)\**\s*:)\s*", re.IGNORECASE
)
_QUOTES = "\"'“”‘’`"


def clean_completion(text: str, max_words: int) -> str:
    """Model output as a plain text of at most ``max_words`` words.

    Drops a chat preamble ("Sure! Here is a description:"), a label ("Music description:"),
    surrounding quotes and control characters; over the limit, cuts at the last sentence end
    that keeps at least half the limit, else at the limit.
    """
    text = "".join(ch if ch.isprintable() or ch in "\n\t" else " " for ch in text)
    text = _LABEL.sub("", _PREAMBLE.sub("", text)).strip()
    text = " ".join(text.split()).strip(_QUOTES + " ")
    words = text.split()
    if len(words) <= max_words:
        return text
    kept = words[:max_words]
    ends = [i for i, word in enumerate(kept) if word.rstrip(_QUOTES).endswith((".", "!", "?"))]
    if ends and ends[-1] + 1 >= max_words // 2:
        return " ".join(kept[: ends[-1] + 1]).strip(_QUOTES + " ")
    return " ".join(kept).rstrip(",;:-") + "."


def _complete(
    prompts: Sequence[str],
    backend: TextBackend,
    *,
    max_new_tokens: int,
    seed: int,
    cache: TextCache | None,
    stats: NarrateStats,
    bar: Progress,
) -> list[str]:
    """Raw completions for ``prompts``: each distinct prompt once, cache first."""
    uses = Counter(prompts)
    unique = list(uses)
    stats.prompts += len(prompts)
    stats.deduplicated += len(prompts) - len(unique)
    identity = backend.identity()
    keys = {
        p: generation_key(identity, p, max_new_tokens=max_new_tokens, seed=seed) for p in unique
    }
    done: dict[str, str] = {}
    if cache is not None:
        cached = cache.get_many(keys.values())
        done = {p: cached[keys[p]] for p in unique if keys[p] in cached}
        stats.cache_hits += len(done)
        stats.cache_misses += len(unique) - len(done)
    bar.update(sum(uses[p] for p in done))
    todo = [p for p in unique if p not in done]
    for start in range(0, len(todo), CHUNK_PROMPTS):
        chunk = todo[start : start + CHUNK_PROMPTS]
        texts = backend.generate(chunk, max_new_tokens=max_new_tokens, seed=seed)
        if len(texts) != len(chunk):
            raise RuntimeError(f"{backend.name} returned {len(texts)} texts for {len(chunk)}")
        fresh = dict(zip(chunk, texts, strict=True))
        if cache is not None:
            cache.put_many({keys[p]: text for p, text in fresh.items()})
        done.update(fresh)
        stats.generated += len(chunk)
        bar.update(sum(uses[p] for p in chunk))
    return [done[p] for p in prompts]


def narrate(
    frame: pl.DataFrame,
    backend: TextBackend,
    settings: TextSettings,
    *,
    seed: int,
    progress: bool = False,
) -> tuple[pl.DataFrame, NarrateStats]:
    """``frame`` plus ``narrative`` (String, null in direct mode) and ``caption`` (String)."""
    started = time.perf_counter()
    stats = NarrateStats(segments=frame.height)
    infos = frame["info_str"].to_list()
    cache = TextCache(settings.cache_dir) if settings.cache_dir is not None else None
    two_stage = settings.mode == "two-stage"
    stages = ("narrative", "caption") if two_stage else ("direct",)

    def run(prompts: list[str], stage: str, max_new_tokens: int, max_words: int) -> list[str]:
        with Progress(stage, len(prompts), unit="segment", enabled=progress) as bar:  # one at once
            raw = _complete(
                prompts,
                backend,
                max_new_tokens=max_new_tokens,
                seed=seed,
                cache=cache,
                stats=stats,
                bar=bar,
            )
        return [clean_completion(text, max_words) for text in raw]

    try:
        narratives: list[str | None] = [None] * frame.height
        if two_stage:
            narratives = run(
                [narrative_prompt(i, settings.prompt_set) for i in infos],
                "narrative",
                settings.narrative_max_new_tokens,
                NARRATIVE_MAX_WORDS,
            )
            caption_prompts = [caption_prompt(n, settings.prompt_set) for n in narratives]
        else:
            caption_prompts = [direct_prompt(i, settings.prompt_set) for i in infos]
        captions = run(
            caption_prompts, stages[-1], settings.caption_max_new_tokens, CAPTION_MAX_WORDS
        )
    finally:
        if cache is not None:
            cache.close()
    stats.seconds = round(time.perf_counter() - started, 3)
    result = frame.with_columns(
        pl.Series("narrative", narratives, dtype=pl.String),
        pl.Series("caption", captions, dtype=pl.String),
    )
    return result, stats
