"""Fine-tuning pairs in the paper's instruction/input/output (Alpaca) format.

Two tasks, as in MetaBGM's training set: ``narrative`` (characterized scene data -> narrative)
and ``music`` (narrative -> music description). Two sources:

- ``scene``: a teacher text backend (``hf`` with any model, or ``template``) runs the two-stage
  generation over characterized windows; each window gives one pair of each task;
- ``reverse`` (the paper's "reverse generation"): real music captions (the shipped MusicCaps
  sample) are the outputs, and the teacher writes a scene narrative the music would fit; each
  caption gives one ``music`` pair.

Each record's ``instruction`` is the prompt template of its task with ``{payload}`` where the
``input`` goes, so :func:`render_prompt` rebuilds exactly the prompt the ``hf`` backend receives
at inference time; records without the placeholder render Alpaca-style (instruction, blank line,
input). Records also carry ``task``, ``source`` and ``group`` (the recording, or
``musiccaps:<ytid>``). Pairs are deduplicated, then split into train and validation by group, so
no window of a validation recording is seen in training.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import polars as pl

from bgm_batch.atomic import write_text
from bgm_batch.stages.narrate import clean_completion, narrate
from bgm_batch.text.prompts import NARRATIVE_MAX_WORDS, PAYLOAD, get_prompt_set

CAPTION_SAMPLE = "musiccaps_captions_sample.parquet"

# The reverse-generation prompt: the paper matched captions with "suitable Minecraft scenes"
# through GPT-3.5 without printing its prompt; this one asks for what stage 1 produces (a
# present-tense real-world narrative of at most 50 words, no 'game' or 'player').
REVERSE_PROMPT = (
    "The following is a description of a piece of background music:\n{payload}\n\nImagine a "
    "moment in an open world of plains, forests, deserts, oceans, snowy mountains, caves and "
    "strange other dimensions, by day or by night, calm or under attack by monsters, where this "
    "music would fit. Describe the situation as a real-world scenario in a narrative manner. Do "
    "not use terms like 'game' or 'player.' Please provide a concise description of no more "
    "than 50 words."
)


class PairsError(ValueError):
    """Nothing to build pairs from, or a teacher that cannot do the task."""


@dataclass(frozen=True)
class Pair:
    """One instruction/input/output record and where it came from."""

    instruction: str
    input: str
    output: str
    task: str  # "narrative" | "music"
    source: str  # "scene" | "reverse"
    group: str  # split unit: recording id, or musiccaps:<ytid>


def render_prompt(record: Pair | dict[str, Any]) -> str:
    """The user prompt of a record: its instruction with the input in the ``{payload}`` slot."""
    fields = asdict(record) if isinstance(record, Pair) else record
    instruction, payload = fields["instruction"], fields.get("input", "")
    if PAYLOAD in instruction:
        return instruction.replace(PAYLOAD, payload)
    return f"{instruction}\n\n{payload}" if payload else instruction


def _clean(text: str) -> str:
    return " ".join(text.split())


def scene_pairs(narrated: pl.DataFrame, prompt_set: str = "paper") -> list[Pair]:
    """Both tasks from a two-stage narrated frame (recording, index, info_str, narrative,
    caption); windows without a narrative or caption give no pair of that task."""
    templates = get_prompt_set(prompt_set)
    pairs: list[Pair] = []
    for row in narrated.sort("recording", "index").iter_rows(named=True):
        narrative, caption = _clean(row.get("narrative") or ""), _clean(row.get("caption") or "")
        if narrative:
            pairs.append(
                Pair(
                    templates.narrative,
                    row["info_str"],
                    narrative,
                    "narrative",
                    "scene",
                    row["recording"],
                )
            )
        if narrative and caption:
            pairs.append(
                Pair(templates.caption, narrative, caption, "music", "scene", row["recording"])
            )
    return pairs


def load_caption_sample() -> pl.DataFrame:
    """The shipped MusicCaps sample (ytid, start_s, end_s, caption, aspect_list); CC-BY-SA 4.0,
    see ``resources/ATTRIBUTION_musiccaps_captions.md``."""
    path = resources.files("bgm_batch") / "resources" / CAPTION_SAMPLE
    return pl.read_parquet(Path(str(path)))


def reverse_pairs(
    captions: pl.DataFrame,
    teacher: Any,
    *,
    seed: int,
    max_new_tokens: int = 80,
    prompt_set: str = "paper",
) -> list[Pair]:
    """``music`` pairs from real captions: the teacher imagines the scene, the caption is the
    output. ``captions`` needs ``ytid`` and ``caption``."""
    if getattr(teacher, "name", "") == "template":
        raise PairsError(
            "reverse generation needs a language model teacher (--text hf); "
            "the template backend only reads scene data"
        )
    rows = captions.select("ytid", "caption").rows()
    prompts = [REVERSE_PROMPT.replace(PAYLOAD, caption) for _, caption in rows]
    narratives = teacher.generate(prompts, max_new_tokens=max_new_tokens, seed=seed)
    instruction = get_prompt_set(prompt_set).caption
    return [
        Pair(instruction, narrative, _clean(caption), "music", "reverse", f"musiccaps:{ytid}")
        for (ytid, caption), raw in zip(rows, narratives, strict=True)
        if (narrative := clean_completion(raw, NARRATIVE_MAX_WORDS))
    ]


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().lower()


def deduplicate(pairs: Iterable[Pair]) -> list[Pair]:
    """First occurrence of each (instruction, input, output), compared case- and
    whitespace-insensitively; run before the split so a duplicate cannot leak across it."""
    seen: set[tuple[str, str, str]] = set()
    unique = []
    for pair in pairs:
        key = (pair.instruction, _norm(pair.input), _norm(pair.output))
        if key not in seen:
            seen.add(key)
            unique.append(pair)
    return unique


def split_by_group(
    pairs: Sequence[Pair], val_fraction: float, seed: int
) -> tuple[list[Pair], list[Pair]]:
    """``(train, validation)``: whole groups go to validation, about ``val_fraction`` of the
    groups (at least one when there are two or more and the fraction is positive)."""
    groups = sorted({p.group for p in pairs})
    random.Random(seed).shuffle(groups)
    n_val = 0
    if len(groups) >= 2 and val_fraction > 0:
        n_val = min(len(groups) - 1, max(1, round(val_fraction * len(groups))))
    held_out = set(groups[:n_val])
    train = [p for p in pairs if p.group not in held_out]
    return train, [p for p in pairs if p.group in held_out]


def write_jsonl(pairs: Iterable[Pair], path: Path) -> None:
    """One JSON object per line (instruction, input, output, task, source, group), atomically."""
    write_text(path, "".join(json.dumps(asdict(p), ensure_ascii=False) + "\n" for p in pairs))


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Records of a pairs file; each needs at least ``instruction`` and ``output``."""
    records = []
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        record = json.loads(line)
        if not isinstance(record, dict) or not {"instruction", "output"} <= record.keys():
            raise PairsError(f"{path}:{number}: a record needs 'instruction' and 'output'")
        records.append(record)
    return records


@dataclass(frozen=True)
class PairsResult:
    """Where the pairs went and how many of each kind."""

    train: Path
    validation: Path
    n_train: int
    n_validation: int
    n_duplicates: int
    counts: dict[str, int]  # "<source>/<task>" -> pairs after deduplication

    def summary(self) -> str:
        kinds = ", ".join(f"{k}: {v}" for k, v in sorted(self.counts.items()))
        return (
            f"{self.n_train} train + {self.n_validation} validation pairs ({kinds}; "
            f"{self.n_duplicates} duplicates dropped) in {self.train.parent}"
        )


def make_pairs(
    out_dir: Path,
    teacher: Any,
    *,
    frame: pl.DataFrame | None = None,
    captions: pl.DataFrame | None = None,
    text_settings: Any = None,
    seed: int = 0,
    val_fraction: float = 0.1,
    progress: bool = False,
) -> PairsResult:
    """Build, deduplicate, split and write pairs: ``out_dir/train.jsonl``,
    ``validation.jsonl`` and ``pairs.json`` (counts and the teacher's identity).

    ``frame``: characterized windows for scene pairs (narrated here, two-stage, with
    ``text_settings``); ``captions``: real captions for reverse generation (e.g.
    ``load_caption_sample().head(n)``). At least one of the two.
    """
    if frame is None and captions is None:
        raise PairsError("give characterized windows, captions for reverse generation, or both")
    prompt_set = getattr(text_settings, "prompt_set", "paper")
    pairs: list[Pair] = []
    if frame is not None:
        two_stage = text_settings.model_copy(update={"mode": "two-stage"})
        narrated, _ = narrate(frame, teacher, two_stage, seed=seed, progress=progress)
        pairs += scene_pairs(narrated, prompt_set)
    if captions is not None:
        max_tokens = getattr(text_settings, "narrative_max_new_tokens", 80)
        pairs += reverse_pairs(
            captions, teacher, seed=seed, max_new_tokens=max_tokens, prompt_set=prompt_set
        )
    unique = deduplicate(pairs)
    if not unique:
        raise PairsError("the teacher produced no usable pair")
    train, validation = split_by_group(unique, val_fraction, seed)
    out_dir = Path(out_dir)
    write_jsonl(train, out_dir / "train.jsonl")
    write_jsonl(validation, out_dir / "validation.jsonl")
    counts: dict[str, int] = {}
    for pair in unique:
        counts[f"{pair.source}/{pair.task}"] = counts.get(f"{pair.source}/{pair.task}", 0) + 1
    result = PairsResult(
        out_dir / "train.jsonl",
        out_dir / "validation.jsonl",
        len(train),
        len(validation),
        len(pairs) - len(unique),
        counts,
    )
    manifest = {
        "teacher": teacher.identity(),
        "seed": seed,
        "val_fraction": val_fraction,
        "prompt_set": prompt_set,
        "n_train": len(train),
        "n_validation": len(validation),
        "n_duplicates": result.n_duplicates,
        "counts": counts,
        "validation_groups": sorted({p.group for p in validation}),
    }
    write_text(out_dir / "pairs.json", json.dumps(manifest, indent=2) + "\n")
    return result
