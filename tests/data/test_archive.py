"""Archive discovery: capture folders with several recordings, Parquet files, videos, problems."""

from __future__ import annotations

from pathlib import Path

from conftest import copy_capture

from bgm_batch.data.archive import ARCHIVE_SCHEMA, discover_archive, inputs_hash
from bgm_batch.data.contract import write_parquet
from bgm_batch.data.ingest import read_recording


def test_discovers_captures_parquet_videos_and_problems(tmp_path: Path) -> None:
    root = tmp_path / "root"
    copy_capture(root / "day1", "20240101000000", 3)
    copy_capture(root / "day1", "20240102000000", 2)  # a second recording in the same folder
    copy_capture(tmp_path / "staging", "20240103000000", 2)
    frame = read_recording(tmp_path / "staging").frame
    write_parquet(frame, root / "parquet" / "batch.parquet", "recording")
    (root / "parquet" / "broken.parquet").write_bytes(b"not parquet")
    copy_capture(root / "again", "20240101000000", 1)  # the same id a second time
    (root / "videos").mkdir()
    (root / "videos" / "20240101000000.mkv").write_bytes(b"v")
    (root / "videos" / "20240102000000.mp4").write_bytes(b"v")
    (root / "elsewhere.mov").write_bytes(b"v")
    (root / "videos.csv").write_text("recording,video,offset_s\n20240102000000,elsewhere.mov,2.5\n")
    copy_capture(root / "out" / "x", "20240109000000", 1)  # the output folder: never input
    copy_capture(root / ".cache", "20240108000000", 1)  # hidden: never input

    found = discover_archive(root, exclude=root / "out")

    assert found.schema == ARCHIVE_SCHEMA
    rows = {(r["recording"], Path(r["source"]).name): r for r in found.to_dicts()}
    assert sorted(rows) == [
        ("20240101000000", "again"),
        ("20240101000000", "day1"),
        ("20240102000000", "day1"),
        ("20240103000000", "batch.parquet"),
        ("broken", "broken.parquet"),
    ]
    first = rows[("20240101000000", "again")]  # sorted by source: "again" comes first
    assert first["problem"] is None
    assert rows[("20240101000000", "day1")]["problem"].startswith("recording id also found")
    assert len(rows[("20240101000000", "day1")]["inputs"]) == 3
    assert first["video"] == str((root / "videos" / "20240101000000.mkv").resolve())
    csv_row = rows[("20240102000000", "day1")]
    assert csv_row["video"] == str(root.resolve() / "elsewhere.mov")
    assert csv_row["video_offset_s"] == 2.5
    assert rows[("20240103000000", "batch.parquet")]["kind"] == "parquet"
    assert rows[("20240103000000", "batch.parquet")]["video"] is None
    assert rows[("broken", "broken.parquet")]["problem"].startswith("unreadable Parquet")


def test_inputs_hash_follows_content_not_location(tmp_path: Path) -> None:
    a = copy_capture(tmp_path / "a", "20240101000000", 2)
    b = copy_capture(tmp_path / "b", "20240101000000", 2)
    assert inputs_hash(map(str, a)) == inputs_hash(map(str, b))
    b[1].write_text(b[1].read_text().replace("Plains", "Desert", 1) + " ")
    assert inputs_hash(map(str, a)) != inputs_hash(map(str, b))
