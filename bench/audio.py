"""Real-time factor of the offline audio path: synth render, stitch, FLAC write.

One hour of gameplay (360 ten-second windows) wanders through a few scenes (day plains,
night forest, a cave, fights); the transition rules plan it, the ``synth`` backend renders
it into a fresh work folder, a second pass shows the resume path (everything reused), and
the stitch joins and normalises the track. Prints a table; RTF = audio seconds / wall
seconds (higher is faster). CPU seconds (all threads) are shown too: on a shared machine
they are steadier than wall time.

    .venv/bin/python bench/audio.py [--windows 360] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

from bgm_batch.audio.protocol import AUDIO_BACKENDS
from bgm_batch.data.game_profile import load_profile
from bgm_batch.settings import AudioSettings
from bgm_batch.stages.render import render_segments
from bgm_batch.stages.stitch import stitch_inputs, stitch_track
from bgm_batch.stages.transitions import plan_transitions

SCENES = [  # (biome, time, combat, caption a text backend might write)
    (
        "Plains",
        "Day",
        False,
        "Gentle and peaceful music with a soft piano melody, flute and "
        "warm strings, calm and relaxing.",
    ),
    (
        "Forest",
        "Night",
        False,
        "Dark mysterious ambient music, slow and eerie, with soft pads and a lonely clarinet.",
    ),
    (
        "Cave",
        "Night",
        False,
        "Echoing cave music, mysterious and cold, with bells and a low contrabass.",
    ),
    (
        "Plains",
        "Day",
        True,
        "Intense fast battle music with pounding drums, brass and strings, urgent and aggressive.",
    ),
]


class Timer:
    """Wall and CPU seconds of a block, appended to a list of timings."""

    def __init__(self, timings: list, label: str):
        self.label, self.note = label, ""
        timings.append(self)

    def __enter__(self) -> Timer:
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *_: object) -> None:
        self.wall = time.perf_counter() - self._wall
        self.cpu = time.process_time() - self._cpu


def gameplay(windows: int, seed: int) -> pl.DataFrame:
    """A characterized frame plus captions: scenes held for 3-20 windows, fights 1-4."""
    rng = np.random.default_rng(seed)
    rows, scene = [], 0
    while len(rows) < windows:
        scene = int(rng.choice([s for s in range(len(SCENES)) if s != scene]))
        biome, time_of_day, combat, caption = SCENES[scene]
        for _ in range(int(rng.integers(1, 5) if combat else rng.integers(3, 21))):
            info = (
                {"Biome": {biome: 100.0}}
                if combat
                else {"Biome": {biome: 100.0}, "Time": {time_of_day: 100.0}}
            )
            rows.append(
                {
                    "recording": "bench",
                    "index": len(rows),
                    "combat": combat,
                    "info_str": json.dumps(info),
                    "caption": caption,
                }
            )
    frame = pl.DataFrame(rows[:windows])
    return frame.with_columns(start_s=pl.col("index") * 10.0, end_s=pl.col("index") * 10.0 + 10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=360)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    settings = AudioSettings()
    planned = plan_transitions(gameplay(args.windows, args.seed), load_profile("minecraft"))
    backend = AUDIO_BACKENDS.create("synth", settings)
    audio_s = args.windows * settings.segment_seconds
    timings = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "work"
        for label in ("render (fresh)", "render (resume, all reused)"):
            with Timer(timings, label) as timer:
                result = render_segments(planned, backend, settings, seed=args.seed, work_dir=work)
            timer.note = f"{result.rendered} rendered, {result.reused} reused"
        joined = planned.join(result.segments, on=["recording", "index"])
        with Timer(timings, "stitch (2 streaming passes, limiter, seams, FLAC)") as timer:
            stitched = stitch_track(stitch_inputs(joined), settings, Path(tmp) / "track.flac")
        timer.note = f"{stitched.loudness_lufs:.1f} LUFS, {stitched.true_peak_dbtp:.1f} dBTP"
    restarts = planned.filter(pl.col("transition") == "restart").height
    print(
        f"{args.windows} windows = {audio_s / 60:.0f} min of audio, {restarts} restarts, "
        f"batch_size {settings.batch_size}"
    )
    print(f"| {'step':<52} | {'wall s':>7} | {'CPU s':>7} | {'RTF':>6} | note")
    print(f"|{'-' * 54}|{'-' * 9}|{'-' * 9}|{'-' * 8}|------")
    for t in timings:
        rtf = audio_s / t.wall
        print(f"| {t.label:<52} | {t.wall:7.2f} | {t.cpu:7.2f} | {rtf:6.0f} | {t.note}")
    fresh = [timings[0], *timings[2:]]
    wall, cpu = sum(t.wall for t in fresh), sum(t.cpu for t in fresh)
    print(f"| {'render (fresh) + stitch':<52} | {wall:7.2f} | {cpu:7.2f} | {audio_s / wall:6.0f} |")
    seams = stitched.seams.with_columns(transition=joined["transition"][1:])
    print("\n| seams | count | RMS-jump ratio median / max | flux ratio median / max |")
    print("|-------|-------|-----------------------------|-------------------------|")
    for (kind,), part in sorted(seams.group_by("transition")):
        print(
            f"| {kind} | {part.height} | {part['rms_ratio'].median():.2f} / "
            f"{part['rms_ratio'].max():.2f} | {part['flux_ratio'].median():.2f} / "
            f"{part['flux_ratio'].max():.2f} |"
        )


if __name__ == "__main__":
    main()
