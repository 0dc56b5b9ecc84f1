"""Benchmark: one real LoRA epoch of a LLaMA-2 architecture with random weights.

Measures what docs/finetune.md promises for the paper's recipe (1,972 pairs, LoRA on the
attention projections): optimizer step time, tokens per second, peak GPU memory, epoch time.
The model is built from the published LLaMA-2-7B sizes with random weights (no download); the
pairs are synthetic token sequences with the length profile of the real ones (prompt ~160
tokens, answer ~48). The same ``training.finetune.train_lora`` loop as ``bgm-batch finetune``
runs twice in one process, without and with gradient checkpointing, and the table gives the
ratios between the two.

    python bench/finetune.py --arch llama2-7b --device cuda          # GPU, ~10 min
    python bench/finetune.py --arch tiny --device cpu --pairs 64     # CPU path, seconds
"""

from __future__ import annotations

import argparse
import random
import tempfile
from pathlib import Path

import torch

from bgm_batch.testing.tiny_llm import LLAMA2_7B_CONFIG, TINY_CONFIG, random_llama, train_tokenizer
from bgm_batch.training.finetune import IGNORE, Example, FinetuneConfig, train_lora

ARCHS = {"tiny": TINY_CONFIG, "llama2-7b": LLAMA2_7B_CONFIG}


def synthetic_examples(n: int, vocab: int, prompt: int, answer: int, seed: int) -> list[Example]:
    """``n`` random sequences, prompt and answer lengths within +-25 % of the given means."""
    rng = random.Random(seed)
    examples = []
    for _ in range(n):
        p = rng.randint(int(prompt * 0.75), int(prompt * 1.25))
        a = rng.randint(int(answer * 0.75), int(answer * 1.25))
        ids = [rng.randrange(4, vocab) for _ in range(p + a)]
        examples.append(Example(ids, [IGNORE] * p + ids[p:]))
    return examples


def run(args: argparse.Namespace, checkpointing: bool, pairs: int | None = None) -> dict:
    tokenizer = train_tokenizer()
    dtype = torch.bfloat16 if args.device.startswith("cuda") else torch.float32
    model = random_llama(tokenizer, dtype=dtype, device=args.device, **ARCHS[args.arch])
    vocab = model.config.vocab_size
    pairs = pairs or args.pairs
    train = synthetic_examples(pairs, vocab, args.prompt_tokens, args.answer_tokens, 0)
    val = synthetic_examples(max(pairs // 20, 2), vocab, args.prompt_tokens, args.answer_tokens, 1)
    config = FinetuneConfig(
        epochs=1,
        batch_size=args.batch_size,
        grad_accum=args.grad_accum,
        rank=args.rank,
        alpha=2 * args.rank,
        device=args.device,
        max_length=1024,
        gradient_checkpointing=checkpointing,
    )
    with tempfile.TemporaryDirectory() as out:
        _, result = train_lora(
            model, train, val, config, Path(out), pad_id=0, base=args.arch, log=lambda _: None
        )
    del model
    if args.device.startswith("cuda"):
        torch.cuda.empty_cache()
    return {
        "variant": "grad checkpointing" if checkpointing else "plain",
        "steps": result.steps,
        "step_s": result.step_seconds,
        "tokens_s": result.tokens_per_second,
        "epoch_s": result.seconds,
        "peak_gib": result.peak_memory_gib,
        "trainable": result.trainable_params,
        "total": result.total_params,
        "val_loss": result.val_loss[-1],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=sorted(ARCHS), default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--pairs", type=int, default=1972, help="the paper's training set size")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--grad-accum", type=int, default=4)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--prompt-tokens", type=int, default=160)
    parser.add_argument("--answer-tokens", type=int, default=48)
    parser.add_argument("--variants", choices=["both", "plain", "checkpointing"], default="both")
    args = parser.parse_args()
    torch.manual_seed(0)
    chosen = {"both": (False, True), "plain": (False,), "checkpointing": (True,)}[args.variants]
    run(args, chosen[0], pairs=args.batch_size * args.grad_accum)  # warm-up: one step, untimed
    rows = [run(args, checkpointing) for checkpointing in chosen]
    print(
        f"arch {args.arch}, device {args.device}, {args.pairs} pairs, batch "
        f"{args.batch_size} x {args.grad_accum}, LoRA rank {args.rank} on q/k/v/o; one epoch"
    )
    print(
        f"{'variant':<20}{'steps':>6}{'step s':>9}{'tokens/s':>10}{'epoch s':>9}"
        f"{'peak GiB':>10}{'trainable':>12}{'total':>15}"
    )
    for r in rows:
        peak = "-" if r["peak_gib"] is None else f"{r['peak_gib']:.2f}"
        print(
            f"{r['variant']:<20}{r['steps']:>6}{r['step_s']:>9.3f}{r['tokens_s']:>10.0f}"
            f"{r['epoch_s']:>9.1f}{peak:>10}{r['trainable']:>12,}{r['total']:>15,}"
        )
    if len(rows) == 2:
        plain, ckpt = rows
        ratio = ckpt["step_s"] / plain["step_s"]
        memory = f"{ckpt['peak_gib'] / plain['peak_gib']:.2f}" if plain["peak_gib"] else "-"
        print(f"checkpointing / plain: step time x{ratio:.2f}, peak memory x{memory}")


if __name__ == "__main__":
    main()
