"""Benchmark: two-stage text generation (narrative -> caption), batched against batch size 1.

Runs ``stages.narrate.narrate`` with the ``hf`` backend's generation code on a random Llama
built in memory, with fixed output lengths (min_new_tokens = max_new_tokens) so every run does
the same work, and prints segments/s and new tokens/s for both runs of one process.

    .venv/bin/python bench/text.py                                    # CPU, small random Llama
    python bench/text.py --device cuda --arch llama2-7b --segments 256 --single-segments 8

Caption prompts embed the generated narratives; a random model's narratives can coincide, and
narrate sends a repeated prompt once, hence the "prompts generated" column: new tokens/s compares
the runs on equal terms.
"""

from __future__ import annotations

import argparse
import json
import time

import polars as pl
import torch

from bgm_batch.settings import TextSettings
from bgm_batch.stages.narrate import narrate
from bgm_batch.testing.tiny_llm import LLAMA2_7B_CONFIG, random_llama, train_tokenizer
from bgm_batch.text.hf import HFTextBackend
from bgm_batch.text.prompts import narrative_prompt

ARCHS = {
    "small": {
        "hidden_size": 256,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
        "intermediate_size": 688,
    },
    "llama2-7b": LLAMA2_7B_CONFIG,
}
BIOMES = ["Plains", "Forest", "Desert", "Snowy Taiga", "Deep Dark", "Nether Wastes", "Beach"]
TIMES = ["Sunrise", "Day", "Noon", "Afternoon", "Sunset", "Night", "Midnight"]


def characterized_frame(n: int) -> pl.DataFrame:
    """``n`` distinct characterized windows (no two prompts alike: nothing is deduplicated)."""
    infos = [
        json.dumps(
            {
                "Biome": {BIOMES[i % len(BIOMES)]: 100.0},
                "Time": {TIMES[(i // len(BIOMES)) % len(TIMES)]: 100.0},
                "Climate": {"Clear": 100.0},
                "Motion": {"Sprinting": round(100 * ((i * 37) % 101) / 101, 2)},
                "Placing": {"On Ground": 100.0},
            }
        )
        for i in range(n)
    ]
    return pl.DataFrame({"recording": ["bench"] * n, "index": list(range(n)), "info_str": infos})


def measure(backend: HFTextBackend, settings: TextSettings, segments: int) -> dict:
    backend.tokens_generated, backend.batch_sizes = 0, []
    if backend.device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    _, stats = narrate(characterized_frame(segments), backend, settings, seed=0)
    if backend.device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    return {
        "segments": segments,
        "generated": stats.generated,
        "seconds": seconds,
        "segments/s": segments / seconds,
        "new tokens/s": backend.tokens_generated / seconds,
        "rows/batch": sum(backend.batch_sizes) / len(backend.batch_sizes),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--arch", choices=sorted(ARCHS), default="small")
    parser.add_argument("--segments", type=int, default=16, help="segments in the batched run")
    parser.add_argument(
        "--single-segments",
        type=int,
        default=4,
        help="segments in the batch-size-1 run (rates compare per segment)",
    )
    parser.add_argument(
        "--token-budget",
        type=int,
        default=None,
        help="prompt + new tokens per batch (default 8192 CPU, 32768 CUDA)",
    )
    parser.add_argument("--narrative-tokens", type=int, default=80)
    parser.add_argument("--caption-tokens", type=int, default=32)
    args = parser.parse_args()

    torch.set_grad_enabled(False)
    dtype = torch.bfloat16 if args.device.startswith("cuda") else torch.float32
    tokenizer = train_tokenizer(vocab_size=1024)
    model = random_llama(tokenizer, seed=0, dtype=dtype, device=args.device, **ARCHS[args.arch])
    budget = args.token_budget or (32768 if args.device.startswith("cuda") else 8192)
    settings = TextSettings(
        backend="hf",
        narrative_max_new_tokens=args.narrative_tokens,
        caption_max_new_tokens=args.caption_tokens,
        cache_dir=None,
    )
    backend = HFTextBackend(
        model,
        tokenizer,
        model_id=f"random-{args.arch}",
        revision="bench",
        token_budget=budget,
        fixed_length=True,
    )
    prompt_tokens = len(backend.encode(narrative_prompt(characterized_frame(1)["info_str"][0])))
    backend.generate(["warm up"], max_new_tokens=4, seed=0)

    rows = {"batched": measure(backend, settings, args.segments)}
    backend.token_budget = 1  # every batch holds one prompt
    rows["batch size 1"] = measure(backend, settings, args.single_segments)

    params = sum(p.numel() for p in model.parameters()) / 1e6
    print(
        f"# two-stage text generation: {args.arch} ({params:.0f} M parameters, {dtype}), "
        f"{args.device}, token budget {budget}, new tokens {args.narrative_tokens}+"
        f"{args.caption_tokens} per segment, narrative prompt ~{prompt_tokens} tokens"
    )
    print(
        "| run | segments | prompts generated | seconds | segments/s | new tokens/s | rows/batch |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, row in rows.items():
        print(
            f"| {name} | {row['segments']} | {row['generated']} | {row['seconds']:.1f} | "
            f"{row['segments/s']:.2f} | {row['new tokens/s']:.0f} | {row['rows/batch']:.1f} |"
        )
    for metric in ("segments/s", "new tokens/s"):
        ratio = rows["batched"][metric] / rows["batch size 1"][metric]
        print(f"batched / batch size 1: {ratio:.1f}x {metric}")


if __name__ == "__main__":
    main()
