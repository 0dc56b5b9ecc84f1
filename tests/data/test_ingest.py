"""Ingest: real capture files in, bad input quarantined with file, window, field and reason."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest

from bgm_batch.cli import main
from bgm_batch.data.contract import arrow_schema
from bgm_batch.data.ingest import IngestError, read_recording

REAL_SAMPLE = Path(__file__).parents[2] / "data" / "real" / "sample-4.json"
REC = "20240601093000"


def snapshot(index: int) -> dict:
    record = json.loads(REAL_SAMPLE.read_text())
    record["Index"] = index
    return record


def write(folder: Path, name: str, content: dict | str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(content if isinstance(content, str) else json.dumps(content, indent="\t"))
    return path


@pytest.fixture
def capture(tmp_path: Path) -> Path:
    for i in range(4):
        write(tmp_path / "cap", f"{REC}-{i}.json", snapshot(i))
    return tmp_path / "cap"


def reasons(result) -> dict[str, tuple]:
    return {
        r["source"]: (r["index"], r["field"], r["reason"]) for r in result.quarantine.to_dicts()
    }


def test_good_capture_folder_is_one_row_per_window(capture: Path) -> None:
    result = read_recording(capture)
    assert result.summary() == "rows in: 4, accepted: 4, quarantined: 0"
    frame = result.frame
    assert frame["index"].to_list() == [0, 1, 2, 3]
    assert frame["recording"].unique().to_list() == [REC]
    assert frame["start_s"].to_list() == [0.0, 10.0, 20.0, 30.0]
    first = frame["snapshot"][0].to_list()
    assert {"group": "Motion", "label": "Sprinting", "value": 27.093596059113302} in first
    assert len(first) == 33  # lossless: every label of the file, the Not labels included


@pytest.mark.parametrize(
    ("mutate", "field", "reason"),
    [
        (lambda r: r.pop("Health"), "Health", "missing group"),
        (lambda r: r["Motion"].update(Sprinting="fast"), "Motion.Sprinting", "not a number"),
        (lambda r: r["Motion"].update(Sprinting=120.0), "Motion.Sprinting", "outside 0-100"),
        (lambda r: r["Monster"].update(zombie=-1.0), "Monster.zombie", "negative count"),
        (lambda r: r["Climate"].update(Clear=float("nan")), "Climate.Clear", "NaN"),
        (lambda r: r["Climate"].update(Clear=float("inf")), "Climate.Clear", "infinite"),
        (lambda r: r.update(Index=7), "Index", "differs from the file name"),
        (lambda r: r.update(Biome=[1, 2]), "Biome", "expected an object"),
    ],
)
def test_bad_window_is_quarantined_with_field(capture: Path, mutate, field, reason) -> None:
    record = snapshot(2)
    mutate(record)
    write(capture, f"{REC}-2.json", json.dumps(record, allow_nan=True))
    result = read_recording(capture)
    assert result.summary() == "rows in: 4, accepted: 3, quarantined: 1"
    index, got_field, got_reason = reasons(result)[f"{REC}-2.json"]
    assert (index, got_field) == (2, field)
    assert reason in got_reason
    assert json.loads(result.quarantine["raw"][0], parse_constant=float)["Index"] in (2, 7)


def test_unreadable_json_and_bad_names_lose_nothing(capture: Path) -> None:
    text = (capture / f"{REC}-2.json").read_text()
    write(capture, f"{REC}-2.json", text[: len(text) // 2])  # truncated
    write(capture, "notes.json", snapshot(9))
    write(capture, f"{REC}-01.json", snapshot(1))  # a second file for window 1
    result = read_recording(capture)
    assert result.rows_in == 6
    got = reasons(result)
    assert got[f"{REC}-2.json"][0] == 2 and "unreadable JSON" in got[f"{REC}-2.json"][2]
    assert "file name" in got["notes.json"][2]
    assert got[f"{REC}-1.json"][2].startswith("duplicate window")
    assert result.frame["index"].to_list() == [0, 1, 3]
    assert any("1 window(s) missing" in w for w in result.warnings)


def test_mixed_recordings_split(capture: Path, tmp_path: Path) -> None:
    write(capture, "20240602100000-0.json", snapshot(0))
    out = tmp_path / "split"
    assert main(["import-capture", str(capture), "-o", str(out), "--split"]) == 0
    assert sorted(p.name for p in out.glob("*.parquet")) == [
        f"{REC}.parquet",
        "20240602100000.parquet",
    ]
    assert pl.read_parquet(out / f"{REC}.parquet").height == 4


def test_cli_writes_parquet_and_quarantine_and_prints_counts(
    capture: Path, tmp_path: Path, capsys
) -> None:
    write(capture, f"{REC}-3.json", "{not json")
    out = tmp_path / "rec.parquet"
    assert main(["import-capture", str(capture), "-o", str(out)]) == 0
    printed = capsys.readouterr()
    assert "rows in: 4, accepted: 3, quarantined: 1" in printed.out
    assert f"{REC}-3.json, window 3" in printed.err
    assert pl.read_parquet(out).height == 3
    assert pq.read_schema(out).equals(arrow_schema("recording"))
    assert pq.read_schema(out).metadata == {b"bgm_batch.schema": b"recording"}
    assert pl.read_parquet(tmp_path / "rec.quarantine.parquet")["reason"][0].startswith(
        "unreadable"
    )
    # the Parquet file reads back through the same validation
    assert read_recording(out).summary() == "rows in: 3, accepted: 3, quarantined: 0"


def test_nothing_usable_exits_non_zero(tmp_path: Path) -> None:
    write(tmp_path / "cap", f"{REC}-0.json", "[]")
    assert main(["import-capture", str(tmp_path / "cap"), "-o", str(tmp_path / "o.parquet")]) == 1
    assert pl.read_parquet(tmp_path / "o.quarantine.parquet").height == 1


def test_empty_folder_and_non_parquet_files_name_the_file(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(IngestError, match="no capture files"):
        read_recording(tmp_path / "empty")
    bogus = tmp_path / "bogus.parquet"
    bogus.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(IngestError, match="bogus.parquet: not a readable Parquet"):
        read_recording(bogus)


def test_parquet_rows_get_the_same_value_rules(capture: Path, tmp_path: Path) -> None:
    frame = read_recording(capture).frame
    snap = frame["snapshot"].to_list()
    snap[1] = [dict(e, value=150.0) if e["label"] == "Plains" else e for e in snap[1]]
    path = tmp_path / "in.parquet"
    frame.with_columns(pl.Series("snapshot", snap, dtype=frame.schema["snapshot"])).write_parquet(
        path
    )
    result = read_recording(path)
    assert result.summary() == "rows in: 4, accepted: 3, quarantined: 1"
    row = result.quarantine.row(0, named=True)
    assert (row["source"], row["index"], row["field"]) == ("in.parquet#1", 1, "Biome.Plains")


def test_parquet_with_wrong_column_type_names_the_column(capture: Path, tmp_path: Path) -> None:
    path = tmp_path / "bad.parquet"
    read_recording(capture).frame.with_columns(pl.lit("x").alias("index")).write_parquet(path)
    with pytest.raises(IngestError, match="column 'index'"):
        read_recording(path)
