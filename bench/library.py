"""Benchmark: text-to-track retrieval of the library ranker on real human captions.

MusicCaps (Google, CC-BY-SA 4.0): each clip has a free-text caption and a musician's aspect
list. The clips play the library's tracks, described by their aspect lists (as a library's
tags would describe them); each caption is a query against a pool of 500 tracks that holds
its own clip once (MuseChat's pools of 500). Reported per pool and averaged: Recall@1/5/10
(%) and the median rank of the right track.

- ``minilm``: the plain MiniLM baseline, cosine of the caption and aspect-list embeddings;
- ``ranker lexical=W``: the library ranker (``bgm_batch.library.rank.Ranker``) on the same
  embeddings plus W times its BM25 term (no audio features or CLAP: MusicCaps ships no audio);
- ``+ feedback``: one simulated refinement turn for every query whose first pick is wrong:
  "more A, B, C" with up to three aspects of the right track that the first pick lacks, given
  on the first pick (MuseChat's second turn, with the user simulated from the target's tags).

Data: the bundled ``bench/data/musiccaps_retrieval.parquet`` (2,000 clips drawn at random,
seed 0; see ``bench/data/ATTRIBUTION.md``) or ``--csv musiccaps-public.csv``; rebuild the
bundled file with ``--write-subset``.

Run: ``python bench/library.py [--pools 4] [--json OUT]`` (MiniLM on CPU: about 40 texts/s).
"""

from __future__ import annotations

import argparse
import ast
import json
import time
from pathlib import Path

import numpy as np
import polars as pl

from bgm_batch.evaluation.embeddings import load_embedder
from bgm_batch.library import rank
from bgm_batch.library.index import LibraryIndex

BUNDLED = Path(__file__).parent / "data" / "musiccaps_retrieval.parquet"
POOL = 500
SUBSET = 2000
FEEDBACK_ASPECTS = 3
LEXICAL_WEIGHTS = (0.0, 0.1, 0.3, 0.5)


def read_csv(path: Path, n: int, seed: int = 0) -> pl.DataFrame:
    """``n`` random MusicCaps clips (ytid, caption, aspects as one comma-joined string)."""
    table = pl.read_csv(path).select("ytid", "caption", "aspect_list")
    table = table.sample(n, seed=seed, shuffle=True)
    aspects = [", ".join(ast.literal_eval(a)) for a in table["aspect_list"]]
    return table.select("ytid", "caption").with_columns(pl.Series("aspects", aspects))


class CachedEncoder:
    """MiniLM with a text -> vector cache: every text is embedded once for the whole run."""

    def __init__(self) -> None:
        self.embedder = load_embedder()
        self.cache: dict[str, np.ndarray] = {}

    def __call__(self, texts: list[str]) -> np.ndarray:
        todo = [t for t in dict.fromkeys(texts) if t not in self.cache]
        if todo:
            self.cache.update(zip(todo, self.embedder.encode(todo), strict=True))
        return np.stack([self.cache[t] for t in texts])


def ranks(scores: np.ndarray) -> np.ndarray:
    """1-based rank of the right track (query i's track is track i) per query."""
    right = scores[np.arange(len(scores)), np.arange(len(scores))]
    return 1 + (scores > right[:, None]).sum(axis=1)


def metrics(rank_list: list[np.ndarray]) -> dict[str, float]:
    """Recall@1/5/10 (%) and median rank, averaged over the pools."""
    out = {}
    for k in (1, 5, 10):
        out[f"R@{k}"] = float(np.mean([100 * (r <= k).mean() for r in rank_list]))
    out["median rank"] = float(np.mean([np.median(r) for r in rank_list]))
    return out


def feedback_text(target: str, first: str) -> str:
    """ "more ..." with the target's aspects the first pick lacks ("" when none)."""
    have = {a.strip().lower() for a in first.split(",")}
    missing = [a.strip() for a in target.split(",") if a.strip().lower() not in have]
    return "more " + ", ".join(missing[:FEEDBACK_ASPECTS]) if missing else ""


def refined_ranks(ranker: rank.Ranker, items: list[rank.Stretch], scores: np.ndarray):
    """Ranks after one simulated feedback turn on each wrong first pick."""
    files, aspects = ranker.index.tracks["file"].to_list(), ranker.index.tracks["text"].to_list()
    out = ranks(scores)
    for i in map(int, np.flatnonzero(out > 1)):
        first = int(np.argmax(scores[i]))
        text = feedback_text(aspects[i], aspects[first])
        if text:
            turn = rank.Feedback(text, previous={items[i].id: files[first]})
            row = ranker.scores([items[i]], [turn])[0]
            out[i] = 1 + int((row > row[i]).sum())
    return out


def pool_ranker(pool: pl.DataFrame, encode: CachedEncoder, lexical: float) -> rank.Ranker:
    """The library ranker over one pool: tracks are the clips, described by their aspects."""
    tracks = pool.select(pl.col("ytid").alias("file"), pl.col("aspects").alias("text"))
    index = LibraryIndex(Path("."), tracks, encode(tracks["text"].to_list()))
    return rank.Ranker(index, encode, lexical_weight=lexical, feature_weight=0.0)


def queries_of(pool: pl.DataFrame) -> list[rank.Stretch]:
    return [
        rank.Stretch(f"q{i}", "musiccaps", [i], 0.0, 10.0, "", [caption], [])
        for i, caption in enumerate(pool["caption"])
    ]


def run(
    table: pl.DataFrame, pools: int, with_feedback: tuple[float, ...]
) -> dict[str, dict[str, float]]:
    """Every method's metrics over ``pools`` pools of 500."""
    encode = CachedEncoder()
    results: dict[str, list[np.ndarray]] = {}
    for p in range(pools):
        pool = table.slice(p * POOL, POOL)
        encode(pool["caption"].to_list() + pool["aspects"].to_list())
        base = encode(pool["caption"].to_list()) @ encode(pool["aspects"].to_list()).T
        results.setdefault("minilm (baseline)", []).append(ranks(base))
        for weight in LEXICAL_WEIGHTS:
            ranker, items = pool_ranker(pool, encode, weight), queries_of(pool)
            scores = ranker.scores(items)
            results.setdefault(f"ranker lexical={weight}", []).append(ranks(scores))
            if weight in with_feedback:
                refined = refined_ranks(ranker, items, scores)
                results.setdefault(f"ranker lexical={weight} + feedback", []).append(refined)
    return {name: metrics(r) for name, r in results.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--csv", type=Path, help="musiccaps-public.csv (default: bundled subset)")
    parser.add_argument("--pools", type=int, default=SUBSET // POOL)
    parser.add_argument(
        "--feedback-weights",
        type=float,
        nargs="+",
        default=[0.0, 0.3],
        help="lexical weights whose ranker also gets the feedback turn",
    )
    parser.add_argument("--write-subset", action="store_true", help="write the bundled subset")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.write_subset:
        BUNDLED.parent.mkdir(exist_ok=True)
        read_csv(args.csv, SUBSET).write_parquet(BUNDLED)
        print(f"wrote {BUNDLED}")
        return
    table = read_csv(args.csv, args.pools * POOL) if args.csv else pl.read_parquet(BUNDLED)
    if table.height < args.pools * POOL:
        raise SystemExit(f"{table.height} clips: not enough for {args.pools} pools of {POOL}")
    started = time.perf_counter()
    results = run(table, args.pools, tuple(args.feedback_weights))
    print(f"{args.pools} pools of {POOL}, {time.perf_counter() - started:.0f} s")
    print("| method | R@1 | R@5 | R@10 | median rank |\n| --- | --- | --- | --- | --- |")
    for name, m in results.items():
        print(
            f"| {name} | {m['R@1']:.1f} | {m['R@5']:.1f} | {m['R@10']:.1f} "
            f"| {m['median rank']:.1f} |"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
