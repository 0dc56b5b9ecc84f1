"""The archive report: one row per recording, and a readable summary with totals.

``DIR/archive_report.parquet`` holds ``REPORT_SCHEMA`` (one row per recording found, whatever
happened to it); ``DIR/archive_report.md`` a table of the same rows, the totals, the time
spent per stage over the whole archive and the text cache's hit rate. Both are written
atomically and always, also when recordings failed: the report is how a nightly job learns
what went wrong.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

from bgm_batch.atomic import atomic_path, write_text

STATUSES = ("scored", "skipped", "failed")

REPORT_SCHEMA = pl.Schema(
    {
        "recording": pl.String,
        "status": pl.String,  # scored | skipped | failed
        "windows_in": pl.Int64,
        "windows_accepted": pl.Int64,
        "windows_quarantined": pl.Int64,
        "rendered_now": pl.Int64,  # segments rendered in this run (the rest came from work/)
        "reason": pl.String,  # why it failed or was skipped; null when scored
        "seconds": pl.Float64,  # wall time of its own stages (pooled stages shared by size)
        "source": pl.String,
        "video": pl.String,
        "scored_video": pl.Boolean,
        "out_dir": pl.String,
    }
)


def report_frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    """The report rows as a frame with ``REPORT_SCHEMA``, sorted by recording."""
    unknown = {row["status"] for row in rows} - set(STATUSES)
    if unknown:
        raise ValueError(f"unknown archive status: {sorted(unknown)}")
    return pl.DataFrame(rows, schema=REPORT_SCHEMA).sort("recording")


def cache_hit_rate(text_stats: dict[str, float]) -> float | None:
    """Share of distinct prompts answered from the text cache (None when nothing was asked)."""
    asked = text_stats.get("cache_hits", 0) + text_stats.get("generated", 0)
    return text_stats.get("cache_hits", 0) / asked if asked else None


def _table(frame: pl.DataFrame) -> list[str]:
    columns = ["recording", "status", "windows_in", "windows_accepted", "windows_quarantined"]
    columns += ["rendered_now", "seconds", "reason"]
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    for row in frame.select(columns).iter_rows():
        cells = ["" if v is None else f"{v:.1f}" if isinstance(v, float) else str(v) for v in row]
        lines.append(
            "| " + " | ".join(c.replace("|", "/").replace("\n", " ") for c in cells) + " |"
        )
    return lines


def markdown(
    frame: pl.DataFrame, timings: dict[str, float], text_stats: dict[str, float], wall_s: float
) -> str:
    """The readable report: totals, time per stage, cache hit rate, then one row per recording."""
    counts = {status: int((frame["status"] == status).sum()) for status in STATUSES}
    rate = cache_hit_rate(text_stats)
    lines = [
        "# Archive report",
        "",
        f"recordings: {frame.height} ({', '.join(f'{n} {s}' for s, n in counts.items())}); "
        f"windows in: {int(frame['windows_in'].sum())}, accepted: "
        f"{int(frame['windows_accepted'].sum())}, quarantined: "
        f"{int(frame['windows_quarantined'].sum())}; wall time {wall_s:.1f} s",
        "",
        "text cache hit rate: " + ("n/a (no prompts)" if rate is None else f"{rate:.1%}"),
        "",
        "| stage | seconds |",
        "| --- | --- |",
        *(f"| {stage} | {seconds:.2f} |" for stage, seconds in timings.items()),
        "",
        *_table(frame),
    ]
    return "\n".join(lines) + "\n"


def write_report(
    out_dir: Path,
    frame: pl.DataFrame,
    timings: dict[str, float],
    text_stats: dict[str, float],
    wall_s: float,
) -> None:
    """``archive_report.parquet`` and ``archive_report.md`` in ``out_dir``."""
    with atomic_path(out_dir / "archive_report.parquet") as tmp:
        frame.write_parquet(tmp)
    write_text(out_dir / "archive_report.md", markdown(frame, timings, text_stats, wall_s))
