"""The archive report: schema, statuses, totals and the cache hit rate in the readable file."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from bgm_batch.stages.archive_report import REPORT_SCHEMA, report_frame, write_report


def row(recording: str, status: str, **values) -> dict:
    base = {"windows_in": 3, "windows_accepted": 3, "windows_quarantined": 0, "seconds": 1.5}
    return {**base, "recording": recording, "status": status, "reason": None, **values}


def test_report_files_hold_every_recording_and_the_totals(tmp_path: Path) -> None:
    rows = [
        row("b", "failed", reason="ingest: no usable window | bad\nfile", windows_accepted=0),
        row("a", "scored", rendered_now=3),
        row("c", "skipped", windows_in=0, windows_accepted=0),
    ]
    frame = report_frame(rows)
    write_report(
        tmp_path, frame, {"narrate": 2.0, "render": 5.25}, {"cache_hits": 3, "generated": 1}, 9.0
    )

    written = pl.read_parquet(tmp_path / "archive_report.parquet")
    assert written.schema == REPORT_SCHEMA and written["recording"].to_list() == ["a", "b", "c"]
    text = (tmp_path / "archive_report.md").read_text()
    assert "recordings: 3 (1 scored, 1 skipped, 1 failed)" in text
    assert "windows in: 6, accepted: 3" in text
    assert "text cache hit rate: 75.0%" in text and "| render | 5.25 |" in text
    failed_line = next(line for line in text.splitlines() if line.startswith("| b |"))
    assert "no usable window / bad file" in failed_line  # table cells stay one line


def test_unknown_status_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown archive status"):
        report_frame([row("a", "done")])
