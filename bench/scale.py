"""Scale benchmark: cost of ``bgm-batch score`` against the recording's length.

Each recording (simulated gameplay, ``simulate_frame``, 10 s windows) is scored end to end by
the real command line in a child process, offline path (template text, synth audio, no
video, fresh text cache, no Prefect server: ``PREFECT_API_URL`` unset). While it runs, the
resident memory of the whole process tree (the command and every worker and child it
starts) is summed from /proc every ``--interval`` seconds, and the output folder's size
is sampled the same way. Prints a Markdown table (wall, real-time factor, peak tree RSS,
peak disk, what stays on disk) and, between consecutive lengths, the memory slope in MB per
hour of gameplay and the ratio of the peaks.

Run: ``python bench/scale.py`` (1 window, 10 min, 1 h, 3 h) or
``python bench/scale.py --windows 3600`` (10 h; ``make bench-long``); ``--track-rate 32000``
to measure a lower render rate. Linux only (/proc).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

from bgm_batch.data.contract import write_parquet
from bgm_batch.testing.simulate import simulate_frame

WINDOW_S = 10.0
PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass
class Measured:
    windows: int
    wall_s: float
    peak_rss_mb: float
    peak_disk_mb: float
    kept_mb: float

    @property
    def hours(self) -> float:
        return self.windows * WINDOW_S / 3600


def _children() -> dict[int, list[int]]:
    """Parent pid -> child pids, for every process visible in /proc."""
    tree: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:  # the process ended meanwhile
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def tree_rss(pid: int) -> int:
    """Resident bytes of ``pid`` and all its descendants (sampled, so a lower bound)."""
    tree, total, todo = _children(), 0, [pid]
    while todo:
        current = todo.pop()
        todo += tree.get(current, [])
        try:
            total += int(Path(f"/proc/{current}/statm").read_text().split()[1]) * PAGE
        except OSError:
            continue
    return total


def folder_bytes(path: Path) -> int:
    """Bytes of the regular files under ``path``."""
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            try:
                total += os.stat(os.path.join(folder, name)).st_size
            except OSError:
                continue
    return total


def score(windows: int, scratch: Path, interval: float, flags: list[str]) -> Measured:
    """Score a simulated recording of ``windows`` windows (``flags`` added to ``score``),
    sampling memory and disk."""
    recording = scratch / f"rec{windows}.parquet"
    write_parquet(simulate_frame(windows, seed=1), recording, "recording")
    out = scratch / f"out{windows}"
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env["BGM_TEXT__CACHE_DIR"] = str(scratch / f"cache{windows}")
    command = [sys.executable, "-m", "bgm_batch.cli", "score", str(recording), "--out", str(out)]
    started = time.perf_counter()
    process = subprocess.Popen([*command, "--quiet", *flags], env=env)
    peak_rss = peak_disk = 0
    while process.poll() is None:
        peak_rss = max(peak_rss, tree_rss(process.pid))
        peak_disk = max(peak_disk, folder_bytes(out))
        time.sleep(interval)
    wall = time.perf_counter() - started
    if process.returncode:
        raise SystemExit(f"score failed on {windows} windows (exit {process.returncode})")
    kept = folder_bytes(out)
    mb = 2**20
    return Measured(windows, wall, peak_rss / mb, max(peak_disk, kept) / mb, kept / mb)


def report(results: list[Measured]) -> None:
    """The Markdown table and the memory slope."""
    print(
        "| recording | windows | wall s | x real time | peak RSS, tree (MB) | peak disk (MB) "
        "| kept (MB) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in results:
        length = f"{r.hours:.2f} h" if r.hours >= 1 else f"{r.hours * 60:.1f} min"
        print(
            f"| {length} | {r.windows} | {r.wall_s:.1f} | {r.hours * 3600 / r.wall_s:.0f} | "
            f"{r.peak_rss_mb:.0f} | {r.peak_disk_mb:.0f} | {r.kept_mb:.1f} |"
        )
    print()
    for shorter, longer in pairwise(results):
        slope = (longer.peak_rss_mb - shorter.peak_rss_mb) / (longer.hours - shorter.hours)
        ratio = longer.peak_rss_mb / shorter.peak_rss_mb
        print(
            f"memory {shorter.windows} -> {longer.windows} windows: {slope:+.0f} MB per hour "
            f"of gameplay, peak RSS ratio {ratio:.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, nargs="+", default=[1, 60, 360, 1080])
    parser.add_argument("--interval", type=float, default=0.2, help="sampling period, s")
    parser.add_argument("--track-rate", type=int, help="score's --track-rate, Hz (default 48000)")
    args = parser.parse_args()
    flags = ["--track-rate", str(args.track_rate)] if args.track_rate else []
    with tempfile.TemporaryDirectory(prefix="bgm-scale-") as scratch:
        results = [score(n, Path(scratch), args.interval, flags) for n in sorted(args.windows)]
    report(results)


if __name__ == "__main__":
    main()
