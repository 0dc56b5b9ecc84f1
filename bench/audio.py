"""Real-time factor of the offline audio path: synth render, stitch, FLAC write.

One hour of gameplay (360 ten-second windows) wanders through a few scenes (day plains,
night forest, a cave, fights); the transition rules plan it, the ``synth`` backend renders
it into a fresh work folder, a second pass shows the resume path (everything reused), and
the stitch joins and normalises the track. Prints a table; RTF = audio seconds / wall
seconds (higher is faster).

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

from bgm_batch.audio_backends._base import AUDIO_BACKENDS
from bgm_batch.profile import load_profile
from bgm_batch.render import render_segments
from bgm_batch.settings import AudioSettings
from bgm_batch.stitch import stitch_inputs, stitch_track, write_track
from bgm_batch.transitions import plan_transitions

SCENES = [  # (biome, time, combat, caption a text backend might write)
    ("Plains", "Day", False, "Gentle and peaceful music with a soft piano melody, flute and "
     "warm strings, calm and relaxing."),
    ("Forest", "Night", False, "Dark mysterious ambient music, slow and eerie, with soft pads "
     "and a lonely clarinet."),
    ("Cave", "Night", False, "Echoing cave music, mysterious and cold, with bells and a low "
     "contrabass."),
    ("Plains", "Day", True, "Intense fast battle music with pounding drums, brass and "
     "strings, urgent and aggressive."),
]


def gameplay(windows: int, seed: int) -> pl.DataFrame:
    """A characterized frame plus captions: scenes held for 3-20 windows, fights 1-4."""
    rng = np.random.default_rng(seed)
    rows, scene = [], 0
    while len(rows) < windows:
        scene = int(rng.choice([s for s in range(len(SCENES)) if s != scene]))
        biome, time_of_day, combat, caption = SCENES[scene]
        for _ in range(int(rng.integers(1, 5) if combat else rng.integers(3, 21))):
            info = {"Biome": {biome: 100.0}} if combat else {
                "Biome": {biome: 100.0}, "Time": {time_of_day: 100.0}}
            rows.append({"recording": "bench", "index": len(rows), "combat": combat,
                         "info_str": json.dumps(info), "caption": caption})
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
            t0 = time.perf_counter()
            result = render_segments(planned, backend, settings, seed=args.seed, work_dir=work)
            timings.append((label, time.perf_counter() - t0,
                            f"{result.rendered} rendered, {result.reused} reused"))
        joined = planned.join(result.segments, on=["recording", "index"])
        t0 = time.perf_counter()
        stitched = stitch_track(stitch_inputs(joined), settings)
        timings.append(("stitch (load, crossfade, loudness, true peak, seams)",
                        time.perf_counter() - t0,
                        f"{stitched.loudness_lufs:.1f} LUFS, {stitched.true_peak_dbtp:.1f} dBTP"))
        t0 = time.perf_counter()
        write_track(Path(tmp) / "track.flac", stitched.audio, stitched.sample_rate)
        timings.append(("write track.flac", time.perf_counter() - t0, ""))
    restarts = planned.filter(pl.col("transition") == "restart").height
    print(f"{args.windows} windows = {audio_s / 60:.0f} min of audio, {restarts} restarts, "
          f"batch_size {settings.batch_size}")
    print(f"{'step':<55} {'wall s':>8} {'RTF':>8}  note")
    for label, wall, note in timings:
        print(f"{label:<55} {wall:8.2f} {audio_s / wall:8.0f}  {note}")
    total = timings[0][1] + sum(w for label, w, _ in timings[2:])
    print(f"{'render (fresh) + stitch + write':<55} {total:8.2f} {audio_s / total:8.0f}")
    seams = stitched.seams
    print(f"seams: {seams.height}, median rms ratio {seams['rms_ratio'].median():.2f}, "
          f"max {seams['rms_ratio'].max():.2f}; median flux ratio "
          f"{seams['flux_ratio'].median():.2f}, max {seams['flux_ratio'].max():.2f}")


if __name__ == "__main__":
    main()
