"""Throughput of the musicgen backend: one stream with continuation vs batched step-k.

A session renders R runs of K segments each; segment k of a run continues from the tail of
segment k-1. Single stream renders one segment per call, run after run; step-k batching renders
step k of every run in one call. Both use the real backend on a random-weight model built from
configs (no download) and saved/loaded by path. Prints seconds of audio per second of wall time
and the ratio, measured in one run.

CPU (tiny model):      .venv/bin/python bench/musicgen.py
GPU (musicgen-small):  .venv/bin/python bench/musicgen.py --device cuda --arch musicgen-small
(on GPU the single stream renders 4 of the 32 runs by default: its rate is per second of audio,
and all 32 one by one would take most of an hour)
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from bgm_batch.audio.protocol import AUDIO_BACKENDS, SegmentRequest
from bgm_batch.settings import AudioSettings
from bgm_batch.testing.tiny_musicgen import ARCHITECTURES, build_musicgen

CAPTIONS = ("calm ambient piano night", "epic battle drums strings", "mysterious cave synth")


def _request(run: int, step: int, seconds: float, tail: np.ndarray | None, rate: int):
    return SegmentRequest(
        key=f"run{run}-{step}",
        caption=CAPTIONS[run % len(CAPTIONS)],
        duration_s=seconds,
        seed=1000 * run + step,
        transition="start" if tail is None else "continue",
        prompt_audio=tail,
        prompt_sample_rate=None if tail is None else rate,
    )


def _session(backend, runs: int, steps: int, seconds: float, prompt_s: float, batched: bool):
    """Render the session; returns wall seconds and seconds of audio produced."""
    rate = backend.sample_rate
    tails: list[np.ndarray | None] = [None] * runs
    start = time.perf_counter()
    for step in range(steps):
        requests = [_request(r, step, seconds, tails[r], rate) for r in range(runs)]
        if batched:
            out = backend.render(requests)
        else:
            out = [backend.render([request])[0] for request in requests]
        tails = [segment.audio[:, -int(prompt_s * rate) :] for segment in out]
    return time.perf_counter() - start, runs * steps * seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--arch", default="tiny", choices=ARCHITECTURES)
    parser.add_argument("--runs", type=int, help="runs batched at each step (8 CPU, 32 GPU)")
    parser.add_argument("--single-runs", type=int, help="runs rendered one by one (all; GPU 4)")
    parser.add_argument("--steps", type=int, default=3, help="segments per run")
    parser.add_argument("--seconds", type=float, help="segment length (2 s CPU, 10 s GPU)")
    parser.add_argument("--prompt-seconds", type=float, default=1.0)
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    args = parser.parse_args()
    gpu = args.device == "cuda"
    runs = args.runs or (32 if gpu else 8)
    single_runs = args.single_runs or (4 if gpu else runs)
    seconds = args.seconds or (10.0 if gpu else 2.0)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as folder:
        model_dir = build_musicgen(Path(folder) / args.arch, arch=args.arch)
        settings = AudioSettings(
            backend="musicgen", model=str(model_dir), device=args.device, batch_size=runs
        )
        backend = AUDIO_BACKENDS.create("musicgen", settings)
    _session(backend, 2, 2, min(seconds, 1.0), args.prompt_seconds, batched=True)  # warm-up

    rows = []
    for name, n, batched in (("single stream", single_runs, False), ("step-k batch", runs, True)):
        wall, audio = _session(backend, n, args.steps, seconds, args.prompt_seconds, batched)
        rows.append((name, n, audio, wall, audio / wall))
    device = torch.cuda.get_device_name() if gpu else f"cpu x{torch.get_num_threads()} threads"
    print(f"musicgen bench: arch={args.arch} dtype={backend.identity()['dtype']} device={device}")
    print(f"{args.steps} segments/run of {seconds:g} s, prompt {args.prompt_seconds:g} s")
    print(f"{'mode':<14} {'runs':>5} {'audio s':>9} {'wall s':>8} {'audio s/s':>10} {'ratio':>6}")
    for name, n, audio, wall, rate in rows:
        ratio = rate / rows[0][4]
        print(f"{name:<14} {n:>5} {audio:>9.1f} {wall:>8.2f} {rate:>10.2f} {ratio:>6.2f}")


if __name__ == "__main__":
    main()
