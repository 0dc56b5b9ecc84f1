"""Library mode end to end through the CLI: index a folder, score a recording against it,
refine with feedback; the deliverables keep their contract."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import opentimelineio as otio
import polars as pl
import pyarrow.parquet as pq
import pytest
from conftest import REPO
from musiclib import UNREADABLE

from bgm_batch.cli import main
from bgm_batch.data.contract import arrow_schema

pytest_plugins = ["musiclib"]

SAMPLE = REPO / "data" / "sample" / "capture"
WINDOWS = range(38, 52)  # Dripstone Caves exploring (38-45), then a fight in Lush Caves (46-51)
BATTLE = {"iron_charge.flac", "steel_storm.wav"}


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("capture")
    for path in SAMPLE.glob("*.json"):
        if int(path.stem.split("-")[1]) in WINDOWS:
            shutil.copy(path, dest / path.name)
    return dest


def score(capture: Path, out: Path, index: Path, *extra: str) -> pl.DataFrame:
    argv = ["score", str(capture), "--out", str(out), "--audio", f"library:{index}"]
    assert main([*argv, "--no-progress", *extra]) == 0
    return pl.read_parquet(out / "segments.parquet")


def names(segments: pl.DataFrame) -> list[str]:
    return [Path(p).name for p in segments["source_track"]]


def test_cli_index_reports_the_unreadable_files(music_dir: Path, tmp_path: Path, capsys) -> None:
    music = tmp_path / "music"
    music.mkdir()
    for name in ("quiet_stream.ogg", *UNREADABLE):
        shutil.copy(music_dir / name, music / name)
    index = str(tmp_path / "index")
    assert main(["library", "index", str(music), "-o", index, "--no-progress"]) == 0
    out, err = capsys.readouterr()
    assert "tracks: 1 (analysed 1, unchanged 0)" in out
    assert all(f"skipped {name}:" in err for name in UNREADABLE)
    (tmp_path / "empty").mkdir()
    assert main(["library", "index", str(tmp_path / "empty"), "-o", str(tmp_path / "i")]) == 1
    assert main(["library", "index", str(tmp_path / "nothing"), "-o", str(tmp_path / "i")]) == 1


@pytest.mark.slow
def test_score_against_the_library_and_refine(
    prefect_api, isolated_cache, capture: Path, index_dir: Path, music_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    segments = score(capture, out, index_dir)
    assert pq.read_schema(out / "segments.parquet").equals(arrow_schema("segments"))
    assert segments["index"].to_list() == list(WINDOWS)
    assert all(Path(p).parent == music_dir.resolve() for p in segments["source_track"])
    assert segments["reason"].null_count() == 0
    for _, part in segments.group_by("scene"):
        assert part["source_track"].n_unique() == 1  # one track per stretch
        assert part["reason"].n_unique() == 1
    fight = segments.filter(pl.col("scene").str.contains("combat"))
    calm = segments.filter(~pl.col("scene").str.contains("combat"))
    assert set(names(fight)) <= BATTLE and not set(names(calm)) & BATTLE
    assert (out / "track.flac").is_file()
    clip = next(iter(otio.adapters.read_from_file(str(out / "timeline.otio")).find_clips()))
    assert clip.metadata["bgm_batch"]["source_track"] == segments["source_track"][0]

    first_fight = names(fight)[0]
    wish = (
        "more vocals and choir"
        if first_fight == "iron_charge.flac"
        else "less vocals, more epic strings"
    )
    refined = score(capture, out, index_dir, "--feedback", wish, "--feedback-for", "combat")
    new_fight = refined.filter(pl.col("scene").str.contains("combat"))
    assert set(names(new_fight)) == BATTLE - {first_fight}  # moved the asked way
    assert names(refined.filter(~pl.col("scene").str.contains("combat"))) == names(calm)
    assert wish in new_fight["reason"][0]

    calmer = ("--feedback", "calm piano", "--feedback-for", "0-60")
    again = score(capture, out, index_dir, *calmer)
    turns = json.loads((out / "library" / "feedback.json").read_text())
    assert [t["text"] for t in turns] == [wish, "calm piano"]
    assert turns[0]["previous"][f"{segments['recording'][0]}:46"] == first_fight
    assert names(again.filter(pl.col("scene").str.contains("combat"))) == names(new_fight)
    score(capture, out, index_dir, *calmer)  # the same command again: a resume, no new turn
    assert len(json.loads((out / "library" / "feedback.json").read_text())) == 2


@pytest.mark.slow
def test_archive_scores_against_the_library(
    prefect_api, isolated_cache, capture: Path, index_dir: Path, tmp_path: Path
) -> None:
    root, out = tmp_path / "root", tmp_path / "out"
    shutil.copytree(capture, root / "session")
    argv = ["archive", str(root), "--out", str(out), "--audio", f"library:{index_dir}"]
    assert main([*argv, "--no-progress"]) == 0
    (folder,) = [p for p in out.iterdir() if (p / "segments.parquet").exists()]
    segments = pl.read_parquet(folder / "segments.parquet")
    assert segments["index"].to_list() == list(WINDOWS)
    assert segments["source_track"].null_count() == 0 and segments["reason"].null_count() == 0
    fight = segments.filter(pl.col("scene").str.contains("combat"))
    assert set(names(fight)) <= BATTLE
