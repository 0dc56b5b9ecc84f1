"""The scored-video flow: import -> characterize -> narrate -> plan -> render -> stitch -> mux
-> export. Each task is one call into one ``bgm_batch`` module; nothing else happens here.

Resuming: the expensive stages keep their own checkpoints, so a killed run started again
redoes only what was unfinished: generated texts live in the persistent text cache
(``settings.text.cache_dir``), rendered segments in ``DIR/segments`` (also the stems).
The cheap stages (import, characterization, stitching) simply run again. Prefect's result
cache is not used: its inputs would be whole frames and audio, costly to hash and store.
Once the deliverables are published the segments' audio is deleted (``--keep-work`` keeps it).

Orchestration: with a Prefect server or Prefect Cloud configured (``PREFECT_API_URL``) the
flow reports there; otherwise ``prefect_env.run_flow`` calls it as a plain function and its
tasks run as plain calls (``flows.local``), so a local run never starts a temporary server.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
from bgm_batch.flows.local import flow, task

from bgm_batch.data import ingest
from bgm_batch.errors import BgmError
from bgm_batch.library import score as library
from bgm_batch.preflight import models_in_use
from bgm_batch.settings import Settings
from bgm_batch.stages import (
    characterize,
    deliver,
    export,
    media_check,
    mux,
    narrate,
    publish,
    render,
    score_midi,
)
from bgm_batch.stages.transitions import plan_transitions
from bgm_batch.text.prompts import prompt_template_hashes
from bgm_batch.text.protocol import TEXT_BACKENDS


@dataclass
class ScoreReport:
    """Where the deliverables are and what the run did."""

    out_dir: Path
    counts: dict[str, int]
    timings: dict[str, float] = field(default_factory=dict)
    scored_video: Path | None = None
    text_stats: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # gaps and other input notes
    quarantine: pl.DataFrame = field(default_factory=pl.DataFrame)  # every rejected window


@task()
def load_windows(path: Path, settings: Settings, recording: str | None) -> ingest.IngestResult:
    loaded = ingest.read_recording(path, settings.profile_model, settings.ingest)
    return deliver.select_recording(loaded, recording)


@task()
def characterize_windows(frame: pl.DataFrame, settings: Settings) -> pl.DataFrame:
    return characterize.characterize(frame, settings.profile_model)


@task(retries=2, retry_delay_seconds=5)
def describe_music(frame: pl.DataFrame, settings: Settings) -> tuple[pl.DataFrame, dict, dict]:
    backend = TEXT_BACKENDS.create(settings.text.backend, settings.text)
    described, stats = narrate.narrate(
        frame, backend, settings.text, seed=settings.seed, progress=settings.progress
    )
    return described, stats.as_dict(), backend.identity()


@task(retries=2, retry_delay_seconds=5)
def render_music(
    frame: pl.DataFrame, settings: Settings, work_dir: Path
) -> tuple[render.RenderResult, dict[str, str]]:
    backend = library.audio_backend(frame, settings)
    result = render.render_segments(
        frame,
        backend,
        settings.audio,
        seed=settings.seed,
        work_dir=work_dir,
        progress=settings.progress,
    )
    return result, backend.identity()


@task()
def pick_music(frame: pl.DataFrame, settings: Settings, out_dir: Path) -> pl.DataFrame:
    return library.pick_tracks(frame, settings, out_dir)


@task()
def stitch_tracks(
    frame: pl.DataFrame, rendered: render.RenderResult, settings: Settings, out_dir: Path
) -> deliver.Tracks:
    return deliver.stitch_recordings(
        frame, rendered, settings.audio, out_dir, progress=settings.progress
    )


@task()
def mux_video(
    video: Path, track: Path, out: Path, settings: Settings, recording_s: float
) -> mux.MuxReport:
    return mux.mux_video(
        video, track, out, settings.mux, recording_s=recording_s, progress=settings.progress
    )


@task()
def check_media(scored: Path, video: Path, settings: Settings) -> dict:
    return media_check.check_scored_video(scored, video, settings.mux.max_stream_mismatch_seconds)


@contextmanager
def _timed(timings: dict[str, float], stage: str) -> Iterator[None]:
    """Time a stage; an error the user can fix inside it says which stage (one line)."""
    started = time.perf_counter()
    try:
        yield
    except BgmError as exc:  # same type (callers may catch e.g. ValueError), stage named
        exc.args = (f"stage {stage}: {exc}", *exc.args[1:])
        raise
    timings[stage] = time.perf_counter() - started


@flow(name="score-session", log_prints=False)
def score_session(
    input_path: Path,
    out_dir: Path,
    settings: Settings,
    video: Path | None = None,
    recording: str | None = None,
    command: list[str] | None = None,
) -> ScoreReport:
    """Score one recording (or several, without a video) into ``out_dir``; ``command`` is the
    command line for the manifest (default: this process's)."""
    out_dir = Path(out_dir)
    timings: dict[str, float] = {}
    with _timed(timings, "ingest"):
        loaded = load_windows(Path(input_path), settings, recording)
        deliver.require_one_recording(loaded, video)
    with _timed(timings, "characterize"):
        frame = characterize_windows(loaded.frame, settings)
    with _timed(timings, "narrate"):
        frame, text_stats, text_id = describe_music(frame, settings)
    with _timed(timings, "plan"):
        frame = plan_transitions(frame, settings.profile_model)
        frame = pick_music(frame, settings, out_dir)
    with _timed(timings, "render"):
        rendered, audio_id = render_music(frame, settings, out_dir / render.WORK_DIR)
    generated = Generated(loaded, frame, rendered, text_id, audio_id, text_stats)
    return deliver_outputs(
        generated, Path(input_path), out_dir, settings, video, timings, command=command
    )


@dataclass
class Generated:
    """What the stages up to rendering made of one input, ready to be delivered."""

    loaded: ingest.IngestResult
    frame: pl.DataFrame  # planned windows
    rendered: render.RenderResult
    text_id: dict
    audio_id: dict
    text_stats: dict


def deliver_outputs(
    generated: Generated,
    input_path: Path,
    out_dir: Path,
    settings: Settings,
    video: Path | None,
    timings: dict[str, float],
    *,
    command: list[str] | None = None,
) -> ScoreReport:
    """Stitch, mux and write every deliverable; shared with the archive flow, which renders
    many recordings in one pool and then delivers each one with this."""
    loaded, frame, rendered = generated.loaded, generated.frame, generated.rendered
    text_id, audio_id, text_stats = generated.text_id, generated.audio_id, generated.text_stats
    staging = publish.fresh_staging(out_dir)
    with _timed(timings, "stitch"):
        tracks = stitch_tracks(frame, rendered, settings, staging)
        score_midi.write_score_midis(
            frame, rendered.segments, tracks.track_paths, settings.audio.segment_seconds
        )
    segments = deliver.segments_table(frame, tracks, text_id, audio_id)
    quarantine = deliver.all_quarantined(loaded, rendered, frame)
    scored, reports, source = None, {}, None
    if video is not None:
        with _timed(timings, "mux"):
            track = tracks.track_paths[segments["recording"][0]]
            report = mux_video(
                Path(video), track, staging / "scored.mp4", settings, float(segments["end_s"].max())
            )
            whole = check_media(report.out, Path(video), settings)
        scored = out_dir / report.out.name
        reports = {"mux": {**report.to_json(), "out": str(scored)}, "media": whole}
        source = export.VideoSource(
            Path(video), report.video_duration_s, report.video_offset_s, report.frame_rate
        )
    counts = deliver.counts(loaded, segments, quarantine, rendered)
    with _timed(timings, "export"):
        deliver.write_deliverables(
            staging,
            segments,
            quarantine,
            tracks,
            manifest=export.build_manifest(
                settings=settings,
                text_backend=text_id,
                audio_backend=audio_id,
                prompt_templates=prompt_template_hashes(settings.text.prompt_set),
                inputs=deliver.input_files(Path(input_path), video),
                timings=timings,
                counts=counts,
                reports={"narrate": text_stats, "ingest": {"warnings": loaded.warnings}, **reports},
                command=command or sys.argv,
                models=models_in_use(settings),
                profile_sha256=export.model_sha256(settings.profile_model),
            ),
            published_dir=out_dir,
            video=source,
        )
    publish.publish(staging, out_dir)
    if not settings.keep_work:  # the per-window audio was a work file: the track is out
        render.remove_work_files(rendered)
    notes = {"warnings": loaded.warnings, "quarantine": quarantine}
    return ScoreReport(out_dir, counts, timings, scored, text_stats, **notes)
