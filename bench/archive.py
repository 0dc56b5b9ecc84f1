"""Benchmark: ``bgm-batch archive`` on an archive of simulated recordings, offline path.

Default: 20 recordings of 10 minutes (60 windows each, one Parquet file each), template +
synth, text cache off, no videos. Measures the archive's throughput with the local engine,
with a local 2-worker Dask cluster (a fresh output folder, so it renders everything again)
and a second local run over the unchanged archive, which must skip every recording.
Run: ``python bench/archive.py [--recordings 20] [--windows 60] [--workers 2]``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from bgm_batch.prefect_env import configure_prefect

configure_prefect()

from bgm_batch.data.contract import write_parquet  # noqa: E402
from bgm_batch.settings import load_settings  # noqa: E402
from bgm_batch.testing.simulate import simulate_frame  # noqa: E402


def make_archive(root: Path, recordings: int, windows: int) -> None:
    """One Parquet file per simulated recording."""
    frame = simulate_frame(recordings * windows, seed=1, n_recordings=recordings)
    for part in frame.partition_by("recording"):
        write_parquet(part, root / f"{part['recording'][0]}.parquet", "recording")


def timed_run(root: Path, out: Path, engine: str, workers: int) -> tuple[float, dict[str, int]]:
    """Wall time of one archive run and its status counts."""
    from bgm_batch.flows.score_archive import run_archive

    overrides = {"progress": False, "text": {"cache_dir": None}}
    overrides["archive"] = {"engine": engine, "workers": workers}
    settings = load_settings(overrides=overrides)
    started = time.perf_counter()
    report = run_archive(root, out, settings).report
    seconds = time.perf_counter() - started
    counts = dict(report["status"].value_counts().iter_rows())
    return seconds, counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--recordings", type=int, default=20)
    parser.add_argument("--windows", type=int, default=60)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    from prefect import flow

    flow(lambda: None, name="warm-up")()  # the temporary server's start-up, not measured
    windows = args.recordings * args.windows
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        make_archive(scratch / "root", args.recordings, args.windows)
        runs = [
            ("local, 1 worker", scratch / "local", "local", 1),
            (f"dask LocalCluster, {args.workers} workers", scratch / "dask", "dask", args.workers),
            ("local, second run (unchanged)", scratch / "local", "local", 1),
        ]
        print(f"{args.recordings} recordings x {args.windows} windows, {os.cpu_count()} CPUs")
        print("| run | seconds | windows/s | statuses |")
        print("| --- | --- | --- | --- |")
        for name, out, engine, workers in runs:
            seconds, counts = timed_run(scratch / "root", out, engine, workers)
            print(f"| {name} | {seconds:.1f} | {windows / seconds:.1f} | {counts} |", flush=True)


if __name__ == "__main__":
    main()
