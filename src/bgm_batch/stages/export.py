"""Editor deliverables: the timelines, the cue sheet and the run manifest.

``timeline.otio`` (OpenTimelineIO, for Resolve and others) and ``timeline.xml`` (FCP7 XML,
for Premiere) let an editor take the generated score into their NLE as cuttable clips (one
per segment, named by its music description) over the gameplay video, with coloured markers
at combat onsets, scene changes and restarts; media are referenced by absolute file URLs.
``cues.csv`` is the cue sheet: one row per window with its scene, caption, tempo and key.
``manifest.json`` records everything needed to reproduce or audit a run: versions, model
identities, prompt hashes, seeds, settings, input hashes, counts and timings. Timings and
other nondeterministic values live only here, never in segments.parquet, so the Parquet
output of two identical runs is identical.
"""

from __future__ import annotations

import hashlib
import json
import math
import platform
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import opentimelineio as otio
import polars as pl
from pydantic import BaseModel

import bgm_batch
from bgm_batch.atomic import write_text

_LIBRARIES = ("numpy", "polars", "torch", "transformers", "peft", "opentimelineio", "ffmpeg-python")


def _frames(seconds: float, rate: float) -> otio.opentime.RationalTime:
    """``seconds`` snapped to the nearest whole frame: NLEs cut on frames."""
    return otio.opentime.RationalTime(round(seconds * rate), rate)


def _clip(row: dict[str, Any], at: _Placement, rate: float, media: Any) -> otio.schema.Clip:
    """One segment as a clip of track.flac, cut to its placement (whole frames)."""
    start = _frames(at.source_s, rate)
    duration = _frames(at.end_s, rate) - _frames(at.start_s, rate)
    return otio.schema.Clip(
        name=row["caption"],
        media_reference=media,
        source_range=otio.opentime.TimeRange(start, duration),
        metadata={
            "bgm_batch": {
                key: row[key]
                for key in ("recording", "index", "transition", "narrative", "scene", "start_s")
            }
            | _library_source(row)
        },
    )


def _library_source(row: dict[str, Any]) -> dict[str, Any]:
    """Library mode: the master file the clip plays, where in it, and why it was picked, so
    the editor can relink the clip to the licensed original."""
    if row.get("source_track") is None:
        return {}
    return {key: row[key] for key in ("source_track", "source_offset_s", "reason")}


@dataclass(frozen=True)
class VideoSource:
    """The gameplay video a timeline is cut against; timeline time is then video time."""

    path: Path
    duration_s: float
    offset_s: float = 0.0  # where capture time 0 (track.flac time 0) falls in the video
    frame_rate: float | None = None  # the timeline's rate when known (editors cut on frames)


@dataclass(frozen=True)
class _Placement:
    """Where a segment's clip sits on the timeline and where in track.flac it starts."""

    start_s: float
    end_s: float
    source_s: float


def _placements(rows: list[dict[str, Any]], offset_s: float) -> list[_Placement | None]:
    """Each segment from its ``audio_offset_s`` up to where the next begins, shifted by the
    video offset; a clip before the video's start is cut at 0 (None when nothing is left)."""
    ends = [r["audio_offset_s"] + r["audio_duration_s"] for r in rows]
    next_starts = [r["audio_offset_s"] for r in rows[1:]] + [math.inf]
    placed: list[_Placement | None] = []
    for row, end, nxt in zip(rows, ends, next_starts, strict=True):
        start, stop = row["audio_offset_s"] + offset_s, min(end, nxt) + offset_s
        cut = max(0.0, -start)
        fits = stop > start + cut
        placed.append(_Placement(start + cut, stop, row["audio_offset_s"] + cut) if fits else None)
    return placed


def _media(path: Path, duration_s: float, rate: float) -> otio.schema.ExternalReference:
    """A reference by absolute file URL, so the timeline opens from any folder."""
    return otio.schema.ExternalReference(
        target_url=Path(path).resolve().as_uri(),
        available_range=otio.opentime.TimeRange(duration=_frames(duration_s, rate)),
    )


def _video_track(video: VideoSource, rate: float) -> otio.schema.Track:
    track = otio.schema.Track(name="Gameplay", kind=otio.schema.TrackKind.Video)
    media = _media(video.path, video.duration_s, rate)
    track.append(
        otio.schema.Clip(
            name=video.path.name, media_reference=media, source_range=media.available_range
        )
    )
    return track


def _music_track(rows: list[dict[str, Any]], offset_s: float, rate: float, media: Any):
    track = otio.schema.Track(name="Music", kind=otio.schema.TrackKind.Audio)
    cursor = otio.opentime.RationalTime(0, rate)
    for row, at in zip(rows, _placements(rows, offset_s), strict=True):
        if at is None:
            continue
        hole = _frames(at.start_s, rate) - cursor
        if hole.value > 0:
            track.append(otio.schema.Gap(duration=hole))
        track.append(_clip(row, at, rate, media))
        cursor = _frames(at.end_s, rate)
    return track


# Marker kinds, their colour (as NLEs show them) and the name prefix an editor reads.
MARKER_KINDS = {
    "scene": (otio.schema.MarkerColor.ORANGE, "Scene"),
    "combat": (otio.schema.MarkerColor.RED, "Combat"),
    "restart": (otio.schema.MarkerColor.PURPLE, "Restart"),
}


def _marker_kinds(row: dict[str, Any], previous: dict[str, Any] | None) -> list[str]:
    """Combat onsets, scene changes and restarts (a new start after a gap in the capture)."""
    kinds = ["combat"] if row.get("combat") and previous and not previous.get("combat") else []
    return kinds + [
        k for t, k in (("change", "scene"), ("restart", "restart")) if row["transition"] == t
    ]


def _readable(scene: str) -> str:
    """A scene key as an editor reads it: "Biome=Lush Caves|Time=day|combat" -> "Lush Caves,
    day, combat"."""
    return ", ".join(part.partition("=")[2] or part for part in scene.split("|"))


def _markers(rows: list[dict[str, Any]], offset_s: float, rate: float):
    """The timeline's markers, at the start of the segment they mark (dropped before 0)."""
    for previous, row in zip([None, *rows], rows, strict=False):
        at = row["audio_offset_s"] + offset_s
        for kind in _marker_kinds(row, previous) if at >= 0 else []:
            color, label = MARKER_KINDS[kind]
            yield otio.schema.Marker(
                name=f"{label}: {_readable(row['scene'])}",
                marked_range=otio.opentime.TimeRange(_frames(at, rate)),
                color=color,
                metadata={
                    "bgm_batch": {
                        "kind": kind,
                        "recording": row["recording"],
                        "index": row["index"],
                    }
                },
            )


def _timeline_rate(video: VideoSource | None, default: float) -> float:
    """The video's frame rate when it is a timecode rate (FCP7 XML knows no other: a 10 fps
    capture gets ``default``), else ``default``."""
    if video is None or not video.frame_rate:
        return default
    valid = otio.opentime.RationalTime.is_valid_timecode_rate(video.frame_rate)
    return video.frame_rate if valid else default


def build_timeline(
    segments: pl.DataFrame,
    *,
    track_path: Path,
    name: str,
    rate: float = 30.0,
    video: VideoSource | None = None,
) -> otio.schema.Timeline:
    """The timeline for one recording's segments.

    Without a video, timeline time equals track.flac time; with one, it is video time at the
    video's frame rate (the video track holds the whole video, the music sits at
    ``offset_s``), so the timeline lines up with scored.mp4. Each clip ends where the next
    begins (gaps fill holes). Markers name and colour combat onsets, scene changes and
    restarts.
    """
    recordings = segments["recording"].unique().to_list()
    if len(recordings) > 1:
        raise ValueError(f"one timeline per recording; got {len(recordings)}: {recordings}")
    rows = segments.sort("audio_offset_s").to_dicts()
    offset = video.offset_s if video else 0.0
    rate = _timeline_rate(video, rate)
    track_s = max((r["audio_offset_s"] + r["audio_duration_s"] for r in rows), default=0.0)
    music = _music_track(rows, offset, rate, _media(track_path, track_s, rate))
    tracks = [_video_track(video, rate), music] if video else [music]
    timeline = otio.schema.Timeline(name=name, tracks=tracks)
    timeline.tracks.markers.extend(_markers(rows, offset, rate))
    return timeline


def write_timeline(
    segments: pl.DataFrame,
    path: Path,
    *,
    track_path: Path,
    name: str,
    rate: float = 30.0,
    video: VideoSource | None = None,
) -> None:
    """Write ``build_timeline(...)`` to ``path`` as OTIO JSON and, beside it with the suffix
    ``.xml``, as FCP7 XML (Premiere reads that, not OTIO), each atomically."""
    timeline = build_timeline(segments, track_path=track_path, rate=rate, name=name, video=video)
    write_text(Path(path), otio.adapters.write_to_string(timeline, "otio_json"))
    write_text(Path(path).with_suffix(".xml"), otio.adapters.write_to_string(timeline, "fcp_xml"))


_BPM = r"(?i)(\d{2,3})\s*bpm"  # "at 92 BPM"
_KEY = r"\b([A-G](?:#|b)?\s+(?:major|minor))\b"  # "in D minor"
CUES_SCHEMA = {
    "start_s": pl.Float64,
    "end_s": pl.Float64,
    "scene": pl.String,
    "caption": pl.String,
    "tempo_bpm": pl.Int64,
    "key": pl.String,
    "transition": pl.String,
}


def cue_sheet(segments: pl.DataFrame, offset_s: float = 0.0) -> pl.DataFrame:
    """One cue per window in timeline time: where it plays, its scene, the caption and the
    tempo and key the caption asked for (null when it names none)."""
    captions = segments.sort("recording", "audio_offset_s")
    return captions.select(
        (pl.col("audio_offset_s") + offset_s).alias("start_s"),
        (pl.col("audio_offset_s") + pl.col("audio_duration_s") + offset_s).alias("end_s"),
        "scene",
        "caption",
        pl.col("caption").str.extract(_BPM, 1).cast(pl.Int64).alias("tempo_bpm"),
        pl.col("caption").str.extract(_KEY, 1).alias("key"),
        "transition",
    ).cast(CUES_SCHEMA)


def file_sha256(path: Path, chunk_bytes: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks (recordings and videos can be large)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def tree_sha256(path: Path) -> str:
    """Content hash of a file or a folder (relative names and bytes of every file, in name
    order): the identity of local model weights, whatever their modification times."""
    path = Path(path)
    if path.is_file():
        return file_sha256(path)
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(file.relative_to(path).as_posix().encode() + b"\0")
        digest.update(file_sha256(file).encode())
    return digest.hexdigest()


def model_sha256(model: BaseModel) -> str:
    """Hash of a pydantic model's JSON form: the game profile's identity, however it was
    spelled (bundled name or path), so a changed rule shows in the manifest."""
    return hashlib.sha256(model.model_dump_json().encode()).hexdigest()


def _hub_revision(repo_id: str) -> str | None:
    """The commit of ``repo_id`` in the local hub cache (what a run would load), if cached."""
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(repo_id, "config.json")
    return Path(cached).parent.name if isinstance(cached, str) else None


def model_provenance(models: Mapping[str, str | Path | None]) -> dict[str, dict[str, Any]]:
    """For each model a run uses (``{"text.model": "org/name" or a folder, ...}``): a local
    folder or file with its content hash, or a hub id with its cached revision."""
    found: dict[str, dict[str, Any]] = {}
    for role, ref in models.items():
        if ref is None:
            continue
        if Path(ref).exists():
            found[role] = {"path": str(Path(ref).resolve()), "sha256": tree_sha256(Path(ref))}
        else:
            found[role] = {"hub_id": str(ref), "revision": _hub_revision(str(ref))}
    return found


def _git_commit() -> str | None:
    """The commit of the checkout the package runs from (an editable install), else None."""
    package = Path(bgm_batch.__file__).resolve().parent
    try:
        done = subprocess.run(
            ["git", "-C", str(package), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None


def _library_versions() -> dict[str, str]:
    versions = {}
    for name in _LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def _check_counts(counts: Mapping[str, int]) -> None:
    """Every input row is accounted for: accepted or quarantined, never silently dropped."""
    keys = {"rows_in", "accepted", "quarantined"}
    if keys <= counts.keys() and counts["rows_in"] != counts["accepted"] + counts["quarantined"]:
        raise ValueError(
            f"counts do not add up: rows_in={counts['rows_in']} but accepted="
            f"{counts['accepted']} + quarantined={counts['quarantined']}"
        )


def build_manifest(
    *,
    settings: BaseModel,
    text_backend: Mapping[str, str],
    audio_backend: Mapping[str, str],
    prompt_templates: Mapping[str, str],
    inputs: Iterable[Path],
    timings: Mapping[str, float],
    counts: Mapping[str, int],
    version: str = bgm_batch.__version__,
    reports: Mapping[str, Any] | None = None,
    command: Sequence[str] | None = None,
    models: Mapping[str, str | Path | None] | None = None,
    profile_sha256: str | None = None,
) -> dict[str, Any]:
    """The provenance record of a run.

    ``text_backend``/``audio_backend`` are the backends' ``identity()`` (model ids, revisions,
    adapter hash); ``prompt_templates`` maps template names to their hashes; ``inputs`` are
    hashed here; ``timings`` are seconds per stage; ``counts`` holds rows_in / accepted /
    quarantined / rendered and must add up; ``reports`` holds JSON-able stage reports (e.g.
    ``{"mux": MuxReport.to_json()}``); ``command`` is the command line; ``models`` the
    models in use (see ``model_provenance``); ``profile_sha256`` the game profile's hash.
    """
    _check_counts(counts)
    dumped = settings.model_dump(mode="json")
    return {
        "bgm_batch_version": version,
        "git_commit": _git_commit(),
        "command": list(command) if command is not None else None,
        "profile_sha256": profile_sha256,
        "models": model_provenance(models or {}),
        "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "environment": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "libraries": _library_versions(),
        },
        "seed": dumped.get("seed"),
        "settings": dumped,
        "text_backend": dict(text_backend),
        "audio_backend": dict(audio_backend),
        "prompt_templates": dict(prompt_templates),
        "inputs": {
            str(p): {"sha256": file_sha256(p), "bytes": Path(p).stat().st_size} for p in inputs
        },
        "timings_s": {stage: round(float(s), 3) for stage, s in timings.items()},
        "counts": dict(counts),
        "reports": dict(reports or {}),
    }


def write_cues(path: Path, segments: pl.DataFrame, offset_s: float = 0.0) -> None:
    """Write ``cue_sheet(...)`` as CSV, atomically."""
    write_text(Path(path), cue_sheet(segments, offset_s).write_csv())


def write_manifest(path: Path, manifest: Mapping[str, Any]) -> None:
    """Write the manifest as indented JSON with sorted keys, atomically."""
    write_text(Path(path), json.dumps(manifest, indent=2, sort_keys=True) + "\n")
