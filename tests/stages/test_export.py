"""Editor deliverables: the OTIO timeline read back through OTIO, and the manifest."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import opentimelineio as otio
import polars as pl
import pytest

import bgm_batch
from bgm_batch.settings import Settings
from bgm_batch.stages.export import build_manifest, file_sha256, write_manifest, write_timeline

RT = otio.opentime.RationalTime


def _segments(**overrides: list) -> pl.DataFrame:
    rows = {
        "recording": ["run1"] * 4,
        "index": [0, 1, 2, 3],
        "start_s": [0.0, 10.0, 20.0, 30.0],
        "end_s": [10.0, 20.0, 30.0, 40.0],
        "caption": ["calm flute", "calm flute, strings", "tense drums", "tense drums, brass"],
        "narrative": [None, "a quiet meadow", "a dark cave", "deeper in the cave"],
        "scene": ["plains", "plains", "cave", "cave"],
        "transition": ["start", "continue", "restart", "continue"],
        "audio_offset_s": [0.0, 10.0, 20.0, 30.0],
        "audio_duration_s": [10.0, 10.0, 10.0, 10.0],
    }
    return pl.DataFrame({**rows, **overrides})


def _write_and_read(tmp_path: Path, segments: pl.DataFrame) -> otio.schema.Timeline:
    path = tmp_path / "timeline.otio"
    write_timeline(segments, path, track_path="track.flac", rate=30.0, name="run1")
    assert [p.name for p in tmp_path.iterdir()] == ["timeline.otio"]  # no temp file left
    return otio.adapters.read_from_file(str(path))


def test_timeline_has_one_clip_per_segment_and_scene_markers(tmp_path: Path) -> None:
    timeline = _write_and_read(tmp_path, _segments())
    assert timeline.name == "run1"
    (track,) = timeline.tracks
    assert track.kind == otio.schema.TrackKind.Audio
    clips = list(track.find_clips())
    assert [c.name for c in clips] == _segments()["caption"].to_list()
    for k, clip in enumerate(clips):
        expected = otio.opentime.TimeRange(RT(300 * k, 30), RT(300, 30))
        assert clip.source_range == expected
        assert clip.range_in_parent() == expected  # timeline time == track.flac time
        assert clip.media_reference.target_url == "track.flac"
        assert clip.metadata["bgm_batch"]["index"] == k
    assert clips[0].metadata["bgm_batch"]["narrative"] is None
    assert clips[2].metadata["bgm_batch"]["transition"] == "restart"
    (marker,) = timeline.tracks.markers
    assert marker.name == "cave" and marker.marked_range.start_time == RT(600, 30)
    assert timeline.duration() == RT(1200, 30)


def test_timeline_keeps_clips_at_their_offsets_across_gaps_and_overlaps(tmp_path: Path) -> None:
    # segment 0 overlaps segment 1 by 1 s; segment 3 starts 2.5 s after segment 2 ends
    segments = _segments(
        audio_offset_s=[0.0, 10.0, 20.0, 32.5], audio_duration_s=[11.0, 10.0, 10.0, 10.0]
    )
    timeline = _write_and_read(tmp_path, segments)
    items = list(timeline.tracks[0])
    assert [type(i).__name__ for i in items] == ["Clip", "Clip", "Clip", "Gap", "Clip"]
    assert items[0].source_range.duration == RT(300, 30)  # cut where the next clip begins
    assert items[3].duration() == RT(75, 30)
    assert items[4].range_in_parent().start_time == RT(975, 30)


def test_timeline_refuses_several_recordings(tmp_path: Path) -> None:
    segments = _segments(recording=["run1", "run1", "run2", "run2"])
    with pytest.raises(ValueError, match="one timeline per recording"):
        write_timeline(segments, tmp_path / "t.otio", track_path="track.flac", name="x")


def test_file_sha256_matches_hashlib_across_chunks(tmp_path: Path) -> None:
    path = tmp_path / "data.bin"
    data = bytes(range(256)) * 1000
    path.write_bytes(data)
    assert file_sha256(path, chunk_bytes=4096) == hashlib.sha256(data).hexdigest()


def _manifest(tmp_path: Path, **counts: int) -> dict:
    recording = tmp_path / "run1.parquet"
    recording.write_bytes(b"recording bytes")
    return build_manifest(
        settings=Settings(seed=7),
        text_backend={"name": "hf", "model": "tiny-llama", "revision": "abc", "adapter": "f00"},
        audio_backend={"name": "synth", "model": "none"},
        prompt_templates={"narrative": "1a2b", "caption": "3c4d"},
        inputs=[recording],
        timings={"narrate": 1.23456, "render": 2.0},
        counts=counts or {"rows_in": 5, "accepted": 4, "quarantined": 1, "rendered": 4},
        reports={"mux": {"audio_path": "ducked"}},
    )


def test_manifest_records_provenance(tmp_path: Path) -> None:
    manifest = _manifest(tmp_path)
    assert manifest["bgm_batch_version"] == bgm_batch.__version__
    assert manifest["seed"] == 7 and manifest["settings"]["mux"]["duck"] is True
    assert manifest["text_backend"]["adapter"] == "f00"
    assert manifest["prompt_templates"] == {"narrative": "1a2b", "caption": "3c4d"}
    (entry,) = manifest["inputs"].values()
    assert entry == {"sha256": hashlib.sha256(b"recording bytes").hexdigest(), "bytes": 15}
    assert manifest["timings_s"] == {"narrate": 1.235, "render": 2.0}
    assert manifest["reports"]["mux"]["audio_path"] == "ducked"
    assert "opentimelineio" in manifest["environment"]["libraries"]


def test_manifest_counts_must_add_up(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="rows_in=5 but accepted=4 \\+ quarantined=0"):
        _manifest(tmp_path, rows_in=5, accepted=4, quarantined=0)


def test_write_manifest_is_sorted_json(tmp_path: Path) -> None:
    manifest = _manifest(tmp_path)
    path = tmp_path / "out" / "manifest.json"
    write_manifest(path, manifest)
    text = path.read_text()
    assert json.loads(text) == manifest
    assert text == json.dumps(manifest, indent=2, sort_keys=True) + "\n"
    assert sorted(p.name for p in path.parent.iterdir()) == ["manifest.json"]
