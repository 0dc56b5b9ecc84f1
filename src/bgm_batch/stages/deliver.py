"""Turn the stage outputs of a scoring run into the deliverables an editor takes away.

The stages each produce one piece (a frame of captions, rendered segment files, a stitched
track); this module joins them into ``segments.parquet``, gathers every rejected row into
``quarantine.parquet`` (rows in = rendered + quarantined), stitches one track per recording
and writes the timeline and manifest. Everything is written atomically.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from bgm_batch.data.contract import polars_schema, write_parquet
from bgm_batch.data.ingest import IngestResult, regular_capture_files
from bgm_batch.data.names import inside
from bgm_batch.errors import BgmError
from bgm_batch.settings import AudioSettings
from bgm_batch.stages import export, stitch
from bgm_batch.stages.render import RenderResult


@dataclass
class Tracks:
    """One stitched track per recording, and where each segment sits in it."""

    track_paths: dict[str, Path]
    offsets: pl.DataFrame  # recording, index, audio_offset_s, audio_duration_s
    reports: dict[str, dict[str, Any]] = field(default_factory=dict)


def select_recording(result: IngestResult, recording: str | None) -> IngestResult:
    """Keep one recording of a multi-recording input (all of them when ``recording`` is None)."""
    if recording is None:
        return result
    if recording not in result.recordings():
        known = ", ".join(result.recordings()) or "none"
        raise ValueError(f"recording {recording!r} is not in the input (found: {known})")
    mine = pl.col("recording") == recording
    quarantine = result.quarantine.filter(mine | pl.col("recording").is_null())
    return IngestResult(result.frame.filter(mine), quarantine, result.warnings)


def require_one_recording(result: IngestResult, video: Path | None) -> None:
    """A video goes under one recording: with several, make the user choose (--recording)."""
    found = result.recordings()
    if video is not None and len(found) > 1:
        shown = ", ".join(found[:5]) + (", ..." if len(found) > 5 else "")
        raise BgmError(
            f"the input holds {len(found)} recordings ({shown}) and one --video; "
            "choose the one under the video with --recording"
        )


def track_path(out_dir: Path, recording: str, recordings: list[str]) -> Path:
    """``track.flac`` for a single recording, ``track-<recording>.flac`` for several."""
    name = "track.flac" if len(recordings) == 1 else f"track-{recording}.flac"
    return inside(out_dir, out_dir / name)


def stems_dir(out_dir: Path, recording: str, recordings: list[str]) -> Path:
    """``stems/`` for a single recording, ``stems-<recording>/`` for several."""
    name = "stems" if len(recordings) == 1 else f"stems-{recording}"
    return inside(out_dir, out_dir / name)


def stitch_recordings(
    frame: pl.DataFrame,
    rendered: RenderResult,
    settings: AudioSettings,
    out_dir: Path,
    *,
    progress: bool = False,
) -> Tracks:
    """Stitch each recording's rendered segments into its track file (and its stems with
    ``settings.stems``), showing the progress of each if asked."""
    joined = frame.join(rendered.segments, on=["recording", "index"], how="inner").sort(
        "recording", "index"
    )
    recordings = joined["recording"].unique(maintain_order=True).to_list()
    paths, offsets, reports = {}, [], {}
    for recording in recordings:
        part = joined.filter(pl.col("recording") == recording)
        paths[recording] = track_path(out_dir, recording, recordings)
        stems = stems_dir(out_dir, recording, recordings) if settings.stems else None
        if stems is not None:
            stems.mkdir(exist_ok=True)
        inputs = stitch.stitch_inputs(part, stems=settings.stems)
        result = stitch.stitch_track(inputs, settings, paths[recording], stems, progress=progress)
        offsets.append(
            part.select("recording", "index", "duration_s").with_columns(
                pl.Series("audio_offset_s", result.offsets_s, dtype=pl.Float64)
            )
        )
        reports[recording] = {
            "loudness_lufs": result.loudness_lufs,
            "true_peak_dbtp": result.true_peak_dbtp,
            "gain_db": result.gain_db,
            "stems": {role: p.name for role, p in result.stems.items()},
            "seams": result.seams.to_dicts(),
        }
    table = (
        pl.concat(offsets)
        if offsets
        else pl.DataFrame(schema={"recording": pl.String, "index": pl.Int64})
    )
    return Tracks(paths, table.rename({"duration_s": "audio_duration_s"}), reports)


def _backend_id(identity: dict[str, str]) -> str:
    name = identity.get("backend", "?")
    model = identity.get("model")
    return f"{name}:{model}" if model else name


def segments_table(
    frame: pl.DataFrame, tracks: Tracks, text_id: dict[str, str], audio_id: dict[str, str]
) -> pl.DataFrame:
    """One row per rendered window, exactly the segments schema (nothing nondeterministic).
    Columns the frame lacks (``source_track``, ``reason``: library mode only) come out null."""
    table = frame.join(tracks.offsets, on=["recording", "index"], how="inner").with_columns(
        pl.lit(_backend_id(text_id)).alias("text_backend"),
        pl.lit(_backend_id(audio_id)).alias("audio_backend"),
    )
    schema = polars_schema("segments")
    table = table.with_columns(
        pl.lit(None, dtype=dtype).alias(name)
        for name, dtype in schema.items()
        if name not in table.columns
    )
    return table.select(schema.names()).sort("recording", "index")


def all_quarantined(
    loaded: IngestResult, rendered: RenderResult, frame: pl.DataFrame
) -> pl.DataFrame:
    """Ingest rejections plus the windows whose audio failed to render."""
    failures = rendered.failures.join(
        frame.select("recording", "index", "source"), on=["recording", "index"], how="left"
    ).select(
        pl.lit("render").alias("stage"),
        pl.col("source").fill_null(""),
        "recording",
        "index",
        pl.lit("caption").alias("field"),
        "reason",
        pl.lit(None, dtype=pl.String).alias("raw"),
    )
    return pl.concat([loaded.quarantine, failures.cast(polars_schema("quarantine"))])


def counts(
    loaded: IngestResult, segments: pl.DataFrame, quarantine: pl.DataFrame, rendered: RenderResult
) -> dict[str, int]:
    """Rows in = accepted (rendered) + quarantined, for the manifest and the CLI."""
    return {
        "rows_in": loaded.rows_in,
        "accepted": segments.height,
        "quarantined": quarantine.height,
        "rendered": segments.height,
        "rendered_now": rendered.rendered,
        "reused": rendered.reused,
    }


def input_files(input_path: Path, video: Path | None) -> list[Path]:
    """The files whose hashes go into the manifest."""
    files = regular_capture_files(input_path) if input_path.is_dir() else [input_path]
    return files + ([video] if video else [])


def write_deliverables(
    out_dir: Path,
    segments: pl.DataFrame,
    quarantine: pl.DataFrame,
    tracks: Tracks,
    manifest: dict[str, Any],
    *,
    published_dir: Path | None = None,
    video: export.VideoSource | None = None,
) -> None:
    """segments.parquet, quarantine.parquet, manifest.json and per recording the timelines
    (OTIO and FCP7 XML, over ``video`` for a single recording) and the cue sheet. Timelines
    reference the track where it will be published (``published_dir``, default ``out_dir``)."""
    write_parquet(segments, out_dir / "segments.parquet", "segments")
    write_parquet(quarantine, out_dir / "quarantine.parquet", "quarantine")
    final = Path(published_dir or out_dir).resolve()
    for recording, path in tracks.track_paths.items():
        single = path.name == "track.flac"
        suffix = "" if single else f"-{recording}"
        part = segments.filter(pl.col("recording") == recording)
        export.write_timeline(
            part,
            inside(out_dir, out_dir / f"timeline{suffix}.otio"),
            track_path=final / path.name,
            name=f"bgm-batch {recording}",
            video=video if single else None,
        )
        offset = video.offset_s if video and single else 0.0
        export.write_cues(inside(out_dir, out_dir / f"cues{suffix}.csv"), part, offset)
    export.write_manifest(out_dir / "manifest.json", {**manifest, "stitch": tracks.reports})
