"""The render scheduler with the real synth backend: step-k batches, continuation, resume,
failures, determinism, and a SIGKILL in the middle of a run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import soundfile as sf

from bgm_batch.audio.protocol import AUDIO_BACKENDS, STEM_ROLES, RenderedSegment, SegmentRequest
from bgm_batch.settings import AudioSettings
from bgm_batch.stages import render
from bgm_batch.stages.render import AUDIO_SUFFIX, remove_work_files, render_segments, segment_seed

# Short windows keep the tests quick; the scheduling is the same as with 10 s ones.
SETTINGS = AudioSettings(segment_seconds=2.0, overlap_seconds=0.5, prompt_seconds=1.0, batch_size=2)
CALM = "Gentle peaceful piano music, calm and soft."
DARK = "Dark mysterious night music with eerie pads, slow."


def planned(rows: list[tuple[str, int, str, str]]) -> pl.DataFrame:
    """A planned, captioned frame from (recording, index, transition, caption)."""
    return pl.DataFrame(
        [
            {
                "recording": rec,
                "index": i,
                "start_s": 2.0 * i,
                "transition": transition,
                "stinger": False,
                "crossfade_s": {"start": 0.0, "continue": 0.5}.get(transition, 1.5),
                "caption": caption,
            }
            for rec, i, transition, caption in rows
        ]
    )


FRAME = planned(
    [
        ("a", 0, "start", CALM),
        ("a", 1, "continue", CALM),
        ("a", 2, "restart", DARK),
        ("a", 3, "continue", DARK),
        ("a", 4, "continue", DARK),
        ("b", 0, "start", DARK),
        ("b", 1, "continue", DARK),
    ]
)


class Spy:
    """The real synth backend, recording each batch it is given (and failing on demand)."""

    name = "synth"

    def __init__(self, fail_on: str | None = None):
        self.inner = AUDIO_BACKENDS.create("synth", SETTINGS)
        self.batches: list[list[SegmentRequest]] = []
        self.fail_on = fail_on

    def identity(self) -> dict[str, str]:
        return self.inner.identity()

    def render(self, requests: Sequence[SegmentRequest]) -> list[RenderedSegment]:
        self.batches.append(list(requests))
        if self.fail_on and any(r.key == self.fail_on for r in requests):
            raise RuntimeError(f"cannot render {self.fail_on}")
        return self.inner.render(requests)


def audio_of(result) -> dict[tuple[str, int], np.ndarray]:
    return {
        (r["recording"], r["index"]): sf.read(r["audio_path"], dtype="float32")[0]
        for r in result.segments.iter_rows(named=True)
    }


def test_step_k_batches_carry_the_anchor(tmp_path):
    spy = Spy()
    result = render_segments(FRAME, spy, SETTINGS, seed=3, work_dir=tmp_path)
    assert (result.rendered, result.reused, result.failures.height) == (7, 0, 0)
    assert all(len(batch) <= SETTINGS.batch_size for batch in spy.batches)
    steps = [sorted(r.key for r in batch) for batch in spy.batches]
    # three runs (a0-1, a2-4, b0-1): step 0 holds every run's first segment
    assert sorted(sum(steps[:2], [])) == ["a/0", "a/2", "b/0"]
    assert sorted(sum(steps[2:4], [])) == ["a/1", "a/3", "b/1"]
    assert steps[4:] == [["a/4"]]
    requests = {r.key: r for batch in spy.batches for r in batch}
    assert requests["a/0"].prompt_audio is None and requests["a/2"].prev_state is None
    assert requests["a/2"].transition == "restart"
    follow = requests["a/3"]
    assert follow.transition == "continue" and follow.prev_state["tempo"] > 0
    assert follow.prompt_audio.shape == (2, 48000) and follow.prompt_sample_rate == 48000
    # the anchor is the second before segment a/2's window ends, not its crossfade tail
    previous = sf.read(tmp_path / "a" / f"000002{AUDIO_SUFFIX}", dtype="float32")[0].T
    assert np.array_equal(follow.prompt_audio, previous[:, 48000:96000])
    assert follow.seed == segment_seed(3, "a", 3)
    # each segment reaches into the next window by max(overlap, next crossfade)
    assert requests["a/1"].duration_s == pytest.approx(2.0 + 1.5)
    assert requests["a/0"].duration_s == pytest.approx(2.0 + 0.5)
    assert requests["a/4"].duration_s == pytest.approx(2.0 + 0.5)
    segments = result.segments
    assert segments.columns == [
        "recording",
        "index",
        "audio_path",
        "midi_path",
        "duration_s",
        "sample_rate",
        "reused",
        "stems",
        "loudness_hops",
    ]
    assert segments["loudness_hops"].list.len().to_list()[:2] == [20, 20]  # 2 s windows
    assert segments["stems"].is_null().all()  # not asked for
    assert segments["duration_s"].to_list()[:2] == pytest.approx([2.5, 3.5])
    assert all(Path(p).is_file() for p in segments["midi_path"])


def test_same_seed_same_audio_and_resume_reuses(tmp_path):
    first = render_segments(FRAME, Spy(), SETTINGS, seed=5, work_dir=tmp_path / "one")
    second = render_segments(FRAME, Spy(), SETTINGS, seed=5, work_dir=tmp_path / "two")
    a, b = audio_of(first), audio_of(second)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    spy = Spy()
    again = render_segments(FRAME, spy, SETTINGS, seed=5, work_dir=tmp_path / "one")
    assert (again.rendered, again.reused) == (0, 7) and spy.batches == []
    assert again.segments["reused"].all()
    other_seed = render_segments(FRAME, Spy(), SETTINGS, seed=6, work_dir=tmp_path / "one")
    assert other_seed.rendered == 7


def test_stems_are_work_files_too_and_a_run_without_them_is_not_reused(tmp_path):
    """Asking for stems after a run without them renders again (the stems are missing);
    each segment's role files sum to its audio; removing the work files removes them."""
    frame = FRAME.head(2)
    plain = render_segments(frame, Spy(), SETTINGS, seed=5, work_dir=tmp_path)
    stems = SETTINGS.model_copy(update={"stems": True})
    spy = Spy()
    spy.inner = AUDIO_BACKENDS.create("synth", stems)
    split = render_segments(frame, spy, stems, seed=5, work_dir=tmp_path)
    assert (split.rendered, split.reused) == (2, 0)
    assert render_segments(frame, spy, stems, seed=5, work_dir=tmp_path).reused == 2
    assert render_segments(frame, Spy(), SETTINGS, seed=5, work_dir=tmp_path).reused == 2
    for row in split.segments.iter_rows(named=True):
        files = {role: Path(p) for role, p in row["stems"].items() if p is not None}
        assert set(files) <= set(STEM_ROLES) and len(files) >= 3
        total = sum(sf.read(p, dtype="float64")[0] for p in files.values())
        assert np.abs(total - sf.read(row["audio_path"], dtype="float64")[0]).max() < 1e-5
    assert plain.segments["audio_path"].to_list() == split.segments["audio_path"].to_list()
    removed = remove_work_files(split)
    assert removed == 2 * 2 + sum(
        sum(p is not None for p in row.values()) for row in split.segments["stems"]
    )
    assert sorted(p.suffix for p in tmp_path.rglob("*.*")) == [".mid", ".mid"]


def test_a_changed_caption_rerenders_its_run_from_there(tmp_path):
    render_segments(FRAME, Spy(), SETTINGS, seed=1, work_dir=tmp_path)
    edited = FRAME.with_columns(
        pl.when((pl.col("recording") == "a") & (pl.col("index") == 3))
        .then(pl.lit(CALM))
        .otherwise(pl.col("caption"))
        .alias("caption")
    )
    spy = Spy()
    result = render_segments(edited, spy, SETTINGS, seed=1, work_dir=tmp_path)
    assert sorted(r.key for batch in spy.batches for r in batch) == ["a/3", "a/4"]
    assert (result.rendered, result.reused) == (2, 5)


def test_a_failing_row_is_reported_and_its_successor_restarts(tmp_path):
    spy = Spy(fail_on="a/3")
    result = render_segments(FRAME, spy, SETTINGS, seed=1, work_dir=tmp_path)
    assert result.failures.to_dicts() == [
        {"recording": "a", "index": 3, "reason": "RuntimeError: cannot render a/3"}
    ]
    assert result.rendered == 6 and (("a", 3) not in audio_of(result))
    successor = [r for batch in spy.batches for r in batch if r.key == "a/4"][-1]
    assert successor.transition == "restart" and successor.prev_state is None
    # the rest of a/3's batch was rendered on its own
    assert {"a/1", "b/1"} <= {r.key for batch in spy.batches for r in batch}


def test_a_failing_row_alone_in_its_batch_is_reported_too(tmp_path):
    """Step 0 of recording a is alone when batch_size is 1: it must not crash the run."""
    spy = Spy(fail_on="a/0")
    settings = SETTINGS.model_copy(update={"batch_size": 1})
    result = render_segments(FRAME, spy, settings, seed=1, work_dir=tmp_path)
    assert result.failures["index"].to_list() == [0]
    assert result.rendered == 6


KILLED_RUN = """
import sys
from pathlib import Path
import polars as pl
from bgm_batch.audio.protocol import AUDIO_BACKENDS
from bgm_batch.stages.render import render_segments
from bgm_batch.settings import AudioSettings
settings = AudioSettings.model_validate_json(sys.argv[3])
frame = pl.read_parquet(sys.argv[1])
render_segments(frame, AUDIO_BACKENDS.create("synth", settings), settings, seed=9,
                work_dir=Path(sys.argv[2]))
"""


def test_resumes_after_sigkill(tmp_path):
    settings = SETTINGS.model_copy(update={"batch_size": 1})
    frame = planned([("k", i, "start" if i == 0 else "continue", CALM) for i in range(12)])
    frame.write_parquet(tmp_path / "frame.parquet")
    work = tmp_path / "work"
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            KILLED_RUN,
            str(tmp_path / "frame.parquet"),
            str(work),
            settings.model_dump_json(),
        ]
    )
    deadline = time.monotonic() + 120
    while len(list(work.glob("k/*.json"))) < 3 and time.monotonic() < deadline:
        assert process.poll() is None, "the render finished before it could be killed"
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    finished = len(list(work.glob("k/*.json")))
    assert 3 <= finished < 12
    backend = AUDIO_BACKENDS.create("synth", settings)
    resumed = render_segments(frame, backend, settings, seed=9, work_dir=work)
    assert resumed.reused == finished and resumed.rendered + resumed.reused == 12
    assert not list(work.glob("k/.*.tmp*"))
    fresh = render_segments(frame, backend, settings, seed=9, work_dir=tmp_path / "fresh")
    a, b = audio_of(resumed), audio_of(fresh)
    assert all(np.array_equal(a[k], b[k]) for k in b)
    metas = [json.loads(p.read_text()) for p in sorted(work.glob("k/*.json"))]
    assert [m["index"] for m in metas] == list(range(12))


def test_threads_render_the_same_audio_and_work_files_go_after_delivery(tmp_path):
    """12 windows in 4 runs: planned and spread over 2 threads, the segments equal those of
    a sequential walk on one; work files are 24-bit WAV; removing them keeps the MIDI."""
    rows = [
        ("p", i, "start" if i % 3 == 0 else "continue", (CALM, DARK)[i // 3 % 2]) for i in range(12)
    ]
    frame = planned(rows)
    results = {}
    for workers in (2, 1):
        settings = SETTINGS.model_copy(update={"render_workers": workers})
        backend = AUDIO_BACKENDS.create("synth", settings)
        assert render._workers(backend, settings, render._rows(frame, settings, 2, tmp_path)) == (
            workers
        )
        results[workers] = render_segments(
            frame, backend, settings, seed=2, work_dir=tmp_path / str(workers)
        )
    spread, alone = results[2], results[1]
    assert spread.rendered == alone.rendered == 12
    a, b = audio_of(spread), audio_of(alone)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in b)
    info = sf.info(spread.segments["audio_path"][0])
    assert (info.format, info.subtype) == ("WAV", "PCM_24")
    assert remove_work_files(spread) == 24
    left = sorted(p.suffix for p in (tmp_path / "2").rglob("*"))
    assert left == [""] + [".mid"] * 12


def test_planned_segments_render_in_any_order_to_the_sequential_audio(tmp_path):
    """The synth continues through its state alone: composed first (``_plan``), its
    segments rendered backwards give the files a sequential walk gives, chained keys
    included; a rerun plans nothing (every segment reused)."""
    backend = AUDIO_BACKENDS.create("synth", SETTINGS)
    identity = backend.identity()
    runs = render._rows(FRAME, SETTINGS, 5, tmp_path / "planned")
    outcome, jobs = render._plan(runs, backend, identity, SETTINGS)
    assert (outcome.reused, len(jobs)) == (0, 7)
    assert [j.anchor is None for j in jobs] == [True, False, True, False, False, True, False]
    done = render._render_jobs(jobs[::-1], backend, identity, SETTINGS)
    assert done.rendered == 7 and not done.failures
    sequential = render_segments(FRAME, Spy(), SETTINGS, seed=5, work_dir=tmp_path / "seq")
    for row in sequential.segments.iter_rows(named=True):
        planned_path = Path(str(row["audio_path"]).replace("/seq/", "/planned/"))
        assert np.array_equal(sf.read(planned_path)[0], sf.read(row["audio_path"])[0])
        keys = [
            json.loads(Path(p).with_suffix(".json").read_text())["key"]
            for p in (planned_path, row["audio_path"])
        ]
        assert keys[0] == keys[1]
    again, jobs = render._plan(runs, backend, identity, SETTINGS)
    assert (again.reused, jobs) == (7, [])
