"""Build ``src/bgm_batch/resources/musiccaps_captions_sample.parquet`` from MusicCaps.

The package ships a small, fixed sample of real human-written music captions so that reverse
generation (``bgm-batch make-pairs --reverse``) and the evaluation tests never read the shared
data folder at run time. MusicCaps is CC-BY-SA 4.0 by Google; the attribution lives in
``resources/ATTRIBUTION_musiccaps_captions.md`` and must ship with the sample.

Usage: python tools/build_caption_sample.py [--csv PATH] [--n 300] [--seed 0] [--out PATH]
"""

from __future__ import annotations

import argparse
import ast
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CSV = Path("/work/shared/data/musiccaps/musiccaps-public.csv")
DEFAULT_OUT = ROOT / "src/bgm_batch/resources/musiccaps_captions_sample.parquet"
MAX_WORDS = 60  # the paper's descriptions are short; very long captions make poor targets


def build_sample(csv: Path, n: int, seed: int) -> pl.DataFrame:
    """``n`` captions of at most ``MAX_WORDS`` words, drawn with ``seed``, sorted by ytid."""
    frame = pl.read_csv(csv).select(
        "ytid",
        "start_s",
        "end_s",
        "caption",
        pl.col("aspect_list").map_elements(ast.literal_eval, return_dtype=pl.List(pl.String)),
    )
    short = frame.filter(pl.col("caption").str.split(" ").list.len() <= MAX_WORDS)
    return short.sample(n, seed=seed, shuffle=True).sort("ytid")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", type=Path, default=DEFAULT_CSV)
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    sample = build_sample(args.csv, args.n, args.seed)
    sample.write_parquet(args.out, compression="zstd")
    print(f"wrote {sample.height} captions to {args.out}")


if __name__ == "__main__":
    main()
