"""Plot a scored run's track with its scene changes: ``python tools/plot_track.py OUT_DIR PNG``.

Used for the README's picture of what `make demo` produces.
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import polars as pl  # noqa: E402
import soundfile as sf  # noqa: E402


def main(out_dir: Path, png: Path) -> None:
    audio, rate = sf.read(out_dir / "track.flac", dtype="float32", always_2d=True)
    segments = pl.read_parquet(out_dir / "segments.parquet")
    hop = rate // 10
    frames = audio[: len(audio) // hop * hop].mean(axis=1).reshape(-1, hop)
    rms_db = 20 * np.log10(np.sqrt((frames**2).mean(axis=1)) + 1e-9)
    minutes = np.arange(len(rms_db)) * hop / rate / 60
    fig, ax = plt.subplots(figsize=(12, 3.6), dpi=100)
    ax.plot(minutes, rms_db, lw=0.6, color="#335")
    for row in segments.filter(pl.col("transition") == "restart").iter_rows(named=True):
        ax.axvline(row["audio_offset_s"] / 60, color="#e80", lw=0.8)
    fights = segments.filter(pl.col("combat"))
    ax.scatter(
        fights["start_s"] / 60,
        np.full(fights.height, -6),
        s=6,
        color="#c22",
        label="combat windows",
    )
    ax.set(
        xlabel="minutes",
        ylabel="RMS (dBFS)",
        ylim=(-60, 0),
        title="track.flac of `make demo`: orange lines = scene changes (music restarts)",
    )
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(png)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
