"""Indexing a real (synth-rendered) library: features, metadata, skips, incremental updates."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from musiclib import SIDECAR_TRACK, TRACKS, UNREADABLE, render_track

from bgm_batch.library import catalog
from bgm_batch.library.index import build_index, load_index

pytest_plugins = ["musiclib"]


def test_every_readable_track_is_indexed_and_the_rest_reported(index_dir: Path) -> None:
    index = load_index(index_dir)
    assert sorted(index.tracks["file"]) == sorted(t[0] for t in TRACKS)
    skipped = pl.read_parquet(index_dir / "skipped.parquet")
    assert sorted(skipped["file"]) == sorted(UNREADABLE)
    assert all(skipped["reason"].str.len_chars() > 0)
    info = json.loads((index_dir / "index.json").read_text())
    assert (info["tracks"], info["skipped"]) == (len(TRACKS), len(UNREADABLE))


def test_features_tell_battle_tracks_from_calm_ones(index_dir: Path) -> None:
    tracks = load_index(index_dir).tracks
    energy = dict(zip(tracks["file"], tracks["energy"], strict=True))
    for battle in ("iron_charge.flac", "steel_storm.wav"):
        for calm in ("meadow_morning.flac", "quiet_stream.ogg"):
            assert energy[battle] > energy[calm] + 0.1
    row = tracks.filter(pl.col("file") == "iron_charge.flac").row(0, named=True)
    assert abs(row["tempo_bpm"] - 150) < 8  # rendered at 150 bpm
    assert row["duration_s"] == pytest.approx(16.0, abs=0.01)
    assert row["mode"] in ("major", "minor") and row["key"]
    beats, bars = np.array(row["beats_s"]), np.array(row["bars_s"])
    assert len(bars) >= 8 and np.median(np.diff(bars)) == pytest.approx(1.6, abs=0.05)  # 4 beats
    assert set(bars) <= set(beats)
    assert -40 < row["loudness_lufs"] < -5


def test_descriptions_carry_metadata_and_features(index_dir: Path) -> None:
    index = load_index(index_dir)
    text = dict(zip(index.tracks["file"], index.tracks["text"], strict=True))
    assert text["steel_storm.wav"].startswith("Steel Storm by Test Band. Tags: battle")
    assert "Tags: cheerful, upbeat, folk" in text[SIDECAR_TRACK]  # from the JSON sidecar
    assert "bpm" in text["quiet_stream.ogg"] and "energy" in text["quiet_stream.ogg"]
    vectors = index.text_embeddings
    assert vectors.shape == (len(TRACKS), 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_csv_metadata_wins_over_a_sidecar(tmp_path: Path) -> None:
    (tmp_path / "a.wav").write_bytes(b"")
    (tmp_path / "a.json").write_text(json.dumps({"title": "Sidecar", "tags": ["x", "y"]}))
    assert catalog.metadata_for(tmp_path / "a.wav", tmp_path, {})["tags"] == "x, y"
    (tmp_path / "library.csv").write_text("file,title\na.wav,From CSV\n")
    csv = catalog.read_csv_metadata(tmp_path)
    assert catalog.metadata_for(tmp_path / "a.wav", tmp_path, csv)["title"] == "From CSV"


def counting(encode):
    """Wrap an encoder so the test sees which texts were embedded."""
    seen: list[str] = []

    def wrapped(texts: list[str]) -> np.ndarray:
        seen.extend(texts)
        return encode(texts)

    return wrapped, seen


def test_reindexing_only_touches_new_or_changed_files(music_dir: Path, tmp_path: Path) -> None:
    from bgm_batch.evaluation.embeddings import load_embedder

    music = tmp_path / "music"
    shutil.copytree(music_dir, music)
    out = tmp_path / "index"
    embedder = load_embedder()
    first = build_index(music, out, embed_text=embedder.encode, text_model="minilm")
    assert (first.analysed, first.reused) == (len(TRACKS), 0)
    before = load_index(out)

    encode, seen = counting(embedder.encode)
    again = build_index(music, out, embed_text=encode, text_model="minilm")
    assert (again.analysed, again.reused, seen) == (0, len(TRACKS), [])

    render_track(music / "meadow_morning.flac", "Slow sad music with cello in D minor, 60 bpm.", 9)
    csv = (music / "library.csv").read_text().replace("Iron Charge", "Iron Charge II")
    (music / "library.csv").write_text(csv)
    (music / "more_broken.ogg").write_bytes(b"OggS" + bytes(100))
    encode, seen = counting(embedder.encode)
    changed = build_index(music, out, embed_text=encode, text_model="minilm")
    assert (changed.analysed, changed.reused) == (1, len(TRACKS) - 1)
    assert "more_broken.ogg" in changed.skipped["file"].to_list()
    assert len(seen) == 2  # the re-rendered track and the renamed one
    after = load_index(out)
    same = after.tracks["file"].to_list().index("quiet_stream.ogg")
    old = before.tracks["file"].to_list().index("quiet_stream.ogg")
    assert np.array_equal(after.text_embeddings[same], before.text_embeddings[old])
