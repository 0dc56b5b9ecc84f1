"""The synthetic captures: the bundled sample's events, plausibility, format, determinism,
and the benchmark frames."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import polars as pl
import pytest

from bgm_batch.data.contract import arrow_schema, conform, write_parquet
from bgm_batch.data.ingest import read_recording
from bgm_batch.stages.characterize import characterize, snapshot_to_record
from bgm_batch.testing.simulate import (
    BIOMES,
    CAVE_BIOMES,
    MONSTER_TYPES,
    SAMPLE_SEED,
    SAMPLE_WINDOWS,
    START_TIME,
    capture_text,
    dominant,
    find_fights,
    missing_events,
    simulate_frame,
    simulate_recording,
    write_capture_dir,
)

DATA = Path(__file__).parents[2] / "data"
CAPTURE = DATA / "sample" / "capture"
REAL = DATA / "real" / "sample-4.json"
# Sets of labels that share a window's ticks (each set sums to 100 %).
EXCLUSIVE = [
    ("Biome", None), ("Time", None), ("Climate", None), ("Temperature", None),
    ("Health", None), ("Hunger", None), ("Attacked", None),
    ("Status", {"Toching Water", "Being Rained", "Not Touching Water"}),
    ("Status", {"On Fire", "Not On Fire"}),
    ("Motion", {"Sprinting", "Not Sprinting"}), ("Motion", {"Sneaking", "Not Sneaking"}),
    ("Placing", {"On Ground", "Not On Ground"}), ("Placing", {"On Rail", "Not On Rail"}),
    ("Placing", {"In Lava", "Not In Lava"}),
]  # fmt: skip


@pytest.fixture(scope="module")
def sample() -> list[dict]:
    files = sorted(CAPTURE.glob("*.json"), key=lambda p: int(p.stem.rsplit("-", 1)[1]))
    return [json.loads(p.read_text()) for p in files]


def tick_counts(snapshot: dict) -> list[int]:
    """Tick counts from 190 to 210 that make every share of the window a whole number of ticks
    (several fit a window whose shares are all 0 or 100)."""
    shares = [
        (value, 1 if group == "Monster" else 100)
        for group, entries in snapshot.items()
        if group not in ("Index", "BiomePredict")
        for value in entries.values()
    ]
    return [
        n
        for n in range(190, 211)
        if all(abs(v * n / d - round(v * n / d)) < 1e-6 for v, d in shares)
    ]


def assert_tick_shares(snapshot: dict) -> None:
    for group, labels in EXCLUSIVE:
        entries = {k: v for k, v in snapshot[group].items() if labels is None or k in labels}
        assert math.isclose(sum(entries.values()), 100.0, abs_tol=1e-9), (snapshot["Index"], group)
    assert list(snapshot["Monster"]) == list(MONSTER_TYPES)
    named = sum(v for k, v in snapshot["Monster"].items() if k != "sum")
    assert snapshot["Monster"]["sum"] >= named - 1e-9
    fitting = tick_counts(snapshot)
    assert fitting and any(195 <= n <= 205 for n in fitting), snapshot["Index"]


# --- the bundled sample ------------------------------------------------------------------------


def test_bundled_sample_is_what_the_generator_makes(sample: list[dict]) -> None:
    expected = simulate_recording(SAMPLE_WINDOWS, seed=SAMPLE_SEED)
    assert len(sample) == SAMPLE_WINDOWS == 186
    for snapshot in expected:
        path = CAPTURE / f"{START_TIME}-{snapshot['Index']}.json"
        assert path.read_text() == capture_text(snapshot), path.name


def test_timeline_is_current(sample: list[dict]) -> None:
    spec = importlib.util.spec_from_file_location(
        "make_sample", Path(__file__).parents[2] / "tools" / "make_sample.py"
    )
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    text = (DATA / "sample" / "timeline.md").read_text()
    assert text == tool.timeline_markdown(sample, SAMPLE_SEED)
    assert text.count("\n| ") == 2 + 31  # header, rule, one row per minute


def test_bundled_sample_has_every_required_event(sample: list[dict]) -> None:
    biomes = {b for s in sample for b in s["Biome"]}
    times = {t for s in sample for t in s["Time"]}
    assert len(biomes) >= 4 and biomes & CAVE_BIOMES
    assert {"Day", "Night"} <= times and "Midnight" in times and "Sunrise" in times
    assert len({c for s in sample for c in s["Climate"]}) >= 2
    costly = [f for f in find_fights(sample) if f.lowest_health != "Full"]
    assert len(costly) >= 2
    assert {"Full", "Normal"} <= {h for s in sample for h in s["Hunger"]}
    assert any(s["Attacked"].get("Attacked", 0) > 0 for s in sample)
    assert missing_events(sample) == []


def test_bundled_sample_reads_cleanly() -> None:
    result = read_recording(CAPTURE)
    assert result.summary() == "rows in: 186, accepted: 186, quarantined: 0"
    assert result.warnings == []
    assert result.frame["end_s"].max() == 1860.0


def test_every_window_is_made_of_tick_shares(sample: list[dict]) -> None:
    for snapshot in sample:
        assert_tick_shares(snapshot)
    exact = [tick_counts(s) for s in sample]
    assert len({n[0] for n in exact if len(n) == 1}) > 5  # not always 200 ticks a window


def test_key_order_and_format_follow_the_real_file(sample: list[dict]) -> None:
    real = json.loads(REAL.read_text())
    assert capture_text(real) == REAL.read_text()  # the writer reproduces the mod's bytes
    for snapshot in sample:
        assert list(snapshot) == list(real)
        assert list(snapshot["Monster"]) == list(real["Monster"])
        assert len(snapshot["BiomePredict"]) == 1


def test_routes_go_between_neighbouring_biomes(sample: list[dict]) -> None:
    route = [dominant(s["Biome"]) for s in sample]
    entrance = None
    for here, there in zip(route, route[1:], strict=False):
        if here == there:
            continue
        if there in CAVE_BIOMES and here not in CAVE_BIOMES:
            entrance = here
        legal = there in BIOMES[here].neighbours or (here in CAVE_BIOMES and there == entrance)
        assert legal or there in CAVE_BIOMES, f"{here} -> {there}"


def test_weather_and_temperature_follow_the_biome(sample: list[dict]) -> None:
    for s in sample:
        biome = BIOMES[dominant(s["Biome"])]
        if len(s["Biome"]) == 1:
            assert ("Cold" in s["Temperature"]) == biome.cold
        if "Snow" in s["Climate"]:
            assert any(BIOMES[b].cold for b in s["Biome"])
        if "Cloudy" in s["Climate"]:
            assert any(BIOMES[b].dry for b in s["Biome"])
        if biome.cave and len(s["Biome"]) == 1:
            assert "Being Rained" not in s["Status"]


def test_health_falls_only_under_attack_or_fire(sample: list[dict]) -> None:
    for before, after in zip(sample, sample[1:], strict=False):
        if "Full" in before["Health"] and set(after["Health"]) - {"Full"}:
            hurt = after["Attacked"].get("Attacked", 0) + after["Status"].get("On Fire", 0)
            assert hurt > 0 or set(before["Health"]) - {"Full"}, after["Index"]


# --- the generator ---------------------------------------------------------------------------


def test_generator_is_deterministic_and_grows_by_appending() -> None:
    assert simulate_recording(30, seed=5) == simulate_recording(30, seed=5)
    assert simulate_recording(30, seed=5) != simulate_recording(30, seed=6)
    assert simulate_recording(12, seed=5) == simulate_recording(30, seed=5)[:12]


def test_start_tick_sets_the_time_of_day() -> None:
    night = simulate_recording(3, seed=1, start_tick=15000)
    assert all(dominant(s["Time"]) == "Night" for s in night)


def test_write_capture_dir_names_files_like_the_mod(tmp_path: Path) -> None:
    snapshots = simulate_recording(3, seed=2)
    paths = write_capture_dir(snapshots, tmp_path / "cap", "20250102030405")
    assert [p.name for p in paths] == [f"20250102030405-{i}.json" for i in range(3)]
    assert [json.loads(p.read_text()) for p in paths] == snapshots
    assert read_recording(tmp_path / "cap").summary().endswith("accepted: 3, quarantined: 0")


# --- recording frames --------------------------------------------------------------------------


def test_simulate_frame_follows_the_recording_schema() -> None:
    frame = simulate_frame(50, seed=4)
    expected = pl.from_arrow(arrow_schema("recording").empty_table()).schema
    assert frame.schema == expected
    conform(frame, "recording")


def test_short_frame_equals_the_simulated_recording() -> None:
    frame = simulate_frame(40, seed=4)
    recording = simulate_recording(40, seed=4)
    rows = [snapshot_to_record(s) for s in frame["snapshot"].to_list()]
    assert [{"Index": i, **row} for i, row in enumerate(rows)] == recording
    assert frame["source"][3] == f"{START_TIME}-3.json"
    assert frame["start_s"].to_list()[:2] == [0.0, 10.0] and frame["end_s"][1] == 20.0


def test_long_frames_splice_and_retime_valid_windows(tmp_path: Path) -> None:
    frame = simulate_frame(1500, seed=1, n_recordings=3, pool_windows=120)
    per_recording = frame.group_by("recording").agg(pl.len(), pl.col("index").max())
    assert per_recording.height == 3
    assert (per_recording["index"] + 1 == per_recording["len"]).all()
    rows = [snapshot_to_record(s) for s in frame["snapshot"].to_list()]
    for i, row in enumerate(rows[::7]):
        assert_tick_shares({"Index": i, **row})
    distinct = {json.dumps(r, sort_keys=True) for r in rows}
    assert len(distinct) > 1400  # re-timing and traded ticks make repeated pool windows differ
    assert characterize(frame)["combat"].any()
    write_parquet(frame, tmp_path / "rec.parquet", "recording")
    result = read_recording(tmp_path / "rec.parquet")
    assert result.summary() == "rows in: 1500, accepted: 1500, quarantined: 0"


def test_simulate_frame_rejects_impossible_splits() -> None:
    with pytest.raises(ValueError):
        simulate_frame(2, n_recordings=3)


def test_missing_events_names_what_a_short_recording_lacks() -> None:
    missing = missing_events(simulate_recording(6, seed=7))  # one minute of a sunny morning
    assert {"a cave", "night", "two fights that cost health"} <= set(missing)
    assert "day" not in missing
