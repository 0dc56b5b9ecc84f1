"""Read recordings: MetaBGM capture folders (one JSON file per window) and Parquet files.

Both paths end in the same place: a frame following ``schemas/recording.schema.json`` plus a
quarantine frame (``schemas/quarantine.schema.json``) holding every rejected window with the
file, window index, field and reason. Nothing is lost: rows in = accepted + quarantined.

Checks happen in two layers. Structure (unreadable JSON, a missing group, a label whose value
is not a number, a file name that is not ``<GameStartTime>-<Index>.json``) is checked while a
file is parsed; values (NaN/inf, percentages outside 0-100, negative counts, duplicate labels,
duplicate windows) are checked on the whole frame at once, so Parquet input gets exactly the
same value rules as JSON input.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from bgm_batch.data.contract import ContractError, conform, empty_frame, polars_schema
from bgm_batch.data.game_profile import Profile, load_profile

CAPTURE_NAME = re.compile(r"^(?P<recording>.+)-(?P<index>\d+)\.json$")
_PERCENT_TOLERANCE = 1e-9


class IngestError(ValueError):
    """Input that cannot be read at all (not a folder of captures, not Parquet, empty)."""


@dataclass
class Rejection:
    """One rejected window: where it came from and why."""

    source: str
    reason: str
    recording: str | None = None
    index: int | None = None
    field: str | None = None
    raw: str | None = None

    def message(self) -> str:
        """``file, window N, field F: reason``: what a person needs to find the problem."""
        where = [self.source]
        if self.index is not None:
            where.append(f"window {self.index}")
        if self.field:
            where.append(f"field {self.field}")
        return f"{', '.join(where)}: {self.reason}"


@dataclass
class IngestResult:
    """Accepted windows, rejected windows, and what a person should know about the input."""

    frame: pl.DataFrame
    quarantine: pl.DataFrame
    warnings: list[str] = field(default_factory=list)

    @property
    def rows_in(self) -> int:
        return self.frame.height + self.quarantine.height

    def summary(self) -> str:
        """The three numbers every run prints."""
        return (
            f"rows in: {self.rows_in}, accepted: {self.frame.height}, "
            f"quarantined: {self.quarantine.height}"
        )

    def recordings(self) -> list[str]:
        """Recording ids present in the accepted rows, sorted."""
        return sorted(self.frame["recording"].unique().to_list())


def quarantine_frame(rejections: list[Rejection], stage: str = "ingest") -> pl.DataFrame:
    """Rejections as a frame following the quarantine schema."""
    if not rejections:
        return empty_frame("quarantine")
    rows = [{"stage": stage, **r.__dict__} for r in rejections]
    return pl.DataFrame(rows, schema=polars_schema("quarantine"))


# --- JSON capture files -------------------------------------------------------------------


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def parse_capture_file(
    path: Path, profile: Profile
) -> tuple[dict[str, Any] | None, Rejection | None]:
    """One capture file -> a recording row (dict), or the reason it cannot be one."""
    text: str | None = None
    match = CAPTURE_NAME.match(path.name)
    recording = match["recording"] if match else None
    name_index = int(match["index"]) if match else None

    def reject(reason: str, field: str | None = None) -> tuple[None, Rejection]:
        return None, Rejection(path.name, reason, recording, name_index, field, text)

    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return reject(f"unreadable JSON: {exc}")
    if match is None:
        return reject("file name is not <GameStartTime>-<Index>.json")
    if not isinstance(data, dict):
        return reject(f"top level is {type(data).__name__}, expected an object")
    index = data.get("Index")
    if not _is_number(index) or index != int(index):
        return reject(f"Index is {index!r}, expected an integer", "Index")
    if int(index) != name_index:
        return reject(
            f"Index {int(index)} differs from the file name's index {name_index}", "Index"
        )
    snapshot = []
    for group, entries in data.items():
        if group == "Index":
            continue
        if not isinstance(entries, dict):
            return reject(f"group is {type(entries).__name__}, expected an object", group)
        for label, value in entries.items():
            if not _is_number(value):
                return reject(f"value {value!r} is not a number", f"{group}.{label}")
            snapshot.append({"group": group, "label": label, "value": float(value)})
    missing = [g.name for g in profile.groups if g.required and g.name not in data]
    if missing:
        return reject(f"missing group(s) {', '.join(missing)}", missing[0])
    row = {"recording": recording, "index": int(index), "source": path.name, "snapshot": snapshot}
    return {**row, "raw": text}, None


def read_capture_dir(
    path: Path, profile: Profile
) -> tuple[list[dict[str, Any]], list[Rejection], list[str]]:
    """Parse every ``*.json`` in a capture folder (or one capture file)."""
    files = sorted(path.glob("*.json")) if path.is_dir() else [path]
    if not files:
        raise IngestError(f"{path}: no capture files (*.json) found")
    rows, rejections, warnings = [], [], []
    for file in files:
        row, rejection = parse_capture_file(file, profile)
        if row is not None:
            rows.append(row)
        else:
            rejections.append(rejection)
    if path.is_dir():
        others = [p.name for p in path.iterdir() if p.is_file() and p.suffix != ".json"]
        if others:
            warnings.append(f"{path}: ignored {len(others)} non-JSON file(s), e.g. {others[0]}")
    return rows, rejections, warnings


# --- Parquet ----------------------------------------------------------------------------


def read_parquet_rows(path: Path) -> tuple[pl.DataFrame, list[Rejection]]:
    """A recording Parquet file -> frame of candidate rows; rows with nulls are rejected."""
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise IngestError(f"{path}: not a readable Parquet file ({exc})") from exc
    frame = pl.from_arrow(table)
    try:
        frame = conform(frame, "recording", source=str(path)).select(
            polars_schema("recording").names()
        )
    except ContractError as exc:
        raise IngestError(str(exc)) from exc
    frame = frame.with_columns(
        (pl.lit(f"{path.name}#") + pl.int_range(pl.len()).cast(pl.String)).alias("source"),
        pl.lit(None, dtype=pl.String).alias("raw"),
    )
    null_row = pl.any_horizontal(pl.col(c).is_null() for c in polars_schema("recording").names())
    bad = frame.filter(null_row)
    rejections = [
        Rejection(
            r["source"],
            "null in a required column",
            r["recording"],
            r["index"],
            next(c for c in polars_schema("recording").names() if r[c] is None),
            json.dumps(r, default=str),
        )
        for r in bad.to_dicts()
    ]
    good = frame.filter(~null_row)
    entry_nulls = (
        good["snapshot"]
        .list.eval(
            pl.element().struct.field("value").is_null()
            | pl.element().struct.field("label").is_null()
        )
        .list.any()
    )
    rejections += [
        Rejection(
            r["source"],
            "null label or value in snapshot",
            r["recording"],
            r["index"],
            "snapshot",
            json.dumps(r, default=str),
        )
        for r in good.filter(entry_nulls).to_dicts()
    ]
    return good.filter(~entry_nulls), rejections


# --- value checks shared by both inputs --------------------------------------------------


def _value_problems(frame: pl.DataFrame, profile: Profile) -> pl.DataFrame:
    """First value problem of each bad row: columns _row, field, reason."""
    counts = [g.name for g in profile.groups if g.kind == "count"]
    long = (
        frame.select(pl.int_range(pl.len()).alias("_row"), "snapshot")
        .explode("snapshot")
        .drop_nulls("snapshot")
        .unnest("snapshot")
        .with_columns((pl.col("group") + "." + pl.col("label")).alias("field"))
    )
    value = pl.col("value")
    reason = (
        pl.when(value.is_nan())
        .then(pl.lit("value is NaN"))
        .when(value.is_infinite())
        .then(pl.lit("value is infinite"))
        .when(pl.col("group").is_in(counts) & (value < 0))
        .then(pl.format("negative count {}", value))
        .when(~pl.col("group").is_in(counts) & ((value < 0) | (value > 100 + _PERCENT_TOLERANCE)))
        .then(pl.format("percentage {} outside 0-100", value))
        .when(pl.col("field").is_duplicated().over("_row"))
        .then(pl.lit("label appears twice"))
    )
    return (
        long.with_columns(reason.alias("reason"))
        .filter(pl.col("reason").is_not_null())
        .group_by("_row", maintain_order=True)
        .first()
        .select("_row", "field", "reason")
    )


def _raw_of(row: dict[str, Any]) -> str:
    return row["raw"] if row.get("raw") else json.dumps(row, default=str)


def validate_rows(frame: pl.DataFrame, profile: Profile) -> tuple[pl.DataFrame, list[Rejection]]:
    """Apply the value rules and the one-row-per-window rule; return (accepted, rejected)."""
    problems = _value_problems(frame, profile)
    frame = frame.with_row_index("_row").join(problems, on="_row", how="left")
    duplicate = pl.struct("recording", "index").is_first_distinct().not_()
    frame = frame.with_columns(
        pl.when(pl.col("reason").is_null() & duplicate)
        .then(pl.lit("duplicate window: the same recording and index came earlier"))
        .otherwise(pl.col("reason"))
        .alias("reason"),
        pl.when(pl.col("reason").is_null() & duplicate)
        .then(pl.lit("Index"))
        .otherwise(pl.col("field"))
        .alias("field"),
    )
    bad = frame.filter(pl.col("reason").is_not_null())
    rejections = [
        Rejection(r["source"], r["reason"], r["recording"], r["index"], r["field"], _raw_of(r))
        for r in bad.to_dicts()
    ]
    return frame.filter(pl.col("reason").is_null()).drop("_row", "field", "reason"), rejections


def _gap_warnings(frame: pl.DataFrame) -> list[str]:
    gaps = (
        frame.group_by("recording")
        .agg(pl.col("index").min().alias("lo"), pl.col("index").max().alias("hi"), pl.len())
        .filter(pl.col("hi") - pl.col("lo") + 1 != pl.col("len"))
        .sort("recording")
    )
    return [
        f"recording {r['recording']}: {r['hi'] - r['lo'] + 1 - r['len']} window(s) missing "
        f"between index {r['lo']} and {r['hi']} (no file, or quarantined); the music restarts there"
        for r in gaps.to_dicts()
    ]


def _finish(frame: pl.DataFrame, profile: Profile) -> pl.DataFrame:
    seconds = profile.window_seconds
    return (
        frame.with_columns(
            (pl.col("index") * seconds).cast(pl.Float64).alias("start_s"),
            ((pl.col("index") + 1) * seconds).cast(pl.Float64).alias("end_s"),
        )
        .sort("recording", "index")
        .select(polars_schema("recording").names())
    )


def read_recording(path: Path, profile: Profile | None = None) -> IngestResult:
    """Read and validate a capture folder, one capture file, or a recording Parquet file."""
    profile = profile or load_profile()
    path = Path(path)
    if not path.exists():
        raise IngestError(f"{path}: no such file or folder")
    if path.is_dir() or path.suffix == ".json":
        rows, rejections, warnings = read_capture_dir(path, profile)
        schema = {**polars_schema("recording"), "raw": pl.String}
        schema.pop("start_s"), schema.pop("end_s")
        frame = pl.DataFrame(rows, schema=schema)
    else:
        frame, rejections = read_parquet_rows(path)
        frame = frame.drop("start_s", "end_s")
        warnings = []
    frame, rejected = validate_rows(frame, profile)
    rejections += rejected
    frame = _finish(frame.drop("raw"), profile)
    return IngestResult(frame, quarantine_frame(rejections), warnings + _gap_warnings(frame))
