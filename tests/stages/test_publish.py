"""One run, one consistent output: staging, publish, stale deliverables, the lock, temp files."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from bgm_batch.errors import BgmError
from bgm_batch.stages import publish


def deliver(out: Path, files: dict[str, str]) -> list[str]:
    """One run: its files written to staging, then published."""
    staging = publish.fresh_staging(out)
    for name, text in files.items():
        (staging / name).write_text(text)
    return publish.publish(staging, out)


def test_publish_moves_everything_and_drops_what_the_run_did_not_make(tmp_path: Path) -> None:
    out = tmp_path / "out"
    deliver(out, {"track.flac": "1", "scored.mp4": "1", "manifest.json": "1"})
    (out / "my-notes.txt").write_text("the user's own file")
    names = deliver(out, {"track.flac": "2", "manifest.json": "2"})  # rerun without --video
    assert names == ["manifest.json", "track.flac"]
    assert sorted(p.name for p in out.iterdir()) == [
        ".bgm-batch",
        "manifest.json",
        "my-notes.txt",
        "track.flac",
    ]
    assert (out / "track.flac").read_text() == (out / "manifest.json").read_text() == "2"
    assert not (out / ".bgm-batch" / "staging").exists()


def test_a_folder_from_before_publishing_loses_its_stale_deliverables(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    for name in ("scored.mp4", "track-a.flac", "timeline-a.otio", "manifest.json", "keep.txt"):
        (out / name).write_text("old")
    deliver(out, {"track.flac": "new", "manifest.json": "new"})
    assert sorted(p.name for p in out.iterdir() if p.is_file()) == [
        "keep.txt",
        "manifest.json",
        "track.flac",
    ]


def test_a_failed_run_leaves_the_previous_output_untouched(tmp_path: Path) -> None:
    out = tmp_path / "out"
    deliver(out, {"track.flac": "good", "manifest.json": "good"})
    staging = publish.fresh_staging(out)
    (staging / "track.flac").write_text("half")  # the run dies before publishing
    assert (out / "track.flac").read_text() == "good"
    assert publish.fresh_staging(out) == staging and not any(staging.iterdir())  # next run


def test_out_that_is_a_file_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(BgmError, match="must be a folder"):
        publish.fresh_staging(tmp_path / "file")


def test_temp_files_live_under_out_and_go_with_the_run(tmp_path: Path) -> None:
    out = tmp_path / "out"
    before = tempfile.gettempdir()
    (out / ".bgm-batch" / "tmp").mkdir(parents=True)
    (out / ".bgm-batch" / "tmp" / "left-by-a-killed-run").write_text("x")
    with publish.temp_files_under(out) as tmp:
        assert not any(tmp.iterdir())
        assert Path(tempfile.mkdtemp()).parent == tmp
        child = subprocess.run(
            [sys.executable, "-c", "import tempfile; print(tempfile.gettempdir())"],
            capture_output=True,
            text=True,
            check=True,
        )
        assert child.stdout.strip() == str(tmp)
    assert not tmp.exists() and tempfile.gettempdir() == before


HOLDER = """
import sys, time, subprocess
from pathlib import Path
from bgm_batch.stages import publish
with publish.run_lock(Path(sys.argv[1]), ["bgm-batch", "score", "--seed", "7"]):
    child = subprocess.Popen(["sleep", "300"])
    print(child.pid, flush=True)
    time.sleep(300)
"""


def hold_lock(out: Path, **popen) -> tuple[subprocess.Popen, int]:
    """A real second run holding the lock, with a child of its own; returns (run, child pid)."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(out)], stdout=subprocess.PIPE, text=True, **popen
    )
    return holder, int(holder.stdout.readline())


def take(out: Path, command: list[str]) -> None:
    """Take the lock and let it go again."""
    with publish.run_lock(out, command):
        pass


def gone(pid: int) -> bool:
    """True when ``pid`` has exited (a zombie waiting for a reaper counts as gone)."""
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:")[1].split()[0] == "Z"
    except (FileNotFoundError, IndexError):
        return True


def test_a_second_run_is_stopped_with_the_other_runs_name(tmp_path: Path) -> None:
    holder, child = hold_lock(tmp_path / "out")
    try:
        with pytest.raises(publish.OutputLockedError) as error:
            take(tmp_path / "out", ["second"])
        assert f"pid {holder.pid}" in str(error.value) and "--seed 7" in str(error.value)
    finally:
        holder.terminate()
        holder.wait()
        os.kill(child, signal.SIGTERM)
    with publish.run_lock(tmp_path / "out", ["third"]) as lock:  # released by its owner's exit
        assert json.loads(lock.read_text())["command"] == "third"
    assert not lock.exists()


def test_kill_9_leaves_a_stale_lock_that_the_next_run_takes_and_reaps(tmp_path: Path) -> None:
    out = tmp_path / "out"
    holder, child = hold_lock(out, start_new_session=True)  # leads its group, like a shell job
    holder.kill()
    holder.wait()
    assert not gone(child), "the orphaned child outlives a kill -9"
    with publish.run_lock(out, ["next"]):
        deadline = time.monotonic() + 10
        while not gone(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert gone(child), "the next run stops what the killed run left running"


def test_an_unreadable_fresh_lock_counts_as_held(tmp_path: Path) -> None:
    lock = tmp_path / "out" / ".bgm-batch" / "lock"
    lock.parent.mkdir(parents=True)
    lock.write_text("")  # a run between creating and writing its lock
    with pytest.raises(publish.OutputLockedError, match="being written"):
        take(tmp_path / "out", ["x"])
    old = time.time() - 60
    os.utime(lock, (old, old))  # ...or one killed right there, long ago
    with publish.run_lock(tmp_path / "out", ["x"]):
        pass


INTERRUPTED = """
import signal, subprocess, sys, time
from pathlib import Path
from bgm_batch.cli import _raise_interrupt
from bgm_batch.stages import publish
signal.signal(signal.SIGTERM, _raise_interrupt)  # as bgm-batch's main() does
with publish.run_lock(Path(sys.argv[1]), ["bgm-batch", "score"]):
    child = subprocess.Popen(["sleep", "300"])  # like ffmpeg-python: never waited for
    shell = subprocess.Popen(["sh", "-c", "sleep 300 & echo $!; wait"], stdout=subprocess.PIPE)
    grandchild = shell.stdout.readline().decode().strip()
    print(child.pid, shell.pid, grandchild, flush=True)
    time.sleep(300)
"""


def test_sigterm_ends_the_runs_children_and_grandchildren(tmp_path: Path) -> None:
    run = subprocess.Popen(
        [sys.executable, "-c", INTERRUPTED, str(tmp_path / "out")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    pids = [int(pid) for pid in run.stdout.readline().split()]
    assert len(pids) == 3 and not any(gone(pid) for pid in pids)
    run.send_signal(signal.SIGTERM)
    run.wait(timeout=30)
    deadline = time.monotonic() + 10
    while not all(gone(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert all(gone(pid) for pid in pids)
    assert "KeyboardInterrupt" in run.stderr.read()  # it unwound through the lock
    assert not (tmp_path / "out" / ".bgm-batch" / "lock").exists()


WRITER = "import time; time.sleep(300)"


def test_kill_9_of_a_run_outside_a_group_still_stops_its_writers(tmp_path: Path) -> None:
    """ffmpeg left writing into the staging folder by a run killed with -9 (the run was not a
    group leader, as under a script) is stopped by the next run; a process that only names the
    output folder's other files is left alone."""
    out = tmp_path / "out"
    private = out / ".bgm-batch" / "staging"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER.replace('["sleep", "300"]', "sys.argv[2:]"), str(out)]
        + [sys.executable, "-c", WRITER, str(private / ".scored.1.tmp.mp4")],
        stdout=subprocess.PIPE,
        text=True,
    )
    writer = int(holder.stdout.readline())
    bystander = subprocess.Popen([sys.executable, "-c", WRITER, str(out / "track.flac")])
    holder.kill()
    holder.wait()
    try:
        assert not gone(writer)
        with publish.run_lock(out, ["next"]):
            deadline = time.monotonic() + 10
            while not gone(writer) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert gone(writer) and bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()
        with contextlib.suppress(ProcessLookupError):
            os.kill(writer, signal.SIGKILL)
