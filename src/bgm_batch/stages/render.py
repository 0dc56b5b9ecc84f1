"""Render every window's music through an audio backend: step-k batches, resumable.

Continuation makes the segments of one run sequential: segment k is conditioned on segment
k-1 (its audio tail as ``prompt_audio``, its musical ``state``). A run is a recording cut at
its ``start`` and ``restart`` rows (a real gap in the capture; a scene ``change`` keeps its
anchor), so runs are independent of each other.
The scheduler therefore walks the runs in lockstep: step k gathers segment k of every run
still going (several recordings, and the many runs a long recording splits into) and hands
them to the backend in batches of at most ``settings.batch_size``; a GPU backend sees wide
batches although no run ever skips ahead of its own anchor.

Timing: segment k starts at its window's start in the track. It is rendered ``hop + tail``
long: ``hop`` reaches to where the next segment of its run starts (``segment_seconds``, or
more across a bridged gap of missing windows, which the segment fills), the tail into the
next window for the crossfade (``max(overlap_seconds, next row's crossfade_s)``). The
continuation prompt is the ``prompt_seconds`` of the previous segment that end where the new
segment starts (its ``hop`` mark), so a continuing model picks up exactly at the boundary.

Resume: each finished segment is written atomically to ``work_dir/<recording>/`` as
``<index>.wav`` (24-bit PCM: three quarters the size of float WAV; FLAC would save another
30 % of the disk, but measured on an hour its encoding and decoding cost 15 ms of CPU per
segment more, some 5 s an hour), ``<index>.mid`` when the backend composes MIDI, and last
``<index>.json`` (state, seed, caption, backend identity and a chained key); with
``settings.stems`` each instrument role as ``<index>.<role>.wav`` too. The key hashes
the row's own inputs and its predecessor's key, so a changed caption re-renders its segment
and every segment that continues from it. A rerun loads segments whose key matches instead
of rendering them; a process killed at any point leaves each segment either complete or
absent. The audio is rounded to 24 bits before it is written and before its tail becomes
the next segment's prompt, so a resumed run continues from the very samples a fresh run
would have used. The audio and JSON files are work files: ``remove_work_files`` deletes
them once the track is delivered, keeping the MIDI.

Parallelism: a backend that continues through its musical state alone (``StateContinued``)
and may render on several threads at once (``PARALLEL_BACKENDS``: the synth, whose
FluidSynth calls, FFTs and numpy work release the GIL) renders on ``settings.render_workers``
threads (0: one per core). The runs are first walked composing only (``next_state``,
milliseconds a segment); then the segments themselves, each knowing its anchor's state, are
handed out in stretches of consecutive windows, so even one continuous hour-long run keeps
every core busy (a planned segment whose render fails is reported; its successor still
continues the planned piece). Threads, not processes: measured on an hour, two threads
render as fast as two processes did, while the process tree holds one interpreter, one
loaded SoundFont and one note cache instead of two (about 350 MB less), and no worker has to
start. Segments do not depend on which thread renders them. Any other backend walks its runs
in this thread.

A request that raises is retried alone; if it still fails the row is reported in
``RenderResult.failures`` and its successor restarts its run.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import soundfile as sf

from bgm_batch.atomic import atomic_path, write_bytes, write_text
from bgm_batch.audio.pcm24 import from_pcm24, to_pcm24, write_wav24
from bgm_batch.audio.protocol import (
    STEM_ROLES,
    AudioBackend,
    RenderedSegment,
    SegmentRequest,
    StateContinued,
)
from bgm_batch.memory import trim
from bgm_batch.progress import Progress
from bgm_batch.settings import AudioSettings
from bgm_batch.stages.stitch import hop_energies
from bgm_batch.stages.transitions import ANCHORED

AUDIO_SUFFIX = ".wav"
WORK_DIR = "segments"  # the work files' folder under a score's output folder
STEMS_SCHEMA = pl.Struct({role: pl.String for role in STEM_ROLES})  # role -> work file or null
PARALLEL_BACKENDS = {"synth"}  # registry backends that may render on several threads at once
JOBS_PER_GROUP = 8  # planned segments handed out at a time: the cores finish together


@dataclass
class RenderResult:
    """``segments``: recording, index, audio_path, midi_path (null without MIDI), duration_s,
    sample_rate, reused, stems (role -> work file, null without ``settings.stems``),
    loudness_hops (``stitch.hop_energies`` of the segment up to the next one's start, null
    in work files from before it was kept); one row per rendered window. ``failures``:
    recording, index, reason for the rows to quarantine. ``rendered`` and ``reused`` count
    segments."""

    segments: pl.DataFrame
    failures: pl.DataFrame
    rendered: int
    reused: int


@dataclass
class _Row:
    recording: str
    index: int
    caption: str
    transition: str
    stinger: bool
    duration_s: float
    hop_s: float  # where the next segment of its run starts (longer across a bridged gap)
    seed: int
    stem: Path  # work_dir/<recording>/<index> without suffix


@dataclass
class _Anchor:
    """What the next segment of a run continues from (no audio when planned)."""

    key: str
    prompt: np.ndarray | None
    sample_rate: int | None
    state: dict[str, Any]


@dataclass
class _Job:
    """One planned segment: its row, chained key, transition and the anchor's state."""

    row: _Row
    key: str
    transition: str
    anchor: _Anchor | None


def segment_seed(seed: int, recording: str, index: int) -> int:
    """A per-segment seed from the run seed, the recording and the window index."""
    digest = hashlib.sha256(f"{seed}\x00{recording}\x00{index}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def _folder_name(recording: str) -> str:
    """A safe, collision-free folder name for a recording id."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", recording)
    if safe == recording:
        return safe
    return f"{safe}-{hashlib.sha256(recording.encode()).hexdigest()[:8]}"


def _rows(
    frame: pl.DataFrame, settings: AudioSettings, seed: int, work_dir: Path
) -> list[list[_Row]]:
    """The frame's rows grouped into runs, each run in index order."""
    ordered = frame.sort("recording", "index").to_dicts()
    runs: list[list[_Row]] = []
    for i, row in enumerate(ordered):
        nxt = ordered[i + 1] if i + 1 < len(ordered) else None
        same = nxt is not None and nxt["recording"] == row["recording"]
        follows = same and nxt["transition"] in ANCHORED  # fills a bridged gap up to it
        windows = nxt["index"] - row["index"] if follows else 1
        fades = follows or (same and nxt["index"] == row["index"] + 1)
        tail = max(settings.overlap_seconds, float(nxt["crossfade_s"]) if fades else 0.0)
        item = _Row(
            recording=row["recording"],
            index=int(row["index"]),
            caption=row["caption"],
            transition=row["transition"],
            stinger=bool(row["stinger"]),
            duration_s=settings.segment_seconds * windows + tail,
            hop_s=settings.segment_seconds * windows,
            seed=segment_seed(seed, row["recording"], int(row["index"])),
            stem=work_dir / _folder_name(row["recording"]) / f"{int(row['index']):06d}",
        )
        if row["transition"] in ANCHORED and runs and runs[-1][-1].recording == row["recording"]:
            runs[-1].append(item)
        else:
            runs.append([item])
    return runs


def _key(row: _Row, identity: dict[str, str], transition: str, anchor: _Anchor | None) -> str:
    inputs = {
        "caption": row.caption,
        "identity": identity,
        "seed": row.seed,
        "duration_s": row.duration_s,
        "transition": transition,
        "stinger": row.stinger,
        "anchor": anchor.key if anchor else None,
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def _prompt_window(row: _Row, settings: AudioSettings, sample_rate: int) -> tuple[int, int]:
    stop = round(row.hop_s * sample_rate)
    return max(stop - round(settings.prompt_seconds * sample_rate), 0), stop


class _Store:
    """Segment files under work_dir; writes run on a small thread pool (libsndfile releases
    the GIL), the JSON last so that it marks a complete segment."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(2)
        self._pending: list[Future] = []

    @staticmethod
    def load(
        row: _Row, key: str, settings: AudioSettings, with_prompt: bool = True
    ) -> tuple[dict, _Anchor] | None:
        """The saved segment of ``row`` if it was rendered from the same inputs (its anchor
        without audio unless ``with_prompt``)."""
        meta_path = row.stem.with_suffix(".json")
        audio_path = row.stem.with_suffix(AUDIO_SUFFIX)
        if not (meta_path.is_file() and audio_path.is_file()):
            return None
        try:
            meta = json.loads(meta_path.read_text())
        except json.JSONDecodeError:
            return None
        if meta.get("key") != key or (settings.stems and meta.get("stems") is None):
            return None
        meta["audio_path"] = str(audio_path)  # the work_dir may have moved since
        if meta.get("stems") is not None:
            meta["stems"] = {role: str(_stem_path(row, role)) for role in meta["stems"]}
        if meta["midi_path"] is not None:
            meta["midi_path"] = str(row.stem.with_suffix(".mid"))
        if not with_prompt:
            return meta, _Anchor(key, None, None, meta["state"])
        start, stop = _prompt_window(row, settings, meta["sample_rate"])
        prompt, _ = sf.read(audio_path, start=start, stop=stop, dtype="float32", always_2d=True)
        return meta, _Anchor(key, prompt.T.copy(), meta["sample_rate"], meta["state"])

    def save(self, row: _Row, key: str, segment: RenderedSegment, pcm: np.ndarray) -> dict:
        """Queue the segment's files (``pcm``: ``to_pcm24`` samples); returns the metadata
        the JSON will hold."""
        meta = {
            "key": key,
            "recording": row.recording,
            "index": row.index,
            "caption": row.caption,
            "seed": row.seed,
            "sample_rate": segment.sample_rate,
            "frames": int(pcm.shape[1]),
            "state": segment.state,
            "audio_path": str(row.stem.with_suffix(AUDIO_SUFFIX)),
            "midi_path": str(row.stem.with_suffix(".mid")) if segment.midi else None,
            "stems": None,
            "loudness_hops": _loudness_hops(row, pcm, segment.sample_rate),
        }
        files = [(row.stem.with_suffix(AUDIO_SUFFIX), pcm)]
        if segment.stems is not None:
            unknown = set(segment.stems) - set(STEM_ROLES)
            if unknown:
                raise ValueError(f"stems of unknown roles {sorted(unknown)}")
            meta["stems"] = {role: str(_stem_path(row, role)) for role in segment.stems}
            files += [(_stem_path(row, r), to_pcm24(a)) for r, a in segment.stems.items()]
        self._pending.append(
            self._pool.submit(self._write, row, meta, segment.midi, files, segment.sample_rate)
        )
        return meta

    @staticmethod
    def _write(
        row: _Row,
        meta: dict,
        midi: bytes | None,
        files: list[tuple[Path, np.ndarray]],
        rate: int,
    ) -> None:
        for path, pcm in files:
            with atomic_path(path) as tmp:
                write_wav24(tmp, pcm, rate)
        if midi is not None:
            write_bytes(row.stem.with_suffix(".mid"), midi)
        write_text(row.stem.with_suffix(".json"), json.dumps(meta))

    def close(self) -> None:
        """Wait for every write; re-raise the first error."""
        try:
            for future in self._pending:
                future.result()
        finally:
            self._pool.shutdown()


def _render_batch(
    backend: AudioBackend, requests: Sequence[SegmentRequest]
) -> list[RenderedSegment | Exception]:
    """Render a batch; if it raises, render its requests one by one to find the culprit."""
    try:
        results: list[RenderedSegment | Exception] = list(backend.render(requests))
        if len(results) != len(requests):
            raise RuntimeError(
                f"backend returned {len(results)} results for {len(requests)} requests"
            )
        return results
    except Exception as error:
        if len(requests) == 1:
            return [error]
    singles: list[RenderedSegment | Exception] = []
    for request in requests:
        try:
            singles.append(backend.render([request])[0])
        except Exception as error:  # the row is quarantined by the caller, the run goes on
            singles.append(error)
    return singles


def _checked(segment: RenderedSegment) -> np.ndarray:
    audio = np.asarray(segment.audio, dtype=np.float32)
    if audio.ndim != 2 or audio.shape[1] == 0 or not np.isfinite(audio).all():
        raise ValueError(f"backend returned unusable audio of shape {audio.shape}")
    return audio


@dataclass
class _Outcome:
    """What rendering some runs produced: segment metadata, failures and counts."""

    done: list[dict]
    failures: list[dict]
    rendered: int = 0
    reused: int = 0

    def add(self, other: _Outcome) -> None:
        self.done += other.done
        self.failures += other.failures
        self.rendered += other.rendered
        self.reused += other.reused

    def finished(self, meta: dict, reused: bool) -> None:
        """Count a segment; keep only what ``RenderResult.segments`` shows of its metadata
        (the musical state stays in its JSON file: an hour holds thousands of them)."""
        self.done.append({**{k: meta.get(k) for k in _FRAME_FIELDS}, "reused": reused})
        if reused:
            self.reused += 1
        else:
            self.rendered += 1


_FRAME_FIELDS = (
    "recording",
    "index",
    "audio_path",
    "midi_path",
    "frames",
    "sample_rate",
    "stems",
    "loudness_hops",
)


def _resume(
    row: _Row,
    step: int,
    anchor: _Anchor | None,
    identity: dict[str, str],
    settings: AudioSettings,
    with_prompt: bool = True,
) -> tuple[str, str, tuple[dict, _Anchor] | None]:
    """Step ``step`` of a run: its transition (a run whose anchor was lost restarts), its
    chained key, and its saved segment if one matches."""
    transition = row.transition if step == 0 or anchor else "restart"
    key = _key(row, identity, transition, anchor)
    return transition, key, _Store.load(row, key, settings, with_prompt)


def render_segments(
    frame: pl.DataFrame,
    backend: AudioBackend,
    settings: AudioSettings,
    *,
    seed: int,
    work_dir: Path,
    progress: bool = False,
) -> RenderResult:
    """Render every row of a planned, captioned frame (see the module docstring)."""
    work_dir = Path(work_dir)
    runs = _rows(frame, settings, seed, work_dir)
    identity = backend.identity()
    for folder in {row.stem.parent for run in runs for row in run}:
        for stale in folder.glob(".*.tmp.*"):  # left by a killed run
            stale.unlink(missing_ok=True)
    bar = Progress("render", sum(map(len, runs)), unit="seg", enabled=progress)
    try:
        workers = _workers(backend, settings, runs)
        if isinstance(backend, StateContinued) and workers > 1:
            outcome, jobs = _plan(runs, backend, identity, settings)
            bar.update(outcome.reused + len(outcome.failures))
            groups = _contiguous(jobs, max(workers, len(jobs) // JOBS_PER_GROUP))
            outcome.add(_render_in_threads(groups, backend, identity, settings, workers, bar))
        else:
            outcome = _render_runs(runs, backend, identity, settings, bar.update)
    finally:
        bar.close()
    return RenderResult(
        segments=_segments_frame(outcome.done),
        failures=_failures_frame(outcome.failures),
        rendered=outcome.rendered,
        reused=outcome.reused,
    )


def _workers(backend: AudioBackend, settings: AudioSettings, runs: list[list[_Row]]) -> int:
    """How many threads render: one per core for a backend that is safe on several threads
    (and continues through its state alone: ``render_segments`` checks that), else one."""
    if backend.name not in PARALLEL_BACKENDS:
        return 1
    return max(1, min(settings.render_workers or os.cpu_count() or 1, sum(map(len, runs))))


def _plan(
    runs: list[list[_Row]],
    backend: StateContinued,
    identity: dict[str, str],
    settings: AudioSettings,
) -> tuple[_Outcome, list[_Job]]:
    """Walk each run as ``_render_runs`` would, composing instead of rendering: the saved
    segments that match are taken as they are, every other one becomes a job that knows
    its anchor's state. A row whose composition fails is reported and its successor
    restarts, as in the sequential walk."""
    outcome, jobs = _Outcome([], []), []
    for run in runs:
        anchor: _Anchor | None = None
        for step, row in enumerate(run):
            transition, key, saved = _resume(row, step, anchor, identity, settings, False)
            if saved:
                outcome.finished(saved[0], reused=True)
                anchor = saved[1]
                continue
            try:
                state = backend.next_state(_request(row, transition, anchor))
            except Exception as error:
                outcome.failures.append(_failure(row, error))
                anchor = None
                continue
            jobs.append(_Job(row, key, transition, anchor))
            anchor = _Anchor(key, None, None, state)
    return outcome, jobs


def _render_jobs(
    jobs: list[_Job], backend: AudioBackend, identity: dict[str, str], settings: AudioSettings
) -> _Outcome:
    """Render planned segments one by one, each from its planned anchor."""
    outcome, store = _Outcome([], []), _Store()
    try:
        for job in jobs:
            chunk = [(0, job.row, job.key, job.transition)]
            _render_chunk(chunk, [job.anchor], backend, store, settings, outcome)
    finally:
        store.close()
    trim()  # the group's buffers are free: give their pages back (see bgm_batch.memory)
    return outcome


def _contiguous(jobs: list[_Job], count: int) -> list[list[_Job]]:
    """``count`` groups of consecutive jobs, as equal as can be: neighbouring segments play
    the same notes, so a worker's note cache serves its own stretch of the recording."""
    bounds = [round(i * len(jobs) / count) for i in range(count + 1)]
    return [jobs[a:b] for a, b in pairwise(bounds)]


def _render_in_threads(
    groups: list[list[_Job]],
    backend: AudioBackend,
    identity: dict[str, str],
    settings: AudioSettings,
    workers: int,
    bar: Progress,
) -> _Outcome:
    """Render the groups of planned segments on ``workers`` threads, in the recording's
    order (neighbouring stretches share the note cache); an interrupt or error cancels the
    groups not yet started."""
    outcome = _Outcome([], [])
    pool = ThreadPoolExecutor(workers, thread_name_prefix="render")
    try:
        futures = [pool.submit(_render_jobs, g, backend, identity, settings) for g in groups]
        for future in as_completed(futures):
            part = future.result()
            outcome.add(part)
            bar.update(part.rendered + part.reused + len(part.failures))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return outcome


def _render_runs(
    runs: list[list[_Row]],
    backend: AudioBackend,
    identity: dict[str, str],
    settings: AudioSettings,
    advance: Callable[..., None],
) -> _Outcome:
    """Walk the runs in lockstep: step k of every run, in batches (module docstring)."""
    anchors: list[_Anchor | None] = [None] * len(runs)
    outcome = _Outcome([], [])
    store = _Store()
    try:
        for step in range(max(map(len, runs), default=0)):
            todo: list[tuple[int, _Row, str, str]] = []
            for r, run in enumerate(runs):
                if step >= len(run):
                    continue
                row = run[step]
                transition, key, saved = _resume(row, step, anchors[r], identity, settings)
                if saved:
                    outcome.finished(saved[0], reused=True)
                    anchors[r] = saved[1]
                    advance()
                else:
                    todo.append((r, row, key, transition))
            for start in range(0, len(todo), settings.batch_size):
                chunk = todo[start : start + settings.batch_size]
                _render_chunk(chunk, anchors, backend, store, settings, outcome)
                advance(len(chunk))
    finally:
        store.close()
    return outcome


def _render_chunk(
    chunk: list[tuple[int, _Row, str, str]],
    anchors: list[_Anchor | None],
    backend: AudioBackend,
    store: _Store,
    settings: AudioSettings,
    outcome: _Outcome,
) -> None:
    """Render one batch; save each segment (rounded to 24 bits) and make it its run's anchor."""
    requests = [_request(row, transition, anchors[r]) for r, row, _, transition in chunk]
    for (r, row, key, _), result in zip(chunk, _render_batch(backend, requests), strict=True):
        try:
            if isinstance(result, Exception):
                raise result
            pcm = to_pcm24(_checked(result))
        except Exception as error:
            outcome.failures.append(_failure(row, error))
            anchors[r] = None
            continue
        meta = store.save(row, key, result, pcm)
        begin, stop = _prompt_window(row, settings, result.sample_rate)
        prompt = from_pcm24(pcm[:, begin:stop])
        anchors[r] = _Anchor(key, prompt, result.sample_rate, result.state)
        outcome.finished(meta, reused=False)


def _loudness_hops(row: _Row, pcm: np.ndarray, rate: int) -> list[float]:
    """K-weighted energy per 100 ms of the segment's own stretch (to where the next segment
    starts), as the stitch will read the samples: its loudness pass, done here in parallel."""
    return hop_energies(from_pcm24(pcm[:, : round(row.hop_s * rate)]), rate).tolist()


def _failure(row: _Row, error: Exception) -> dict[str, Any]:
    return {
        "recording": row.recording,
        "index": row.index,
        "reason": f"{type(error).__name__}: {error}",
    }


def _stem_path(row: _Row, role: str) -> Path:
    """A segment's work file for one instrument role: ``<index>.<role>.wav``."""
    return row.stem.with_suffix(f".{role}{AUDIO_SUFFIX}")


def remove_work_files(result: RenderResult) -> int:
    """Delete the rendered segments' audio, stems and JSON (the MIDI stays); returns how many
    files went. Called once the track is delivered, unless the work is kept."""
    removed = 0
    for audio, stems in result.segments.select("audio_path", "stems").iter_rows():
        parts = [Path(p) for p in (stems or {}).values() if p is not None]
        for path in (Path(audio).with_suffix(".json"), Path(audio), *parts):  # JSON: it's whole
            if path.is_file():
                path.unlink()
                removed += 1
    return removed


def _request(row: _Row, transition: str, anchor: _Anchor | None) -> SegmentRequest:
    return SegmentRequest(
        key=f"{row.recording}/{row.index}",
        caption=row.caption,
        duration_s=row.duration_s,
        hop_s=row.hop_s,
        seed=row.seed,
        transition=transition,
        stinger=row.stinger,
        prompt_audio=anchor.prompt if anchor else None,
        prompt_sample_rate=anchor.sample_rate if anchor else None,
        prev_state=anchor.state if anchor else None,
    )


def _segments_frame(done: list[dict]) -> pl.DataFrame:
    schema = {
        "recording": pl.String,
        "index": pl.Int64,
        "audio_path": pl.String,
        "midi_path": pl.String,
        "duration_s": pl.Float64,
        "sample_rate": pl.Int64,
        "reused": pl.Boolean,
        "stems": STEMS_SCHEMA,
        "loudness_hops": pl.List(pl.Float64),
    }
    rows = [
        {
            "recording": m["recording"],
            "index": m["index"],
            "audio_path": m["audio_path"],
            "midi_path": m["midi_path"],
            "duration_s": m["frames"] / m["sample_rate"],
            "sample_rate": m["sample_rate"],
            "reused": m["reused"],
            "stems": m["stems"],
            "loudness_hops": m["loudness_hops"],
        }
        for m in done
    ]
    return pl.DataFrame(rows, schema=schema).sort("recording", "index")


def _failures_frame(failures: list[dict]) -> pl.DataFrame:
    schema = {"recording": pl.String, "index": pl.Int64, "reason": pl.String}
    return pl.DataFrame(failures, schema=schema).sort("recording", "index")
