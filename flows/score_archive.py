"""The archive flow: every recording under ROOT scored into ``DIR/<recording>/``.

Per recording, as ``score`` does: ingest and characterize (one task each, in parallel on the
engine's workers), then deliver (stitch, mux, deliverables; ``score_session.deliver_outputs``).
Pooled across recordings, for the models: text generation runs once over the archive's frame
(one deduplicated prompt pool, one cache), and rendering runs over shards of recordings, one
shard per worker (one shard on the local engine), each batching step k of all its recordings
(``stages.render``), so continuation stays per recording while a GPU sees wide batches.
Segments are rendered into ``DIR/.work/<recording>/`` (the resume checkpoint); a recording's
work files are removed once its state file is written (kept with ``keep_work``, and kept for
a failed recording, so its retry renders nothing again).

Incremental: a recording whose fingerprint (``stages.archive_state``) matches its state file
is skipped without rendering; ``force`` redoes all. Failures are isolated: a recording that
cannot be read, has no usable window, fails a task or has a bad video is reported as failed
(a bad video still gets the track and the rest) and the archive goes on. The run always ends
with ``DIR/archive_report.parquet`` and ``.md``. Killed runs resume: state files are written
last, finished segments come back from ``DIR/.work``, every file is written atomically.

Engines (``settings.archive``): ``local`` (threads, no cluster), ``dask`` (prefect-dask: a
``LocalCluster`` of ``workers`` processes, or the scheduler at ``address``) and ``ray``
(prefect-ray: local, or a ``ray://`` address). ``model_gpus`` > 0 makes the text and render
tasks request that many GPUs (Dask resource ``GPU``, Ray ``num_gpus``).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
from bgm_batch.flows.score_session import (
    Generated,
    characterize_windows,
    deliver_outputs,
    describe_music,
    load_windows,
    pick_music,
    render_music,
)
from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner

from bgm_batch.audio.protocol import AUDIO_BACKENDS
from bgm_batch.data.archive import discover_archive
from bgm_batch.data.ingest import IngestResult
from bgm_batch.library import score as library
from bgm_batch.settings import ArchiveSettings, Settings
from bgm_batch.stages import archive_report, archive_state, deliver, render
from bgm_batch.stages.transitions import plan_transitions
from bgm_batch.text.protocol import TEXT_BACKENDS

WORK_DIR = ".work"


@dataclass
class ArchiveReport:
    """The report frame (``archive_report.REPORT_SCHEMA``) and the archive-wide numbers."""

    out_dir: Path
    report: pl.DataFrame
    timings: dict[str, float] = field(default_factory=dict)
    text_stats: dict[str, float] = field(default_factory=dict)

    @property
    def failed(self) -> int:
        return int((self.report["status"] == "failed").sum())


@dataclass
class _Job:
    """One recording to score: its discovery row, fingerprint and, once read, its windows."""

    row: dict[str, Any]
    digest: str
    parts: dict[str, Any]
    loaded: IngestResult | None = None
    frame: pl.DataFrame | None = None
    seconds: float = 0.0


@task(cache_policy=NO_CACHE)
def model_identities(settings: Settings) -> dict[str, dict[str, str]]:
    """The text and audio backends' identities (part of every fingerprint)."""
    text = TEXT_BACKENDS.create(settings.text.backend, settings.text)
    audio = (
        library.index_identity(settings.audio.backend)
        or AUDIO_BACKENDS.create(settings.audio.backend, settings.audio).identity()
    )
    return {"text": text.identity(), "audio": audio}


@task(cache_policy=NO_CACHE)
def prepare_recording(
    row: dict[str, Any], settings: Settings
) -> tuple[IngestResult, pl.DataFrame, float]:
    """Ingest and characterize one recording (and the seconds it took); raise when nothing
    usable is left."""
    started = time.perf_counter()
    everything = load_windows.fn(Path(row["source"]), settings, None)
    if row["recording"] not in everything.recordings():
        raise ValueError(f"no usable window ({everything.quarantine.height} quarantined)")
    loaded = deliver.select_recording(everything, row["recording"])
    frame = characterize_windows.fn(loaded.frame, settings)
    return loaded, frame, time.perf_counter() - started


@task(cache_policy=NO_CACHE)
def deliver_recording(
    row: dict[str, Any], state: tuple[str, dict], generated: Generated, settings: Settings
) -> tuple[dict, str | None]:
    """Deliver, write the state file, then drop the work files; returns counts and a video
    problem. A recording that failed keeps its rendered segments for the next run."""
    out_dir, keep_work = Path(row["out_dir"]), settings.keep_work
    video = Path(row["video"]) if row["video"] else None
    source, timings = Path(row["source"]), {}
    offset = {"video_offset_seconds": row["video_offset_s"]}  # videos.csv's offset_s
    mux = settings.mux.model_copy(update=offset)
    # the work files go after the state file, so a kill in between never loses them
    settings = settings.model_copy(update={"mux": mux, "keep_work": True})
    try:
        report = deliver_outputs(generated, source, out_dir, settings, video, timings)
        problem = None
    except (OSError, ValueError, RuntimeError) as exc:  # a bad video: deliver without it
        if video is None:
            raise
        problem = f"video {video.name}: {exc}"
        report = deliver_outputs(generated, source, out_dir, settings, None, timings)
    if problem is None:
        archive_state.write_state(out_dir, *state)
        if not keep_work:
            render.remove_work_files(generated.rendered)
    return {**report.counts, "timings": timings, "scored_video": bool(report.scored_video)}, problem


@contextlib.contextmanager
def _timed(timings: dict[str, float], stage: str) -> Iterator[None]:
    started = time.perf_counter()
    yield
    timings[stage] = timings.get(stage, 0.0) + time.perf_counter() - started


@contextlib.contextmanager
def _model_resources(archive: ArchiveSettings) -> Iterator[None]:
    """Ask the cluster to place model tasks on GPU workers (``model_gpus`` > 0)."""
    if archive.model_gpus <= 0 or archive.engine == "local":
        yield
    elif archive.engine == "dask":
        import dask

        with dask.annotate(resources={"GPU": archive.model_gpus}):
            yield
    else:
        from prefect_ray.context import remote_options

        with remote_options(num_gpus=archive.model_gpus):
            yield


def _row(job_row: dict[str, Any], status: str, reason: str | None, **values: Any) -> dict:
    """One report row with defaults for what a recording that never ran does not have."""
    base = {"windows_in": 0, "windows_accepted": 0, "windows_quarantined": 0, "rendered_now": 0}
    base |= {"seconds": 0.0, "scored_video": False}
    return {
        **base,
        "recording": job_row["recording"],
        "status": status,
        "reason": reason,
        "source": job_row["source"],
        "video": job_row["video"],
        "out_dir": job_row["out_dir"],
        **values,
    }


def _plan(
    out_dir: Path, root: Path, settings: Settings, force: bool
) -> tuple[list[_Job], list[dict]]:
    """Discover; split into jobs to run and report rows for skipped and undiscoverable ones."""
    found = discover_archive(root, exclude=out_dir).to_dicts()
    models = model_identities(settings)
    settings_id = archive_state.settings_identity(settings)
    jobs, rows = [], []
    for row in found:
        row["out_dir"] = str(out_dir / row["recording"])
        if row["problem"]:
            rows.append(_row(row, "failed", row["problem"]))
            continue
        try:
            parts = archive_state.fingerprint_parts(row, settings_id, models)
        except OSError as exc:
            rows.append(_row(row, "failed", f"unreadable input: {exc}"))
            continue
        digest = archive_state.fingerprint(parts)
        if not force and archive_state.is_current(Path(row["out_dir"]), digest):
            rows.append(_row(row, "skipped", "unchanged since its last successful run"))
        else:
            jobs.append(_Job(row, digest, parts))
    return jobs, rows


def _prepare(jobs: list[_Job], settings: Settings, rows: list[dict]) -> list[_Job]:
    """Ingest and characterize every job in parallel; failed ones go to the report."""
    futures = [(job, prepare_recording.submit(job.row, settings)) for job in jobs]
    ready = []
    for job, future in futures:
        try:
            job.loaded, job.frame, job.seconds = future.result()
            ready.append(job)
        except Exception as exc:  # noqa: BLE001 - one bad recording never stops the archive
            rows.append(_row(job.row, "failed", f"ingest: {exc}"))
    return ready


def _shards(jobs: list[_Job], count: int) -> list[list[_Job]]:
    """Recordings split into ``count`` groups of similar window counts (largest first)."""
    shards: list[list[_Job]] = [[] for _ in range(max(1, min(count, len(jobs))))]
    sizes = [0] * len(shards)
    for job in sorted(jobs, key=lambda j: (-j.frame.height, j.row["recording"])):
        smallest = sizes.index(min(sizes))
        shards[smallest].append(job)
        sizes[smallest] += job.frame.height
    return shards


def _render(
    jobs: list[_Job], frame: pl.DataFrame, settings: Settings, out_dir: Path, rows: list[dict]
) -> tuple[dict[str, render.RenderResult], dict[str, str]]:
    """Render every shard (one per worker); a failed shard fails its recordings only."""
    count = 1 if settings.archive.engine == "local" else settings.archive.workers
    with _model_resources(settings.archive):
        submitted = []
        for shard in _shards(jobs, count):
            ids = [job.row["recording"] for job in shard]
            part = frame.filter(pl.col("recording").is_in(ids))
            submitted.append((shard, render_music.submit(part, settings, out_dir / WORK_DIR)))
    results, audio_id = {}, {}
    for shard, future in submitted:
        try:
            rendered, audio_id = future.result()
        except Exception as exc:  # noqa: BLE001 - a failed shard fails its recordings only
            rows.extend(_row(job.row, "failed", f"render: {exc}") for job in shard)
            continue
        for job in shard:
            results[job.row["recording"]] = _select(rendered, job.row["recording"])
    return results, audio_id


def _select(rendered: render.RenderResult, recording: str) -> render.RenderResult:
    """One recording's part of a shard's render result."""
    mine = pl.col("recording") == recording
    segments = rendered.segments.filter(mine)
    reused = int(segments["reused"].sum())
    failures = rendered.failures.filter(mine)
    return render.RenderResult(segments, failures, segments.height - reused, reused)


def _share_pooled_time(jobs: list[_Job], seconds: float) -> None:
    """Charge each recording its share of the pooled stages, by window count."""
    total = sum(job.frame.height for job in jobs)
    for job in jobs:
        job.seconds += seconds * job.frame.height / total


def _deliver(
    jobs: list[_Job], generated: dict[str, Generated], settings: Settings
) -> tuple[list[dict], dict[str, float]]:
    """Deliver every rendered recording in parallel; report rows and summed stage times.
    Without the stitch's and the mux's progress displays: several at once would garble."""
    settings = settings.model_copy(update={"progress": False})
    futures = [
        (
            job,
            deliver_recording.submit(
                job.row, (job.digest, job.parts), generated[job.row["recording"]], settings
            ),
        )
        for job in jobs
        if job.row["recording"] in generated
    ]
    rows, timings = [], {}
    for job, future in futures:
        try:
            counts, problem = future.result()
        except Exception as exc:  # noqa: BLE001 - one failing delivery never stops the archive
            rows.append(_row(job.row, "failed", f"deliver: {exc}"))
            continue
        for stage, seconds in counts["timings"].items():
            timings[stage] = timings.get(stage, 0.0) + seconds
        rows.append(
            _row(
                job.row,
                "failed" if problem else "scored",
                problem,
                windows_in=counts["rows_in"],
                windows_accepted=counts["accepted"],
                windows_quarantined=counts["quarantined"],
                rendered_now=counts["rendered_now"],
                seconds=job.seconds + sum(counts["timings"].values()),
                scored_video=counts["scored_video"],
            )
        )
    return rows, timings


@flow(name="score-archive", log_prints=False)
def score_archive(
    root: Path, out_dir: Path, settings: Settings, force: bool = False
) -> ArchiveReport:
    """Score every recording under ``root`` into ``out_dir/<recording>/``; write the report."""
    root, out_dir = Path(root).resolve(), Path(out_dir).resolve()
    started, timings = time.perf_counter(), {}
    with archive_state.archive_lock(out_dir):
        with _timed(timings, "discover"):
            jobs, rows = _plan(out_dir, root, settings, force)
        with _timed(timings, "ingest+characterize"):
            jobs = _prepare(jobs, settings, rows)
        text_stats, generated = {}, {}
        if jobs:
            frame = pl.concat([job.frame for job in jobs], how="vertical_relaxed")
            with _timed(timings, "narrate"), _model_resources(settings.archive):
                frame, text_stats, text_id = describe_music.submit(frame, settings).result()
            with _timed(timings, "plan"):
                frame = plan_transitions(frame, settings.profile_model)
                frame = pick_music.fn(frame, settings, out_dir)  # library mode only
            with _timed(timings, "render"):
                rendered, audio_id = _render(jobs, frame, settings, out_dir, rows)
            _share_pooled_time(jobs, timings["narrate"] + timings["plan"] + timings["render"])
            for job in jobs:
                rec = job.row["recording"]
                if rec in rendered:
                    part = frame.filter(pl.col("recording") == rec)
                    generated[rec] = Generated(
                        job.loaded, part, rendered[rec], text_id, audio_id, text_stats
                    )
        with _timed(timings, "deliver"):
            delivered, stage_times = _deliver(jobs, generated, settings)
        report = archive_report.report_frame(rows + delivered)
        timings |= {f"deliver: {k}": v for k, v in stage_times.items()}
        archive_report.write_report(
            out_dir, report, timings, text_stats, time.perf_counter() - started
        )
    return ArchiveReport(out_dir, report, timings, text_stats)


def task_runner(archive: ArchiveSettings) -> Any:
    """The Prefect task runner of an engine (imported only when chosen)."""
    if archive.engine == "local":
        return ThreadPoolTaskRunner(max_workers=archive.workers)
    if archive.engine == "dask":
        from prefect_dask import DaskTaskRunner

        if archive.address:
            return DaskTaskRunner(address=archive.address)
        return DaskTaskRunner(
            cluster_class="distributed.LocalCluster",
            cluster_kwargs={
                "n_workers": archive.workers,
                "threads_per_worker": 1,
                "dashboard_address": None,  # no fixed port: two clusters may run side by side
            },
        )
    from prefect_ray import RayTaskRunner

    init = {"num_cpus": archive.workers} if archive.address is None else {}
    return RayTaskRunner(address=archive.address, init_kwargs=init)


def run_archive(
    root: Path, out_dir: Path, settings: Settings, force: bool = False
) -> ArchiveReport:
    """Run the archive flow on the engine ``settings.archive`` names."""
    if settings.archive.engine != "local" and settings.archive.address is None:
        _share_api_with_local_workers()
    runner = task_runner(settings.archive)
    return score_archive.with_options(task_runner=runner)(root, out_dir, settings, force)


def _share_api_with_local_workers() -> None:
    """A local cluster's workers are new processes: give them this run's Prefect API (the
    temporary local server when none is configured) before they start, or each one would
    start a server of its own. Workers of a remote cluster need ``PREFECT_API_URL`` set
    where they run (docs/nightly.md)."""
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if not url:
        from prefect.server.api.server import SubprocessASGIServer

        server = SubprocessASGIServer()  # the one the client of this process uses
        server.start()
        url = server.api_url
    os.environ["PREFECT_API_URL"] = url
