"""The hostile corpus: broken and malicious inputs, generated here, each with its outcome.

Every case is one bad capture file dropped into a folder of four good windows. The outcome is
always the same shape: the four good windows survive, the bad one is quarantined with the
expected field and reason, nothing is read from outside the folder, nothing escapes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bgm_batch.cli import main
from bgm_batch.data.game_profile import load_profile
from bgm_batch.data.ingest import parse_capture_file, read_recording, regular_capture_files
from bgm_batch.data.names import RECORDING_ID, UnsafePathError, inside
from bgm_batch.settings import IngestSettings

REAL_SAMPLE = Path(__file__).parents[2] / "data" / "real" / "sample-4.json"
REC = "20240601093000"


def snapshot(index: int) -> dict:
    return {**json.loads(REAL_SAMPLE.read_text()), "Index": index}


def index_as(index: int, literal: str) -> str:
    """Window ``index`` with its Index written as a raw JSON literal."""
    return json.dumps(snapshot(index)).replace(f'"Index": {index}', f'"Index": {literal}', 1)


def with_text(name: str, text: str) -> Callable[[Path], str]:
    def make(folder: Path) -> str:
        (folder / name).write_text(text)
        return name

    return make


def fifo(folder: Path) -> str:
    os.mkfifo(folder / f"{REC}-4.json")
    return f"{REC}-4.json"


def binary(folder: Path) -> str:
    (folder / f"{REC}-4.json").write_bytes(b'{"Index": 4, \xff\xfe\x00}')
    return f"{REC}-4.json"


def folder_named_json(folder: Path) -> str:
    (folder / f"{REC}-4.json").mkdir()
    return f"{REC}-4.json"


def link_to(target: str) -> Callable[[Path], str]:
    def make(folder: Path) -> str:
        (folder / f"{REC}-4.json").symlink_to(target)
        return f"{REC}-4.json"

    return make


def duplicated_label(index: int) -> str:
    text = json.dumps(snapshot(index))
    return text.replace('"Full": 100.0', '"Full": 100.0, "Full": 0.0', 1)


GOOD4 = json.dumps(snapshot(4))

# name -> (make the file, expected index in the quarantine, field, words in the reason)
CASES: dict[str, tuple[Callable[[Path], str], int | None, str | None, str]] = {
    "Index NaN": (with_text(f"{REC}-4.json", index_as(4, "NaN")), 4, "Index", "expected an int"),
    "Index Infinity": (with_text(f"{REC}-4.json", index_as(4, "Infinity")), 4, "Index", "inf"),
    "Index -Infinity": (with_text(f"{REC}-4.json", index_as(4, "-Infinity")), 4, "Index", "inf"),
    "Index 1e400 in digits": (
        with_text(f"{REC}-4.json", index_as(4, "1" + "0" * 400)),
        4,
        "Index",
        "differs",
    ),
    "Index beyond Python's digit limit": (
        with_text(f"{REC}-4.json", index_as(4, "9" * 5000)),
        4,
        None,
        "unreadable JSON",
    ),
    "Index 4.5": (with_text(f"{REC}-4.json", index_as(4, "4.5")), 4, "Index", "expected an int"),
    "Index true": (with_text(f"{REC}-4.json", index_as(4, "true")), 4, "Index", "expected an int"),
    "file name index beyond int64": (
        with_text(f"{REC}-99999999999999999999.json", GOOD4),
        None,
        "Index",
        "maximum recording length",
    ),
    "index 10^12": (
        with_text(f"{REC}-{10**12}.json", index_as(4, str(10**12))),
        None,
        "Index",
        "outside 0..8639",
    ),
    "index just past 24 h": (
        with_text(f"{REC}-8640.json", index_as(4, "8640")),
        None,
        "Index",
        "ingest.max_recording_hours",
    ),
    "deeply nested": (
        with_text(f"{REC}-4.json", "[" * 200_000 + "]" * 200_000),
        4,
        None,
        "nested too deeply",
    ),
    "nested group": (
        with_text(f"{REC}-4.json", json.dumps({**snapshot(4), "Health": {"Full": {"x": 1}}})),
        4,
        "Health.Full",
        "not a number",
    ),
    "label value overflows a float": (
        with_text(f"{REC}-4.json", GOOD4.replace("100.0", "1" + "0" * 400, 1)),
        4,
        "Biome.Plains",
        "too large",
    ),
    "label 1e999": (
        with_text(f"{REC}-4.json", GOOD4.replace("100.0", "1e999", 1)),
        4,
        "Biome.Plains",
        "infinite",
    ),
    "duplicate label": (
        with_text(f"{REC}-4.json", duplicated_label(4)),
        4,
        "Health.Full",
        "appears twice",
    ),
    "duplicate group": (
        with_text(f"{REC}-4.json", GOOD4.replace("{", '{"Time": {"Day": 100.0}, ', 1)),
        4,
        "Time",
        "group appears twice",
    ),
    "empty required group": (
        with_text(f"{REC}-4.json", json.dumps({**snapshot(4), "Health": {}})),
        4,
        "Health",
        "empty",
    ),
    "file over the size limit": (
        with_text(f"{REC}-4.json", GOOD4[:-1] + ', "Pad": {' + '"x": 1,' * 200_000 + '"y": 1}}'),
        4,
        None,
        "max_file_bytes",
    ),
    "binary file": (binary, 4, None, "not UTF-8"),
    "top level is a list": (with_text(f"{REC}-4.json", "[1, 2]"), 4, None, "top level"),
    "unsafe recording id": (with_text("..-4.json", GOOD4), 4, "recording", "not a safe name"),
    "FIFO named .json": (fifo, 4, None, "a FIFO"),
    "symlink to a system file": (link_to("/etc/os-release"), 4, None, "outside the input"),
    "symlink to the zero device": (link_to("/dev/zero"), 4, None, "outside the input"),
    "symlink to itself": (link_to(f"{REC}-4.json"), 4, None, "or to nothing"),
    "dangling symlink": (link_to("missing.json"), 4, None, "or to nothing"),
    "folder named .json": (folder_named_json, 4, None, "a folder"),
}


@pytest.fixture
def capture(tmp_path: Path) -> Path:
    folder = tmp_path / "cap"
    folder.mkdir()
    for i in range(4):
        (folder / f"{REC}-{i}.json").write_text(json.dumps(snapshot(i)))
    return folder


@pytest.mark.parametrize("case", list(CASES))
def test_hostile_window_is_quarantined_and_the_others_survive(capture: Path, case: str) -> None:
    make, index, field, reason = CASES[case]
    name = make(capture)
    result = read_recording(capture)
    assert result.frame.height == 4, case
    assert result.rows_in == 5
    row = result.quarantine.row(0, named=True)
    assert row["source"] == name
    assert (row["index"], row["field"]) == (index, field)
    assert reason in row["reason"], row["reason"]
    assert row["raw"] is None or len(row["raw"]) < 4200  # a bounded excerpt at most
    assert "NAME=" not in (row["raw"] or "")  # nothing of /etc/os-release was copied


def test_symlink_inside_the_folder_is_followed(capture: Path) -> None:
    (capture / "elsewhere").mkdir()
    (capture / "elsewhere" / "w.txt").write_text(json.dumps(snapshot(4)))
    (capture / f"{REC}-4.json").symlink_to(capture / "elsewhere" / "w.txt")
    assert read_recording(capture).summary() == "rows in: 5, accepted: 5, quarantined: 0"


def test_the_limits_come_from_settings(capture: Path) -> None:
    (capture / f"{REC}-400.json").write_text(json.dumps(snapshot(400)))
    one_hour = IngestSettings(max_recording_hours=1.0, raw_excerpt_chars=100)
    result = read_recording(capture, limits=one_hour)
    row = result.quarantine.row(0, named=True)
    assert "outside 0..359" in row["reason"] and "1 h" in row["reason"]
    assert row["raw"].endswith("characters in all]") and len(row["raw"]) < 140
    assert read_recording(capture).quarantine.height == 0  # 24 h by default


def test_parquet_names_and_indexes_are_checked_too(capture: Path, tmp_path: Path) -> None:
    frame = read_recording(capture).frame.with_columns(
        pl.Series("recording", ["../../../ESCAPED", "ok", "ok", "ok"]),
        pl.Series("index", [0, 1, 10**12, -1]),
    )
    frame.write_parquet(tmp_path / "in.parquet")
    result = read_recording(tmp_path / "in.parquet")
    got = {r["index"]: (r["field"], r["reason"]) for r in result.quarantine.to_dicts()}
    assert result.frame["index"].to_list() == [1]
    assert got[0][0] == "recording" and "not a safe name" in got[0][1]
    assert got[10**12][0] == got[-1][0] == "Index"


def test_nothing_escapes_the_split_target(capture: Path, tmp_path: Path) -> None:
    frame = read_recording(capture).frame.with_columns(
        pl.lit("../../../ESCAPED").alias("recording")
    )
    frame = pl.concat([frame, read_recording(capture).frame])
    frame.write_parquet(tmp_path / "in.parquet")
    target = tmp_path / "deep" / "er" / "split"
    assert main(["import-capture", str(tmp_path / "in.parquet"), "-o", str(target), "--split"]) == 0
    written = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.parquet"))
    assert written == [
        "deep/er/split.quarantine.parquet",
        f"deep/er/split/{REC}.parquet",
        "in.parquet",
    ]
    assert not list(tmp_path.rglob("ESCAPED*"))


def test_inside_refuses_escapes_through_dots_and_links(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    assert inside(tmp_path / "out", tmp_path / "out" / "a.flac") == tmp_path / "out" / "a.flac"
    with pytest.raises(UnsafePathError, match="outside"):
        inside(tmp_path / "out", tmp_path / "out" / ".." / "a.flac")
    (tmp_path / "out" / "link").symlink_to(tmp_path)
    with pytest.raises(UnsafePathError):
        inside(tmp_path / "out", tmp_path / "out" / "link" / "a.flac")


# --- property: whatever comes in, rows in = accepted + quarantined, no exception escapes ---

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
RECORDING_NAMES = st.text(
    st.characters(blacklist_characters="/\x00", blacklist_categories=("Cs",)), max_size=40
).filter(lambda name: len(name.encode()) < 200)
"""Any file name a file system takes: dots, spaces, unicode, '..'."""
GROUPS = st.dictionaries(
    st.sampled_from(["Biome", "Health", "Monster", "Index", "Time", "x"]),
    JSON_VALUES,
    max_size=6,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    files=st.lists(
        st.tuples(
            st.one_of(st.just(REC), RECORDING_NAMES),
            st.integers(min_value=-3, max_value=10**25),
            st.one_of(st.binary(max_size=200), GROUPS.map(lambda g: json.dumps(g).encode())),
        ),
        min_size=1,
        max_size=5,
    )
)
def test_random_bytes_and_json_never_escape_ingest(tmp_path_factory, files) -> None:
    folder = tmp_path_factory.mktemp("random")
    for n, (recording, index, content) in enumerate(files):
        name = f"{recording}-{index}.json" if index >= 0 else f"junk{n}.json"
        (folder / name).write_bytes(content)
    written = len(list(folder.glob("*.json")))
    result = read_recording(folder)
    assert result.rows_in == written == result.frame.height + result.quarantine.height
    assert all(RECORDING_ID.fullmatch(r) for r in result.frame["recording"])


@settings(max_examples=40, deadline=None)
@given(groups=GROUPS, index=st.integers(min_value=0, max_value=9000))
def test_random_json_windows_parse_or_reject_with_a_reason(tmp_path_factory, groups, index) -> None:
    path = tmp_path_factory.mktemp("one") / f"{REC}-{index}.json"
    path.write_text(json.dumps(groups))
    row, rejection = parse_capture_file(path, load_profile())
    assert (row is None) != (rejection is None)
    assert rejection is None or rejection.reason


def test_only_safe_regular_files_are_hashed_for_the_manifest(capture: Path) -> None:
    fifo(capture)
    (capture / f"{REC}-5.json").symlink_to("/etc/os-release")
    (capture / f"{REC}-6.json").symlink_to(capture / "missing")
    (capture / f"{REC}-7.json").mkdir()
    (capture / f"{REC}-8.json").symlink_to(capture / f"{REC}-0.json")
    names = [p.name for p in regular_capture_files(capture)]
    assert names == [f"{REC}-{i}.json" for i in (0, 1, 2, 3, 8)]


@settings(max_examples=30, deadline=None)
@given(
    rows=st.lists(
        st.tuples(st.text(max_size=12), st.integers(min_value=-(2**63), max_value=2**63 - 1)),
        min_size=1,
        max_size=6,
    )
)
def test_random_recording_ids_and_indexes_in_parquet(tmp_path_factory, rows) -> None:
    good = read_recording(REAL_SAMPLE.parent).frame.head(1)  # the real sample, window 4
    frame = pl.concat([good] * len(rows)).with_columns(
        pl.Series("recording", [r for r, _ in rows]), pl.Series("index", [i for _, i in rows])
    )
    path = tmp_path_factory.mktemp("pq") / "in.parquet"
    frame.write_parquet(path)
    result = read_recording(path)
    assert result.rows_in == len(rows) == result.frame.height + result.quarantine.height
    assert all(RECORDING_ID.fullmatch(r) for r in result.frame["recording"])
    assert result.frame["index"].is_between(0, 8639).all()
