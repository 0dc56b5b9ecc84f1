"""Algorithm 1 of the MetaBGM paper: turn a raw snapshot into the compact data the LLM sees.

For every group of a snapshot: drop each label containing ``Not`` (only affirmative states
carry meaning), round every number to two decimals (the raw doubles only burden the model),
and drop the ``Monster`` entries that round to zero (the mod lists every hostile type at 0.0).
Then keep the groups of the window's mode: combat keeps health, hunger, hostiles and attacks;
exploration keeps time, weather and temperature instead. Groups left empty are dropped.

``characterize_record`` is the algorithm as written, on one snapshot dict; ``characterize``
does the same to a whole recording frame with polars expressions (no per-row Python) and is
tested to equal the per-record version row by row. Everything game-specific (group names,
mode lists, combat thresholds) comes from the profile.
"""

from __future__ import annotations

import json
import operator
from collections.abc import Mapping
from typing import Any

import numpy as np
import polars as pl

from bgm_batch.data.game_profile import Profile, load_profile

_OPS = {">": operator.gt, ">=": operator.ge}


def round_like_python(values: np.ndarray, decimals: int) -> np.ndarray:
    """``round(v, decimals)`` for a whole array, bit for bit as Python's built-in.

    Python rounds the exact binary value (0.015 is stored as 0.01499... and rounds down),
    while ``np.round`` rounds ``v * 10**d``, which can land on a tie that is not there. The
    two agree except near ties, huge numbers and non-finite values; those few go through
    Python's ``round``.
    """
    values = np.asarray(values, dtype=np.float64)
    scale = 10.0**decimals
    scaled = values * scale
    rounded = np.rint(scaled) / scale
    with np.errstate(invalid="ignore"):
        near_tie = np.abs(np.abs(scaled - np.trunc(scaled)) - 0.5) < 1e-6
        risky = near_tie | ~(np.abs(values) < 1e6)
    for i in np.flatnonzero(risky):
        rounded[i] = round(float(values[i]), decimals)
    return rounded


def is_combat(record: Mapping[str, Any], profile: Profile) -> bool:
    """A snapshot is in combat when any combat rule of the profile holds on its raw values."""
    for rule in profile.combat_rules:
        group = record.get(rule.group)
        if (
            isinstance(group, Mapping)
            and rule.label in group
            and _OPS[rule.op](float(group[rule.label]), rule.value)
        ):
            return True
    return False


def characterize_record(record: Mapping[str, Any], profile: Profile | None = None) -> dict:
    """Algorithm 1 on one snapshot (group name -> {label: number}); ``Index`` is ignored.

    Returns the kept groups in profile order, labels in snapshot order.
    """
    profile = profile or load_profile()
    characterized: dict[str, dict[str, float]] = {}
    for name in profile.kept_groups(is_combat(record, profile)):
        entries = record.get(name)
        if not isinstance(entries, Mapping):
            continue
        drop_zero = profile.group(name).drop_zero
        kept = {}
        for label, value in entries.items():
            if profile.drop_label_substring in label:
                continue
            rounded = round(float(value), profile.decimals)
            if drop_zero and rounded == 0:
                continue
            kept[label] = rounded
        if kept:
            characterized[name] = kept
    return characterized


def info_str(characterized: Mapping[str, Any]) -> str:
    """The characterized snapshot as the JSON text handed to the LLM prompt."""
    return json.dumps(characterized)


def snapshot_to_record(snapshot: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """A recording row's ``snapshot`` list ({group, label, value} entries) as a nested dict."""
    record: dict[str, dict[str, float]] = {}
    for entry in snapshot:
        record.setdefault(entry["group"], {})[entry["label"]] = entry["value"]
    return record


def _format_numbers(values: pl.Series) -> pl.Series:
    """Python's ``repr`` of each float, vectorised: polars prints floats the same way except
    in exponent notation (below 1e-4 or from 1e16), which goes through ``repr``."""
    text = values.cast(pl.String)
    array = values.to_numpy()
    odd = np.flatnonzero(~((np.abs(array) >= 1e-4) & (np.abs(array) < 1e15)) & (array != 0))
    if odd.size:
        text = text.scatter(odd, [repr(float(array[i])) for i in odd])
    return text


def _json_strings(values: pl.Series) -> pl.Series:
    """JSON-encode strings exactly as ``json.dumps``, on the few distinct values only."""
    distinct = values.unique().to_list()
    return values.replace_strict({v: json.dumps(v) for v in distinct}, return_dtype=pl.String)


def _combat_rule_expr(profile: Profile) -> pl.Expr:
    hits = [
        (pl.col("group") == rule.group)
        & (pl.col("label") == rule.label)
        & _OPS[rule.op](pl.col("value"), rule.value)
        for rule in profile.combat_rules
    ]
    return pl.any_horizontal(hits) if hits else pl.lit(False)


def _kept_entries(long: pl.DataFrame, combat_rows: pl.Series, profile: Profile) -> pl.DataFrame:
    """Filter the exploded entries as Algorithm 1 does; adds ``rank`` (group order)."""
    rank = {g.name: i for i, g in enumerate(profile.groups)}
    kept_combat = [rank[g] for g in profile.kept_groups(True)]
    kept_explore = [rank[g] for g in profile.kept_groups(False)]
    drop_zero = [rank[g.name] for g in profile.groups if g.drop_zero]
    long = long.filter(
        ~pl.col("label").str.contains(profile.drop_label_substring, literal=True),
        pl.col("group").is_in(list(rank)),
    ).with_columns(pl.col("group").replace_strict(rank, return_dtype=pl.Int32).alias("rank"))
    long = long.filter(~(pl.col("rank").is_in(drop_zero) & (pl.col("value") == 0)))
    long = long.filter(
        pl.when(pl.col("_row").is_in(combat_rows.implode()))
        .then(pl.col("rank").is_in(kept_combat))
        .otherwise(pl.col("rank").is_in(kept_explore)),
    )
    rounded = pl.Series("value", round_like_python(long["value"].to_numpy(), profile.decimals))
    long = long.with_columns(rounded)
    return long.filter(~(pl.col("rank").is_in(drop_zero) & (pl.col("value") == 0)))


def _json_text(long: pl.DataFrame, n_rows: int) -> pl.Series:
    """Assemble each row's JSON text from its kept entries.

    Entries are put in (row, group rank, file position) order; each contributes one piece of
    text (an opening ``"Group": {`` when it starts a group, the separator, ``"label": value``),
    and one string join per row glues them. This avoids a nested group-by per (row, group).
    """
    if not long["rank"].diff().fill_null(0).ge(0).all() or not long["_row"].is_sorted():
        long = long.sort("_row", "rank", "_pos")
    new_row = pl.col("_row") != pl.col("_row").shift(1)
    new_group = new_row | (pl.col("rank") != pl.col("rank").shift(1))
    opening = _json_strings(long["group"]) + ": {"
    long = long.with_columns(
        pl.when(new_row.fill_null(True))
        .then(pl.lit("{") + opening)
        .when(new_group)
        .then(pl.lit("}, ") + opening)
        .otherwise(pl.lit(", "))
        .alias("prefix"),
        (_json_strings(long["label"]) + ": " + _format_numbers(long["value"])).alias("entry"),
    )
    rows = long.group_by("_row", maintain_order=True).agg(
        (pl.col("prefix") + pl.col("entry")).str.join("") + "}}"
    )
    row_ids = pl.DataFrame({"_row": pl.int_range(n_rows, dtype=pl.UInt32, eager=True)})
    joined = row_ids.join(rows, on="_row", how="left", maintain_order="left")
    return joined["prefix"].fill_null("{}").alias("info_str")


def characterize(frame: pl.DataFrame, profile: Profile | None = None) -> pl.DataFrame:
    """Algorithm 1 on every row of a recording frame; adds ``combat`` and ``info_str``.

    Equal to ``characterize_record`` row by row (property-tested), but vectorised: the
    snapshots are exploded into one long (row, group, label, value) frame, filtered and
    rounded in bulk, and the JSON text is assembled with one string aggregation per row.
    """
    profile = profile or load_profile()
    long = (
        frame.select(pl.int_range(pl.len(), dtype=pl.UInt32).alias("_row"), "snapshot")
        .explode("snapshot")
        .drop_nulls("snapshot")
        .unnest("snapshot")
        .with_columns(pl.int_range(pl.len(), dtype=pl.UInt32).alias("_pos"))
    )
    combat_rows = long.filter(_combat_rule_expr(profile))["_row"].unique()
    text = _json_text(_kept_entries(long, combat_rows, profile), frame.height)
    combat = pl.int_range(frame.height, dtype=pl.UInt32, eager=True).is_in(combat_rows.implode())
    return frame.with_columns(combat.alias("combat"), text)
