"""Read recordings: MetaBGM capture folders (one JSON file per window) and Parquet files.

Both paths end in the same place: a frame following ``schemas/recording.schema.json`` plus a
quarantine frame (``schemas/quarantine.schema.json``) holding every rejected window with the
file, window index, field and reason. Nothing is lost: rows in = accepted + quarantined.

Checks happen in two layers. Structure (unreadable JSON, a missing group, a label whose value
is not a number, a file name that is not ``<GameStartTime>-<Index>.json``) is checked while a
file is parsed; values (NaN/inf, percentages outside 0-100, negative counts, duplicate labels,
duplicate windows) are checked on the whole frame at once, so Parquet input gets exactly the
same value rules as JSON input.

Hostile input costs one window, never the run: a file that is not a regular file (FIFO, device,
folder), a symlink (followed only to a regular file inside the input folder), a file over
``ingest.max_file_bytes``, JSON nested too deeply, numbers that overflow, a non-finite Index, an
index beyond ``ingest.max_recording_hours``, a duplicate group or label, an empty required
group, or a recording id that is not a safe file name (``data/names.py``): each quarantines its
window with a reason, keeping at most ``ingest.raw_excerpt_chars`` of its text.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from bgm_batch.data.contract import ContractError, conform, empty_frame, polars_schema
from bgm_batch.data.game_profile import Profile, load_profile
from bgm_batch.data.names import RECORDING_ID, name_problem
from bgm_batch.errors import BgmError
from bgm_batch.settings import IngestSettings

CAPTURE_NAME = re.compile(r"^(?P<recording>.+)-(?P<index>\d+)\.json$")
_PERCENT_TOLERANCE = 1e-9


class IngestError(BgmError, ValueError):
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


def excerpt(raw: str | None, limit: int) -> str | None:
    """At most ``limit`` characters of a rejected window's text, marked when cut, so a huge
    or hostile file cannot bloat the quarantine."""
    if raw is None or len(raw) <= limit:
        return raw
    return f"{raw[:limit]}... [cut: {len(raw)} characters in all]"


def quarantine_frame(
    rejections: list[Rejection], stage: str = "ingest", excerpt_chars: int = 4096
) -> pl.DataFrame:
    """Rejections as a frame following the quarantine schema."""
    if not rejections:
        return empty_frame("quarantine")
    rows = [
        {"stage": stage, **r.__dict__, "raw": excerpt(r.raw, excerpt_chars)} for r in rejections
    ]
    return pl.DataFrame(rows, schema=polars_schema("quarantine"))


def max_index(profile: Profile, limits: IngestSettings) -> int:
    """The last window index a recording of ``limits.max_recording_hours`` can have."""
    return max(0, math.ceil(limits.max_recording_hours * 3600 / profile.window_seconds) - 1)


def index_range_reason(highest: int, limits: IngestSettings) -> str:
    """Why an index outside 0..highest is refused (instead of allocating audio for it)."""
    return (
        f"window index outside 0..{highest}: longer than the maximum recording length of "
        f"{limits.max_recording_hours:g} h (setting ingest.max_recording_hours)"
    )


# --- JSON capture files -------------------------------------------------------------------


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _short(value: Any) -> str:
    """``repr`` cut to 60 characters: a hostile value must not flood a message."""
    text = repr(value) if not isinstance(value, dict | list) else type(value).__name__
    return text if len(text) <= 60 else f"{text[:60]}..."


class _Rejected(Exception):
    """A capture file that cannot be a window; ``args[0]`` is the reason."""


class _Object(dict):
    """A JSON object that remembers keys it saw twice (``json`` keeps the last one silently)."""

    def __init__(self, pairs: list[tuple[str, Any]]) -> None:
        super().__init__()
        self.duplicates: list[str] = []
        for key, value in pairs:
            if key in self:
                self.duplicates.append(key)
            self[key] = value


def _file_kind(mode: int) -> str:
    kinds = {stat.S_ISDIR: "a folder", stat.S_ISFIFO: "a FIFO", stat.S_ISSOCK: "a socket"}
    kinds |= {stat.S_ISCHR: "a character device", stat.S_ISBLK: "a block device"}
    return next((name for test, name in kinds.items() if test(mode)), "not a regular file")


def _ends_inside(link: Path, root: Path) -> bool:
    """Whether a symlink ends at an existing path inside ``root`` (a loop or a dangling link
    does not)."""
    try:
        return root.resolve() in link.resolve(strict=True).parents
    except (OSError, RuntimeError):  # RuntimeError: a symlink loop
        return False


def read_capture_text(path: Path, root: Path, limits: IngestSettings) -> str:
    """The text of one capture file, read only if it is a regular file of bounded size.

    Symlinks are followed only to regular files inside ``root`` (a link to a system file would
    copy its text into the quarantine). The file is opened non-blocking, so a FIFO is refused
    instead of hanging the run, and at most ``max_file_bytes`` + 1 bytes are ever read.
    """
    if path.is_symlink() and not _ends_inside(path, root):
        raise _Rejected("symlink to a file outside the input folder, or to nothing (not followed)")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise _Rejected(f"cannot open: {exc.strerror}") from exc
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise _Rejected(f"{_file_kind(mode)}, not a regular file (not read)")
    with os.fdopen(fd, "rb") as file:
        data = file.read(limits.max_file_bytes + 1)
    if len(data) > limits.max_file_bytes:
        raise _Rejected(f"file larger than ingest.max_file_bytes ({limits.max_file_bytes} bytes)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _Rejected(f"not UTF-8 text: {exc.reason} at byte {exc.start}") from exc


def regular_capture_files(folder: Path) -> list[Path]:
    """The ``*.json`` files of a capture folder that are safe to read again (to hash them for
    the manifest): regular files, symlinks only to regular files inside the folder."""
    files = sorted(Path(folder).glob("*.json"))
    return [p for p in files if (not p.is_symlink() or _ends_inside(p, folder)) and p.is_file()]


def _load_json(text: str) -> Any:
    """Parse with duplicate-key detection; every parser failure becomes a reason."""
    try:
        return json.loads(text, object_pairs_hook=_Object)
    except RecursionError as exc:
        raise _Rejected("unreadable JSON: nested too deeply") from exc
    except ValueError as exc:  # JSONDecodeError, and integers longer than Python allows
        raise _Rejected(f"unreadable JSON: {exc}") from exc


def _check_index(data: dict[str, Any], name_index: int) -> int:
    """The window's Index: a finite integer equal to the file name's."""
    index = data.get("Index")
    finite = _is_number(index) and not (isinstance(index, float) and not math.isfinite(index))
    if not finite or index != int(index):
        raise _Rejected(f"Index is {_short(index)}, expected an integer", "Index")
    if int(index) != name_index:
        raise _Rejected(
            f"Index {_short(int(index))} differs from the file name's index {name_index}", "Index"
        )
    return int(index)


def _snapshot_entries(data: _Object, profile: Profile) -> list[dict[str, Any]]:
    """Flatten ``{group: {label: number}}``; the first structural problem is raised."""
    if data.duplicates:
        raise _Rejected("group appears twice", data.duplicates[0])
    required = {g.name for g in profile.groups if g.required}
    snapshot = []
    for group, entries in data.items():
        if group == "Index":
            continue
        if not isinstance(entries, dict):
            raise _Rejected(f"group is {type(entries).__name__}, expected an object", group)
        if entries.duplicates:
            raise _Rejected("label appears twice", f"{group}.{entries.duplicates[0]}")
        if not entries and group in required:
            raise _Rejected("required group is empty", group)
        for label, value in entries.items():
            if not _is_number(value):
                raise _Rejected(f"value {_short(value)} is not a number", f"{group}.{label}")
            if isinstance(value, int) and abs(value) > 1e308:
                raise _Rejected("integer too large for a number", f"{group}.{label}")
            snapshot.append({"group": group, "label": label, "value": float(value)})
    missing = [g for g in required if g not in data]
    if missing:
        raise _Rejected(f"missing group(s) {', '.join(sorted(missing))}", sorted(missing)[0])
    return snapshot


def parse_capture_file(
    path: Path, profile: Profile, root: Path | None = None, limits: IngestSettings | None = None
) -> tuple[dict[str, Any] | None, Rejection | None]:
    """One capture file -> a recording row (dict), or the reason it cannot be one."""
    limits = limits or IngestSettings()
    match = CAPTURE_NAME.match(path.name)
    recording = match["recording"] if match else None
    name_index = int(match["index"]) if match else None
    highest = max_index(profile, limits)
    shown_index = name_index if name_index is not None and name_index <= highest else None
    text: str | None = None
    try:
        text = read_capture_text(path, root or path.parent, limits)
        data = _load_json(text)
        if match is None:
            raise _Rejected("file name is not <GameStartTime>-<Index>.json")
        if shown_index is None:
            raise _Rejected(f"file name's {index_range_reason(highest, limits)}", "Index")
        if not isinstance(data, dict):
            raise _Rejected(f"top level is {type(data).__name__}, expected an object")
        index = _check_index(data, name_index)
        snapshot = _snapshot_entries(data, profile)
    except _Rejected as rejected:
        field = rejected.args[1] if len(rejected.args) > 1 else None
        return None, Rejection(path.name, rejected.args[0], recording, shown_index, field, text)
    row = {"recording": recording, "index": index, "source": path.name, "snapshot": snapshot}
    return {**row, "raw": text}, None


def read_capture_dir(
    path: Path, profile: Profile, limits: IngestSettings | None = None
) -> tuple[list[dict[str, Any]], list[Rejection], list[str]]:
    """Parse every ``*.json`` in a capture folder (or one capture file)."""
    files = sorted(path.glob("*.json")) if path.is_dir() else [path]
    if not files:
        raise IngestError(f"{path}: no capture files (*.json) found")
    root = path if path.is_dir() else path.resolve().parent  # a file named by the user is read
    rows, rejections, warnings = [], [], []
    for file in files:
        row, rejection = parse_capture_file(file, profile, root, limits)
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
    mode = os.stat(path).st_mode
    if not stat.S_ISREG(mode):
        raise IngestError(f"{path}: {_file_kind(mode)}, not a regular file")
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


def _row_problems(frame: pl.DataFrame, profile: Profile, limits: IngestSettings) -> pl.DataFrame:
    """Problems of a whole row, checked before its values: an unsafe recording id (it becomes
    a file name) and an index outside the plausible range (it sizes the audio buffers)."""
    highest = max_index(profile, limits)
    ids = frame["recording"].unique().to_list()
    id_reason = {i: name_problem(i) for i in ids if not RECORDING_ID.fullmatch(i)}
    reason = (
        pl.when(pl.col("recording").is_in(list(id_reason)))
        .then(pl.col("recording").replace_strict(id_reason, default=None, return_dtype=pl.String))
        .when((pl.col("index") < 0) | (pl.col("index") > highest))
        .then(pl.lit(index_range_reason(highest, limits)))
    )
    field = pl.when(pl.col("recording").is_in(list(id_reason))).then(pl.lit("recording"))
    return frame.select(
        pl.int_range(pl.len()).alias("_row"),
        field.otherwise(pl.lit("Index")).alias("field"),
        reason.alias("reason"),
    ).filter(pl.col("reason").is_not_null())


def validate_rows(
    frame: pl.DataFrame, profile: Profile, limits: IngestSettings | None = None
) -> tuple[pl.DataFrame, list[Rejection]]:
    """Apply the row rules, the value rules and the one-row-per-window rule;
    return (accepted, rejected)."""
    row_problems = _row_problems(frame, profile, limits or IngestSettings())
    values = _value_problems(frame, profile).filter(~pl.col("_row").is_in(row_problems["_row"]))
    problems = pl.concat([row_problems, values]).sort("_row")
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


def read_recording(
    path: Path, profile: Profile | None = None, limits: IngestSettings | None = None
) -> IngestResult:
    """Read and validate a capture folder, one capture file, or a recording Parquet file."""
    profile = profile or load_profile()
    limits = limits or IngestSettings()
    path = Path(path)
    if not path.exists():
        raise IngestError(f"{path}: no such file or folder")
    if path.is_dir() or path.suffix == ".json":
        rows, rejections, warnings = read_capture_dir(path, profile, limits)
        schema = {**polars_schema("recording"), "raw": pl.String}
        schema.pop("start_s"), schema.pop("end_s")
        frame = pl.DataFrame(rows, schema=schema)
    else:
        frame, rejections = read_parquet_rows(path)
        frame = frame.drop("start_s", "end_s")
        warnings = []
    frame, rejected = validate_rows(frame, profile, limits)
    rejections += rejected
    frame = _finish(frame.drop("raw"), profile)
    quarantine = quarantine_frame(rejections, excerpt_chars=limits.raw_excerpt_chars)
    return IngestResult(frame, quarantine, warnings + _gap_warnings(frame))
