"""The data contract: Arrow schemas read from ``schemas/*.schema.json``.

Those JSON files are the single source of truth for the Parquet files the pipeline reads and
writes (recordings, segments, quarantine); ``schemas/README.md`` explains them.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa

from bgm_batch.errors import BgmError

_PRIMITIVES = {
    "string": pa.string(),
    "int64": pa.int64(),
    "float64": pa.float64(),
    "bool": pa.bool_(),
}


def _arrow_type(spec: Any) -> pa.DataType:
    if isinstance(spec, str):
        return _PRIMITIVES[spec]
    if "list" in spec:
        return pa.list_(_arrow_type(spec["list"]))
    if "struct" in spec:
        return pa.struct([_arrow_field(f) for f in spec["struct"]])
    raise ValueError(f"unsupported type in schema: {spec!r}")


def _arrow_field(spec: dict[str, Any]) -> pa.Field:
    return pa.field(spec["name"], _arrow_type(spec["type"]), nullable=spec.get("nullable", True))


def schema_path(name: str) -> Path:
    """Path of ``schemas/<name>.schema.json``."""
    return Path(str(resources.files("bgm_batch") / "resources" / "schemas" / f"{name}.schema.json"))


@cache
def arrow_schema(name: str) -> pa.Schema:
    """The Arrow schema called ``name`` (recording, segments, quarantine)."""
    spec = json.loads(schema_path(name).read_text())
    return pa.schema([_arrow_field(f) for f in spec["fields"]], metadata={"bgm_batch.schema": name})


def polars_schema(name: str) -> pl.Schema:
    """The same schema as polars dtypes, for building frames."""
    return pl.Schema(pl.from_arrow(arrow_schema(name).empty_table()).schema)


def empty_frame(name: str) -> pl.DataFrame:
    """A frame with no rows and the named schema."""
    return pl.DataFrame(schema=polars_schema(name))


class ContractError(BgmError, ValueError):
    """A frame or file does not follow its schema; the message names the column."""


def conform(frame: pl.DataFrame, name: str, *, source: str = "frame") -> pl.DataFrame:
    """Select and cast the schema's columns in order; a missing column or bad type is an error.

    Extra columns are kept after the schema's own, so stages can carry their additions along.
    """
    schema = polars_schema(name)
    missing = [c for c in schema if c not in frame.columns]
    if missing:
        raise ContractError(
            f"{source}: missing column(s) {', '.join(missing)} of the {name} schema"
        )
    casts = []
    for column, dtype in schema.items():
        if frame.schema[column] != dtype:
            try:
                frame.select(pl.col(column).cast(dtype, strict=True))
            except Exception as exc:  # polars raises several types for a failed cast
                raise ContractError(
                    f"{source}: column {column!r} is {frame.schema[column]}, expected {dtype}"
                ) from exc
        casts.append(pl.col(column).cast(dtype))
    extra = [c for c in frame.columns if c not in schema]
    return frame.select(*casts, *extra)


def to_arrow(frame: pl.DataFrame, name: str, *, source: str = "frame") -> pa.Table:
    """The frame as an Arrow table with exactly the schema's types, nullability and metadata
    (polars alone would write large_string and nullable columns); extra columns follow."""
    table = conform(frame, name, source=source).to_arrow()
    schema = arrow_schema(name)
    extra = [table.schema.field(c) for c in table.column_names if c not in schema.names]
    target = pa.schema(list(schema) + extra, metadata=schema.metadata)
    return table.cast(target)


def write_parquet(frame: pl.DataFrame, path: Path, name: str) -> None:
    """Write a frame that follows schema ``name`` atomically (temp file + rename)."""
    import pyarrow.parquet as pq

    from bgm_batch.atomic import atomic_path

    table = to_arrow(frame, name, source=str(path))
    with atomic_path(Path(path)) as tmp:
        pq.write_table(table, tmp)
