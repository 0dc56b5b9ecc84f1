"""Every error a user can fix is one line ``bgm-batch: error: ...`` and a non-zero exit;
a traceback only with ``--debug``; Ctrl-C and SIGTERM say how to resume."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import REPO, subprocess_env
from pydantic import ValidationError

from bgm_batch.cli import main

SAMPLE = REPO / "data" / "sample" / "capture"


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    """The single error line the command printed (and no traceback)."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("bgm-batch: error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0].removeprefix("bgm-batch: error: ")


@pytest.fixture
def capture(tmp_path: Path) -> Path:
    folder = tmp_path / "cap"
    folder.mkdir()
    for path in sorted(SAMPLE.glob("*.json"))[:3]:
        shutil.copy(path, folder / path.name)
    return folder


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"", "empty CSV"),
        (b'recording,index,caption\n1,2,3,4\n"x', "cannot read the input"),
        (b"\xff\xfe\x00\x01binary\x00", "cannot read the input"),
    ],
)
def test_evaluate_on_empty_malformed_or_binary_files(tmp_path, capsys, content, words) -> None:
    bad = tmp_path / "pred.csv"
    bad.write_bytes(content)
    code = main(["evaluate", str(bad), "--refs", str(bad), "--no-embed"])
    line = one_error_line(capsys)
    assert code == 1 and (words in line or "lack column" in line), line


def test_evaluate_on_an_empty_parquet_file(tmp_path, capsys) -> None:
    (tmp_path / "pred.parquet").write_bytes(b"")
    assert (
        main(["evaluate", str(tmp_path / "pred.parquet"), "--refs", str(tmp_path / "x.csv")]) == 1
    )
    assert "cannot read the input" in one_error_line(capsys)


def test_config_errors_are_one_line_per_field(tmp_path, capture, capsys) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("seed: seven\naudio:\n  batch_size: 0\n")
    assert main(["score", str(capture), "--out", str(tmp_path / "o"), "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "bgm-batch: error: setting seed: Input should be a valid integer" in err
    assert (
        "bgm-batch: error: setting audio.batch_size: Input should be greater than 0 (got 0)" in err
    )


def test_out_that_is_a_file(tmp_path, capture, capsys) -> None:
    (tmp_path / "taken").write_text("x")
    assert main(["score", str(capture), "--out", str(tmp_path / "taken")]) != 0
    assert str(tmp_path / "taken") in one_error_line(capsys)


def test_debug_shows_the_traceback(tmp_path, capture) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("audio:\n  batch_size: 0\n")
    argv = ["score", str(capture), "--out", str(tmp_path / "o"), "--config", str(config)]
    with pytest.raises(ValidationError, match="batch_size"):
        main(["--debug", *argv])


@pytest.fixture
def small_mount(tmp_path: Path) -> Iterator[callable]:
    """Mount a tiny tmpfs (root only; skipped elsewhere) and unmount it afterwards."""
    mounted: list[Path] = []

    def mount(options: str) -> Path:
        point = tmp_path / f"mnt{len(mounted)}"
        point.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)])
        if done.returncode != 0:
            pytest.skip("cannot mount a tmpfs here (needs root)")
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        subprocess.run(["umount", str(point)], check=False)


def test_disk_full_names_the_path_and_the_free_space(small_mount, capsys) -> None:
    full = small_mount("size=8k")
    assert main(["import-capture", str(SAMPLE), "-o", str(full / "rec.parquet")]) == 1
    line = one_error_line(capsys)
    assert f"{full}/" in line and "disk full (0.0 MB free)" in line


def test_read_only_output(small_mount, capture, capsys) -> None:
    read_only = small_mount("ro,size=64k")
    assert main(["import-capture", str(capture), "-o", str(read_only / "rec.parquet")]) == 1
    assert "read-only file system" in one_error_line(capsys)


@pytest.mark.parametrize(
    "sig", [signal.SIGINT, pytest.param(signal.SIGTERM, marks=pytest.mark.slow)]
)  # SIGTERM's unwinding is also tested fast, in tests/stages/test_publish.py
def test_interrupt_says_how_to_resume_and_releases_the_output(prefect_api, tmp_path, sig) -> None:
    out = tmp_path / "out"
    run = subprocess.Popen(
        [sys.executable, "-m", "bgm_batch.cli", "score", str(SAMPLE), "--out", str(out)],
        env=subprocess_env(prefect_api, BGM_TEXT__CACHE_DIR=str(tmp_path / "cache")),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not (out / ".bgm-batch" / "lock").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)  # into the run
    run.send_signal(sig)
    err = run.communicate(timeout=120)[1]
    assert run.returncode == 130, err
    assert "bgm-batch: interrupted; rerun the same command to resume" in err
    assert "Traceback" not in err
    assert not (out / ".bgm-batch" / "lock").exists()
    assert not (out / ".bgm-batch" / "tmp").exists()


def test_a_second_run_into_the_same_folder_is_refused(tmp_path, capture, capsys) -> None:
    out = tmp_path / "out"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(out)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        assert main(["score", str(capture), "--out", str(out), "--seed", "5"]) == 1
        line = one_error_line(capsys)
        assert f"another run is writing here (pid {holder.pid} on " in line
        assert "bgm-batch score --seed 3" in line
    finally:
        holder.terminate()
        holder.wait()


HOLD_LOCK = """
import sys, time
from pathlib import Path
from bgm_batch.stages.publish import run_lock
with run_lock(Path(sys.argv[1]), ["bgm-batch", "score", "--seed", "3"]):
    print("held", flush=True)
    time.sleep(120)
"""
