"""Scoring generated music descriptions against reference captions, as the paper's tables do.

Metrics (all scaled 0-100, the way the paper prints them; docs/evaluation.md has the details):

- ``bleu1`` .. ``bleu4``: corpus-level BLEU with cumulative uniform weights over n-gram orders
  1..n (BLEU-n = BP * exp(mean log p_1..p_n)), no smoothing, brevity penalty against the closest
  reference length, all references of a window at once: the captioning convention
  (coco-caption). Computed by sacrebleu on our tokens (``tokenize="none"``).
- ``meteor``: nltk's METEOR (exact, Porter-stem and WordNet-synonym matching; alpha 0.9, beta 3,
  gamma 0.5), per window the best over its references, then the mean over windows.
- ``rouge_l``: rouge-score's ROUGE-L F1 (no stemming), per window the best over its
  references (``score_multi``), then the mean.
- ``embed_cos``: cosine of all-MiniLM-L6-v2 sentence embeddings (``evaluation.embeddings``), per
  window the best over its references, then the mean: a score that survives rewording.

One tokenisation for every metric: rouge-score's default tokenizer (lowercase; every run of
characters outside ``[a-z0-9]`` separates tokens, so punctuation disappears), which is what the
ROUGE-L numbers use internally anyway.

Predictions and references pair by ``(recording, index)``; a window may have several
references. Rows on either side without a partner are counted and listed, never dropped silently.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

METRICS = ("bleu1", "bleu2", "bleu3", "bleu4", "meteor", "rouge_l", "embed_cos")
KEY = ["recording", "index"]
_KEY_SCHEMA = {"recording": pl.String, "index": pl.Int64}


class EvaluationError(ValueError):
    """Unusable input: a missing column, duplicate predictions, or nothing to pair."""


def tokenize(text: str) -> list[str]:
    """The tokens every metric sees (rouge-score's default tokenizer, without stemming)."""
    from rouge_score import tokenize as rouge_tokenize

    return rouge_tokenize.tokenize(text, None)


def corpus_bleu(
    hypotheses: Sequence[list[str]], references: Sequence[list[list[str]]]
) -> list[float]:
    """BLEU-1..4 (cumulative, uniform weights, no smoothing), 0-100, via sacrebleu."""
    from sacrebleu.metrics import BLEU

    width = max(len(refs) for refs in references)
    streams = [
        [" ".join(refs[i]) if i < len(refs) else None for refs in references] for i in range(width)
    ]
    hyps = [" ".join(tokens) for tokens in hypotheses]
    return [
        BLEU(max_ngram_order=n, tokenize="none", smooth_method="none", force=True)
        .corpus_score(hyps, streams)
        .score
        for n in (1, 2, 3, 4)
    ]


def meteor_scores(
    hypotheses: Sequence[list[str]], references: Sequence[list[list[str]]], nltk_data: Path | None
) -> np.ndarray:
    """nltk METEOR per window (best reference), 0-1; WordNet comes from ``wordnet``."""
    from bgm_batch.evaluation.wordnet import ensure_wordnet

    ensure_wordnet(nltk_data)
    from nltk.translate.meteor_score import meteor_score

    pairs = zip(hypotheses, references, strict=True)
    return np.array([meteor_score(refs, hyp) for hyp, refs in pairs])


def rouge_l_scores(hypotheses: Sequence[str], references: Sequence[list[str]]) -> np.ndarray:
    """rouge-score ROUGE-L F1 per window (best reference), 0-1."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    return np.array(
        [
            scorer.score_multi(refs, hyp)["rougeL"].fmeasure
            for hyp, refs in zip(hypotheses, references, strict=True)
        ]
    )


def embedding_scores(hypotheses: Sequence[str], references: Sequence[list[str]]) -> np.ndarray:
    """Cosine of MiniLM embeddings per window (best reference), -1..1."""
    from bgm_batch.evaluation.embeddings import load_embedder

    embedder = load_embedder()
    flat = [ref for refs in references for ref in refs]
    hyp_vectors = embedder.encode(list(hypotheses))
    ref_vectors = embedder.encode(flat)
    owner = np.repeat(np.arange(len(references)), [len(refs) for refs in references])
    cosines = np.einsum("ij,ij->i", hyp_vectors[owner], ref_vectors)
    best = np.full(len(references), -np.inf)
    np.maximum.at(best, owner, cosines)
    return best


@dataclass(frozen=True)
class CaptionScores:
    """Corpus scores (0-100, ``embed_cos`` None when skipped) and per-window scores (0-1)."""

    corpus: dict[str, float | None]
    per_window: dict[str, np.ndarray]


def score_captions(
    hypotheses: Sequence[str],
    references: Sequence[Sequence[str]],
    *,
    embed: bool = True,
    nltk_data: Path | None = None,
) -> CaptionScores:
    """Score ``hypotheses[i]`` against its references ``references[i]`` (one or more each)."""
    if not hypotheses or len(hypotheses) != len(references):
        raise EvaluationError("need one or more hypotheses, each with its list of references")
    if any(not refs for refs in references):
        raise EvaluationError("every hypothesis needs at least one reference")
    refs = [list(r) for r in references]
    hyp_tokens = [tokenize(h) for h in hypotheses]
    ref_tokens = [[tokenize(r) for r in rs] for rs in refs]
    per_window = {
        "meteor": meteor_scores(hyp_tokens, ref_tokens, nltk_data),
        "rouge_l": rouge_l_scores(list(hypotheses), refs),
    }
    if embed:
        per_window["embed_cos"] = embedding_scores(list(hypotheses), refs)
    corpus: dict[str, float | None] = dict(
        zip(METRICS[:4], corpus_bleu(hyp_tokens, ref_tokens), strict=True)
    )
    for name in ("meteor", "rouge_l", "embed_cos"):
        corpus[name] = float(per_window[name].mean() * 100) if name in per_window else None
    return CaptionScores(corpus, per_window)


def _read_table(path: Path, role: str) -> pl.DataFrame:
    path = Path(path)
    if path.suffix == ".parquet":
        frame = pl.read_parquet(path)
    elif path.suffix == ".csv":
        frame = pl.read_csv(path, schema_overrides=_KEY_SCHEMA)
    else:
        raise EvaluationError(f"{path}: {role} must be a .parquet or .csv file")
    missing = [c for c in (*KEY, "caption") if c not in frame.columns]
    if missing:
        raise EvaluationError(f"{path}: {role} lack column(s) {', '.join(missing)}")
    frame = frame.select(
        pl.col("recording").cast(pl.String),
        pl.col("index").cast(pl.Int64),
        pl.col("caption").cast(pl.String),
    )
    if frame["caption"].null_count():
        raise EvaluationError(f"{path}: {frame['caption'].null_count()} {role} have no caption")
    return frame


def read_predictions(path: Path) -> pl.DataFrame:
    """``recording, index, caption`` from a segments.parquet or CSV; one row per window."""
    frame = _read_table(path, "predictions")
    duplicated = frame.filter(pl.struct(KEY).is_duplicated())
    if duplicated.height:
        first = duplicated.row(0, named=True)
        raise EvaluationError(
            f"{path}: {duplicated.height} predictions share a window, e.g. "
            f"({first['recording']}, {first['index']}); keep one caption per window"
        )
    return frame


def read_references(path: Path) -> pl.DataFrame:
    """``recording, index, caption`` from Parquet or CSV; several rows per window allowed."""
    return _read_table(path, "references")


def _fmt(value: float | None) -> str:
    return f"{'-':>6}" if value is None else f"{value:6.2f}"


@dataclass(frozen=True)
class EvalReport:
    """What ``bgm-batch evaluate`` prints: scores, counts and the rows left unpaired."""

    scores: dict[str, float | None]
    n_pairs: int
    n_references: int
    unmatched: pl.DataFrame  # recording, index, side ("prediction" | "reference")
    per_window: pl.DataFrame = field(repr=False)  # recording, index, meteor, rouge_l[, embed_cos]

    def to_json_dict(self) -> dict[str, Any]:
        """Scores under their metric keys plus the counts; JSON-serialisable."""
        sides = self.unmatched["side"]
        return {
            **{name: (None if v is None else round(v, 4)) for name, v in self.scores.items()},
            "n_pairs": self.n_pairs,
            "n_references": self.n_references,
            "n_unmatched_predictions": int((sides == "prediction").sum()),
            "n_unmatched_references": int((sides == "reference").sum()),
        }

    def to_text(self) -> str:
        """A short human-readable summary, the scores in the paper's order."""
        labels = dict(
            zip(METRICS, ("B-1", "B-2", "B-3", "B-4", "METEOR", "R-L", "Embed-cos"), strict=True)
        )
        lines = [f"{labels[k]:>9}: {_fmt(v)}" for k, v in self.scores.items()]
        counts = self.to_json_dict()
        lines.append(
            f"pairs: {self.n_pairs} windows, {self.n_references} references; unmatched: "
            f"{counts['n_unmatched_predictions']} predictions, "
            f"{counts['n_unmatched_references']} reference windows"
        )
        return "\n".join(lines)


def _only_in(left: pl.DataFrame, right: pl.DataFrame, side: str) -> pl.DataFrame:
    return left.join(right, on=KEY, how="anti").select(KEY).with_columns(side=pl.lit(side))


def pair_up(
    predictions: pl.DataFrame, references: pl.DataFrame
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """``(paired, unmatched)``: paired has ``caption`` and ``references`` (list) per window."""
    grouped = references.group_by(KEY, maintain_order=True).agg(references=pl.col("caption"))
    paired = predictions.join(grouped, on=KEY, how="inner").sort(KEY)
    unmatched = pl.concat(
        [_only_in(predictions, grouped, "prediction"), _only_in(grouped, predictions, "reference")]
    ).sort("side", *KEY)
    return paired, unmatched


def evaluate_frames(
    predictions: pl.DataFrame,
    references: pl.DataFrame,
    *,
    embed: bool = True,
    nltk_data: Path | None = None,
) -> EvalReport:
    """Pair predictions with references by window and score the pairs."""
    paired, unmatched = pair_up(predictions, references)
    if not paired.height:
        raise EvaluationError(
            f"no prediction shares a (recording, index) with a reference "
            f"({predictions.height} predictions, {references.height} references)"
        )
    scores = score_captions(
        paired["caption"].to_list(),
        paired["references"].to_list(),
        embed=embed,
        nltk_data=nltk_data,
    )
    per_window = paired.select(KEY).with_columns(
        pl.Series(name, values) for name, values in scores.per_window.items()
    )
    n_refs = int(paired["references"].list.len().sum())
    return EvalReport(scores.corpus, paired.height, n_refs, unmatched, per_window)


def evaluate_files(
    pred: Path, refs: Path, *, embed: bool = True, nltk_data: Path | None = None
) -> EvalReport:
    """``bgm-batch evaluate PRED --refs REFS``: read both files, pair, score."""
    return evaluate_frames(
        read_predictions(pred), read_references(refs), embed=embed, nltk_data=nltk_data
    )
