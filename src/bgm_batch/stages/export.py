"""Editor deliverables: the OpenTimelineIO timeline and the run manifest.

``timeline.otio`` lets an editor take the generated score into their NLE as cuttable clips
(one per segment, named by its music description) instead of one opaque file.
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
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import opentimelineio as otio
import polars as pl
from pydantic import BaseModel

import bgm_batch
from bgm_batch.atomic import write_text

SCENE_MARKER_COLOR = otio.schema.MarkerColor.ORANGE
_LIBRARIES = ("numpy", "polars", "torch", "transformers", "peft", "opentimelineio", "ffmpeg-python")


def _frames(seconds: float, rate: float) -> otio.opentime.RationalTime:
    """``seconds`` snapped to the nearest whole frame: NLEs cut on frames."""
    return otio.opentime.RationalTime(round(seconds * rate), rate)


def _clip(row: dict[str, Any], end_s: float, rate: float, media: Any) -> otio.schema.Clip:
    """One segment as a clip of track.flac, from its offset up to ``end_s`` (frames)."""
    start = _frames(row["audio_offset_s"], rate)
    duration = _frames(end_s, rate) - start
    return otio.schema.Clip(
        name=row["caption"],
        media_reference=media,
        source_range=otio.opentime.TimeRange(start, duration),
        metadata={
            "bgm_batch": {
                key: row[key]
                for key in ("recording", "index", "transition", "narrative", "scene", "start_s")
            }
        },
    )


def _scene_marker(row: dict[str, Any], rate: float) -> otio.schema.Marker:
    return otio.schema.Marker(
        name=row["scene"],
        marked_range=otio.opentime.TimeRange(_frames(row["audio_offset_s"], rate)),
        color=SCENE_MARKER_COLOR,
        metadata={"bgm_batch": {"recording": row["recording"], "index": row["index"]}},
    )


def build_timeline(
    segments: pl.DataFrame, *, track_path: str, rate: float = 30.0, name: str
) -> otio.schema.Timeline:
    """The timeline for one recording's segments.

    Timeline time equals track.flac time: each clip sits at its ``audio_offset_s`` (gaps fill
    holes) and ends where the next begins, so the clips butt against each other and the
    timeline lines up with scored.mp4. Scene changes (``transition`` change or restart) become
    timeline markers named by the scene.
    """
    recordings = segments["recording"].unique().to_list()
    if len(recordings) > 1:
        raise ValueError(f"one timeline per recording; got {len(recordings)}: {recordings}")
    rows = segments.sort("audio_offset_s").to_dicts()
    ends = [r["audio_offset_s"] + r["audio_duration_s"] for r in rows]
    next_starts = [r["audio_offset_s"] for r in rows[1:]] + [math.inf]
    clip_ends = [min(end, nxt) for end, nxt in zip(ends, next_starts, strict=True)]
    media = otio.schema.ExternalReference(
        target_url=track_path,
        available_range=otio.opentime.TimeRange(duration=_frames(max(ends, default=0.0), rate)),
    )
    track = otio.schema.Track(name="Music", kind=otio.schema.TrackKind.Audio)
    cursor = otio.opentime.RationalTime(0, rate)
    for row, end_s in zip(rows, clip_ends, strict=True):
        clip = _clip(row, end_s, rate, media)
        hole = clip.source_range.start_time - cursor
        if hole.value > 0:
            track.append(otio.schema.Gap(duration=hole))
        track.append(clip)
        cursor = clip.source_range.end_time_exclusive()
    timeline = otio.schema.Timeline(name=name, tracks=[track])
    timeline.tracks.markers.extend(
        _scene_marker(row, rate) for row in rows if row["transition"] in ("change", "restart")
    )
    return timeline


def write_timeline(
    segments: pl.DataFrame, path: Path, *, track_path: str, rate: float = 30.0, name: str
) -> None:
    """Write ``build_timeline(...)`` to ``path`` as OTIO JSON, atomically."""
    timeline = build_timeline(segments, track_path=track_path, rate=rate, name=name)
    write_text(Path(path), otio.adapters.write_to_string(timeline, "otio_json"))


def file_sha256(path: Path, chunk_bytes: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks (recordings and videos can be large)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


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
) -> dict[str, Any]:
    """The provenance record of a run.

    ``text_backend``/``audio_backend`` are the backends' ``identity()`` (model ids, revisions,
    adapter hash); ``prompt_templates`` maps template names to their hashes; ``inputs`` are
    hashed here; ``timings`` are seconds per stage; ``counts`` holds rows_in / accepted /
    quarantined / rendered and must add up; ``reports`` holds JSON-able stage reports (e.g.
    ``{"mux": MuxReport.to_json()}``).
    """
    _check_counts(counts)
    dumped = settings.model_dump(mode="json")
    return {
        "bgm_batch_version": version,
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


def write_manifest(path: Path, manifest: Mapping[str, Any]) -> None:
    """Write the manifest as indented JSON with sorted keys, atomically."""
    write_text(Path(path), json.dumps(manifest, indent=2, sort_keys=True) + "\n")
