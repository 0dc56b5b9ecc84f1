"""Editor deliverables: the OTIO and FCP7 XML timelines read back through OpenTimelineIO,
the cue sheet and the manifest."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from urllib.parse import unquote, urlparse

import opentimelineio as otio
import polars as pl
import pytest

import bgm_batch
from bgm_batch.settings import Settings
from bgm_batch.stages.export import (
    VideoSource,
    build_manifest,
    file_sha256,
    tree_sha256,
    write_cues,
    write_manifest,
    write_timeline,
)

RT = otio.opentime.RationalTime


def _segments(**overrides: list) -> pl.DataFrame:
    rows = {
        "recording": ["run1"] * 4,
        "index": [0, 1, 2, 3],
        "start_s": [0.0, 10.0, 20.0, 30.0],
        "end_s": [10.0, 20.0, 30.0, 40.0],
        "combat": [False, False, True, True],
        "caption": [
            "calm flute at 92 BPM in D minor",
            "calm flute, strings",
            "tense drums at 140 bpm in F# major",
            "tense drums, brass",
        ],
        "narrative": [None, "a quiet meadow", "a dark cave", "deeper in the cave"],
        "scene": [
            "Biome=Plains|Time=day",
            "Biome=Plains|Time=day",
            "Biome=Cave|combat",
            "Biome=Cave|combat",
        ],
        "transition": ["start", "continue", "change", "restart"],
        "audio_offset_s": [0.0, 10.0, 20.0, 30.0],
        "audio_duration_s": [10.0, 10.0, 10.0, 10.0],
    }
    return pl.DataFrame({**rows, **overrides})


def _path(url: str) -> Path:
    """The local file a media reference's file URL names."""
    parsed = urlparse(url)
    assert parsed.scheme == "file"
    return Path(unquote(parsed.path))


def _write_and_read(
    tmp_path: Path, segments: pl.DataFrame, video: VideoSource | None = None
) -> otio.schema.Timeline:
    out = tmp_path / "out"
    out.mkdir()
    (out / "track.flac").write_bytes(b"audio")
    path = out / "timeline.otio"
    write_timeline(
        segments, path, track_path=out / "track.flac", rate=30.0, name="run1", video=video
    )
    # no temp file left; the FCP7 XML for Premiere beside the OTIO file
    assert sorted(p.name for p in out.iterdir()) == ["timeline.otio", "timeline.xml", "track.flac"]
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
        assert _path(clip.media_reference.target_url) == tmp_path / "out" / "track.flac"
        assert clip.metadata["bgm_batch"]["index"] == k
    assert clips[0].metadata["bgm_batch"]["narrative"] is None
    assert clips[2].metadata["bgm_batch"]["transition"] == "change"
    markers = [(m.name, m.color, m.marked_range.start_time) for m in timeline.tracks.markers]
    assert markers == [
        ("Combat: Cave, combat", "RED", RT(600, 30)),
        ("Scene: Cave, combat", "ORANGE", RT(600, 30)),
        ("Restart: Cave, combat", "PURPLE", RT(900, 30)),
    ]
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


def test_timeline_over_the_video_in_otio_and_fcp_xml(tmp_path: Path) -> None:
    video_file = tmp_path / "my video.mp4"  # a space: the file URL must escape it
    video_file.write_bytes(b"video")
    video = VideoSource(video_file, duration_s=36.0, offset_s=-5.0)  # capture began 5 s early
    otio_timeline = _write_and_read(tmp_path, _segments(), video)
    xml_timeline = otio.adapters.read_from_file(str(tmp_path / "out" / "timeline.xml"))
    for timeline in (otio_timeline, xml_timeline):
        picture, music = timeline.tracks
        assert (picture.kind, music.kind) == ("Video", "Audio")
        (clip,) = picture.find_clips()
        assert _path(clip.media_reference.target_url) == video_file
        assert clip.range_in_parent() == otio.opentime.TimeRange(RT(0, 30), RT(36 * 30, 30))
        clips = list(music.find_clips())
        for item in (clip, *clips):
            assert _path(item.media_reference.target_url).exists()
        # music in video time: the first segment loses its first 5 s, the rest move 5 s earlier
        assert [c.range_in_parent().start_time.value for c in clips] == [0, 150, 450, 750]
        assert clips[0].source_range == otio.opentime.TimeRange(RT(150, 30), RT(150, 30))
        assert clips[1].source_range.start_time == RT(300, 30)
        names = [m.name for m in timeline.tracks.markers]
        assert names == ["Combat: Cave, combat", "Scene: Cave, combat", "Restart: Cave, combat"]
        assert timeline.tracks.markers[0].marked_range.start_time == RT(450, 30)


def test_timeline_runs_at_the_video_frame_rate(tmp_path: Path) -> None:
    video_file = tmp_path / "game.mp4"
    video_file.write_bytes(b"video")
    video = VideoSource(video_file, duration_s=40.0, offset_s=0.0, frame_rate=25.0)
    timeline = _write_and_read(tmp_path, _segments(), video)
    clips = list(timeline.audio_tracks()[0].find_clips())
    assert [c.range_in_parent().start_time for c in clips] == [RT(250 * k, 25) for k in range(4)]
    assert timeline.video_tracks()[0].duration() == RT(1000, 25)
    odd = VideoSource(video_file, duration_s=40.0, frame_rate=10.0)  # no timecode rate: 30
    (tmp_path / "out" / "timeline.xml").unlink()
    write_timeline(
        _segments(),
        tmp_path / "out" / "timeline.otio",
        track_path=tmp_path / "out" / "track.flac",
        name="x",
        video=odd,
    )
    xml = otio.adapters.read_from_file(str(tmp_path / "out" / "timeline.xml"))
    assert xml.video_tracks()[0].duration() == RT(1200, 30)


def test_cue_sheet_has_one_row_per_window(tmp_path: Path) -> None:
    path = tmp_path / "cues.csv"
    write_cues(path, _segments(), offset_s=2.0)
    cues = pl.read_csv(path)
    assert cues.columns == [
        "start_s", "end_s", "scene", "caption", "tempo_bpm", "key", "transition"
    ]  # fmt: skip
    assert cues.height == 4
    assert cues["start_s"].to_list() == [2.0, 12.0, 22.0, 32.0]
    assert cues["end_s"].to_list() == [12.0, 22.0, 32.0, 42.0]
    assert cues["tempo_bpm"].to_list() == [92, None, 140, None]
    assert cues["key"].to_list() == ["D minor", None, "F# major", None]
    assert cues["transition"].to_list() == _segments()["transition"].to_list()


def test_timeline_refuses_several_recordings(tmp_path: Path) -> None:
    segments = _segments(recording=["run1", "run1", "run2", "run2"])
    with pytest.raises(ValueError, match="one timeline per recording"):
        write_timeline(segments, tmp_path / "t.otio", track_path=tmp_path / "t.flac", name="x")


def test_file_sha256_matches_hashlib_across_chunks(tmp_path: Path) -> None:
    path = tmp_path / "data.bin"
    data = bytes(range(256)) * 1000
    path.write_bytes(data)
    assert file_sha256(path, chunk_bytes=4096) == hashlib.sha256(data).hexdigest()


def _manifest(tmp_path: Path, models: dict | None = None, **counts: int) -> dict:
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
        command=["bgm-batch", "score", "cap", "--out", "out"],
        models=models or {},
        profile_sha256="ab12",
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


def test_manifest_records_command_commit_profile_and_models(tmp_path: Path) -> None:
    model = tmp_path / "tiny-model"
    (model / "sub").mkdir(parents=True)
    (model / "config.json").write_text("{}")
    (model / "sub" / "weights.bin").write_bytes(b"\x00\x01")
    models = {"text.model": str(model), "audio.model": "nobody/not-in-the-cache", "x": None}
    manifest = _manifest(tmp_path, models)
    assert manifest["command"] == ["bgm-batch", "score", "cap", "--out", "out"]
    assert re.fullmatch(r"[0-9a-f]{40}", manifest["git_commit"])  # the tests run in a checkout
    assert manifest["profile_sha256"] == "ab12"
    assert manifest["models"] == {
        "text.model": {"path": str(model.resolve()), "sha256": tree_sha256(model)},
        "audio.model": {"hub_id": "nobody/not-in-the-cache", "revision": None},
    }
    before = tree_sha256(model)
    (model / "sub" / "weights.bin").write_bytes(b"\x00\x02")  # same size, other weights
    assert tree_sha256(model) != before
