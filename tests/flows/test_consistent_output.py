"""One run, one consistent output folder, through the real CLI and flow: a failed rerun leaves
the previous output whole, a rerun without a video drops the old scored video, gaps and
rejected windows are told, and a video under several recordings is refused in one line."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import REPO

from bgm_batch.cli import main
from bgm_batch.testing.testvideo import make_test_video

SAMPLE = REPO / "data" / "sample" / "capture"
REC = "20240601093000"


def snapshot_files(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}


def truncated_video(folder: Path, seconds: float) -> Path:
    """A video whose header (written first) announces ``seconds`` but whose frames stop early."""
    whole = make_test_video(folder / "whole.mp4", seconds, width=96, height=64, fps=5)
    faststart = folder / "faststart.mp4"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-i", str(whole), "-c", "copy"]
        + ["-movflags", "+faststart", str(faststart)],
        check=True,
    )
    cut = folder / "cut.mp4"
    cut.write_bytes(faststart.read_bytes()[: faststart.stat().st_size * 45 // 100])
    return cut


@pytest.mark.slow
def test_reruns_into_one_folder_never_mix(prefect_api, isolated_cache, tmp_path, capsys) -> None:
    capture = tmp_path / "cap"
    capture.mkdir()
    for i in (0, 1, 3):  # window 2 missing: a gap
        shutil.copy(SAMPLE / f"{REC}-{i}.json", capture / f"{REC}-{i}.json")
    (capture / f"{REC}-4.json").write_text('{"Index": NaN}')
    out = tmp_path / "out"
    score = ["score", str(capture), "--out", str(out), "--no-progress"]

    assert main(score) == 0
    err = capsys.readouterr().err
    assert "window(s) missing between index 0 and 3" in err
    assert f"rejected: {REC}-4.json, window 4, field Index" in err
    manifest = json.loads((out / "manifest.json").read_text())
    assert any("missing" in w for w in manifest["reports"]["ingest"]["warnings"])
    first = snapshot_files(out)
    assert "track.flac" in first and "scored.mp4" not in first

    # a rerun with another seed and a truncated video fails after the mux: nothing changes
    assert main([*score, "--seed", "5", "--video", str(truncated_video(tmp_path, 40.0))]) != 0
    assert "truncated" in capsys.readouterr().err
    assert snapshot_files(out) == first

    # with a good video, then without: the old scored.mp4 does not outlive its run
    video = make_test_video(tmp_path / "good.mp4", 40.0, width=96, height=64, fps=5)
    assert main([*score, "--video", str(video)]) == 0
    assert (out / "scored.mp4").exists()
    assert main(score) == 0
    assert not (out / "scored.mp4").exists()
    assert "mux" not in json.loads((out / "manifest.json").read_text())["reports"]
    assert not (out / ".bgm-batch" / "staging").exists()
    assert not (out / ".bgm-batch" / "lock").exists()

    # several recordings under one video: refused, in one line
    shutil.copy(SAMPLE / f"{REC}-0.json", capture / "20240602100000-0.json")
    capsys.readouterr()
    assert main([*score, "--video", str(video)]) != 0
    err = capsys.readouterr().err
    assert "--recording" in err and "Traceback" not in err
