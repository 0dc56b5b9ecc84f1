"""Mux benchmark: ``mux_video`` on an hour of gameplay video, wall time per phase.

The inputs are built once and cached in the scratch folder (``--scratch``, default
``$TMPDIR/bgm-bench-mux``): a 1-hour gameplay-like H.264 video (160x90 at 5 fps, scenes of a
simulated recording, 22.05 kHz game audio with footsteps and fights: ``make_test_video``) and
a 1-hour 24-bit 48 kHz ``track.flac`` stand-in of chords and drums whose level wanders
(``make_test_track``). Building them takes about two minutes the first time.

Then ``mux_video`` runs with the default ``MuxSettings`` (ducked, -14 LUFS, -1 dBTP) and the
wall time of each phase is summed (the outermost phase running at the time counts, so nested
helpers are not counted twice). Prints a Markdown table: phases, total, CPU seconds of this
process and its children, and the loudness and true peak of ``scored.mp4`` as the mux measured
them and as ffmpeg's ebur128 measures the written file independently.

    .venv/bin/python bench/mux.py [--seconds 3600] [--scratch DIR] [--keep]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bgm_batch.settings import MuxSettings
from bgm_batch.stages import mux
from bgm_batch.testing.testvideo import make_test_track, make_test_video

# phase label -> the mux module's function whose calls it times
PHASES = {
    "mix + measure": "_render_mix",
    "gain (limit + measure, no AAC)": "_limited_loudness",
    "limit + encode": "_encode",
    "verify (decode, measure)": "_measure_aac",
    "mux (copy)": "_mux",
}


def ensure_inputs(scratch: Path, seconds: float) -> tuple[Path, Path]:
    """The cached video and track for ``seconds``, built on first use."""
    video = scratch / f"gameplay-{seconds:g}s.mp4"
    track = scratch / f"track-{seconds:g}s.flac"
    if not video.exists():
        print(f"building {video} ...", flush=True)
        make_test_video(video, seconds, width=160, height=90, fps=5)
    if not track.exists():
        print(f"building {track} ...", flush=True)
        make_test_track(track, seconds)
    return video, track


@contextmanager
def timed_phases() -> Iterator[tuple[dict[str, float], dict[str, int]]]:
    """Wrap the mux's phase functions: wall seconds and calls per phase, outermost call only."""
    totals: dict[str, float] = defaultdict(float)
    calls: dict[str, int] = defaultdict(int)
    active: list[str] = []
    originals = {label: getattr(mux, name) for label, name in PHASES.items()}

    def wrap(label: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            if active:
                return function(*args, **kwargs)
            active.append(label)
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                totals[label] += time.perf_counter() - start
                calls[label] += 1
                active.pop()

        return timed

    for label, function in originals.items():
        setattr(mux, PHASES[label], wrap(label, function))
    try:
        yield totals, calls
    finally:
        for label, function in originals.items():
            setattr(mux, PHASES[label], function)


def ebur128(path: Path) -> tuple[float, float]:
    """(LUFS, dBTP) of ``path``'s audio by ffmpeg's ebur128, independently of the mux."""
    args = ["ffmpeg", "-nostdin", "-vn", "-i", str(path), "-af", "ebur128=peak=true"]
    log = subprocess.run([*args, "-f", "null", "-"], capture_output=True, text=True).stderr
    summary = log[log.rindex("Summary:") :]
    lufs = re.search(r"I:\s+(\S+) LUFS", summary)
    peak = re.search(r"Peak:\s+(\S+) dBFS", summary)
    assert lufs and peak, "no ebur128 summary"
    return float(lufs.group(1)), float(peak.group(1))


def _cpu_s() -> float:
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3600.0)
    default_scratch = Path(tempfile.gettempdir()) / "bgm-bench-mux"
    parser.add_argument("--scratch", type=Path, default=default_scratch)
    parser.add_argument("--keep", action="store_true", help="keep scored.mp4 in the scratch")
    args = parser.parse_args()
    video, track = ensure_inputs(args.scratch, args.seconds)
    out = args.scratch / "scored.mp4"
    cpu, start = _cpu_s(), time.perf_counter()
    with timed_phases() as (phases, calls):
        report = mux.mux_video(video, track, out, MuxSettings())
    total, cpu = time.perf_counter() - start, _cpu_s() - cpu
    lufs, peak = ebur128(out)
    if not args.keep:
        out.unlink()
    load = os.getloadavg()[0]
    print(f"\nmux_video, {args.seconds:g} s video, default settings, load {load:.1f}\n")
    print("| phase | runs | wall s |\n| --- | ---: | ---: |")
    for label in PHASES:
        print(f"| {label} | {calls.get(label, 0)} | {phases.get(label, 0.0):.1f} |")
    print(f"| other (probe, placing the track) | | {total - sum(phases.values()):.1f} |")
    print(f"| **total** | | **{total:.1f}** |")
    print(f"| CPU s (all processes) | | {cpu:.1f} |")
    print(
        f"\nmux report: {report.loudness_lufs:.2f} LUFS, {report.true_peak_dbtp:.2f} dBTP, "
        f"gain {report.gain_db:+.1f} dB; ffmpeg ebur128 of the file: {lufs:.1f} LUFS, "
        f"{peak:.1f} dBTP, {report.sample_rate} Hz"
    )


if __name__ == "__main__":
    main()
