"""Every command of ``bgm-batch`` through the real command line (the installed console script)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import soundfile as sf
from conftest import subprocess_env

from bgm_batch.testing.simulate import simulate_recording, write_capture_dir

BGM_BATCH = Path(sys.executable).with_name("bgm-batch")
START = "20240601093000"


def run(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run ``bgm-batch ARGS``; fail the test with its output if it does not exit 0."""
    done = subprocess.run(
        [str(BGM_BATCH), *map(str, args)], capture_output=True, text=True, env=env, timeout=600
    )
    assert done.returncode == 0, f"{args[0]} failed:\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A six-window capture folder and its imported recording."""
    root = tmp_path_factory.mktemp("cli")
    write_capture_dir(simulate_recording(6, seed=3), root / "capture", START)
    done = run("import-capture", root / "capture", "-o", root / "recording.parquet")
    assert "rows in: 6, accepted: 6, quarantined: 0" in done.stdout
    return root


def test_version_and_help_list_every_command() -> None:
    done = run("--help")
    for command in (
        "import-capture",
        "characterize",
        "score",
        "evaluate",
        "compare",
        "make-pairs",
        "finetune",
    ):
        assert command in done.stdout


def test_import_capture_writes_every_window(workspace: Path) -> None:
    frame = pl.read_parquet(workspace / "recording.parquet")
    assert frame.height == 6
    assert frame["recording"].unique().to_list() == [START]
    assert pl.read_parquet(workspace / "recording.quarantine.parquet").height == 0


def test_characterize_adds_algorithm_1_columns(workspace: Path) -> None:
    out = workspace / "characterized.parquet"
    done = run("characterize", workspace / "recording.parquet", "-o", out)
    frame = pl.read_parquet(out)
    assert {"combat", "info_str"} <= set(frame.columns) and frame.height == 6
    assert all(json.loads(s) for s in frame["info_str"])
    assert "combat windows" in done.stdout


def test_score_evaluate_and_compare(workspace: Path, prefect_api, isolated_cache) -> None:
    out = workspace / "scored"
    env = subprocess_env(prefect_api)
    run("score", workspace / "recording.parquet", "--out", out, "--no-progress", env=env)
    segments = pl.read_parquet(out / "segments.parquet")
    assert segments.height == 6 and (out / "track.flac").stat().st_size > 0

    refs = workspace / "refs.csv"
    segments.select("recording", "index", "caption").write_csv(refs)
    report = json.loads(
        run("evaluate", out / "segments.parquet", "--refs", refs, "--json", "--no-embed").stdout
    )
    assert report["n_pairs"] == 6 and report["bleu4"] == pytest.approx(100.0)

    table = workspace / "compare.parquet"
    run(
        "compare",
        workspace / "recording.parquet",
        "--refs",
        refs,
        "--no-embed",
        "--modes",
        "two-stage",
        "--out",
        table,
        env=env,
    )
    rows = pl.read_parquet(table)
    template = rows.filter(pl.col("backend").str.starts_with("template"))
    assert template.height == 1 and template["bleu4"][0] == pytest.approx(100.0)


def test_stems_sum_to_the_track(workspace: Path, isolated_cache) -> None:
    """``--stems``: one 48 kHz 24-bit WAV per role that plays, summing to ``track.flac``."""
    out = workspace / "stems-run"
    run("score", workspace / "recording.parquet", "--out", out, "--quiet", "--stems")
    stems = sorted((out / "stems").glob("*.wav"))
    assert {p.stem for p in stems} >= {"bass", "harmony", "pad"}
    track, rate = sf.read(out / "track.flac", dtype="float64")
    total = np.zeros_like(track)
    for path in stems:
        info = sf.info(path)
        assert (info.samplerate, info.subtype, info.frames) == (rate, "PCM_24", len(track))
        total += sf.read(path, dtype="float64")[0]
    assert rate == 48000 and np.abs(total - track).max() < 1e-5  # -100 dBFS: 24-bit rounding
    assert not list((out / "segments").rglob("*.wav"))  # work files, stems' included, are gone
    report = json.loads((out / "manifest.json").read_text())["stitch"]
    assert sorted(next(iter(report.values()))["stems"]) == [p.stem for p in stems]


def test_track_rate_renders_and_masters_at_that_rate(workspace: Path, isolated_cache) -> None:
    """``--track-rate 32000``: the synth renders at 32 kHz and track.flac is 32 kHz, as long
    as the recording plus the last segment's tail (``overlap_seconds``), at its loudness
    target and under its true-peak ceiling."""
    out = workspace / "rate-run"
    run("score", workspace / "recording.parquet", "--out", out, "--quiet", "--track-rate", "32000")
    info = sf.info(out / "track.flac")
    assert (info.samplerate, info.frames) == (32000, (6 * 10 + 1) * 32000)  # + the last tail
    report = next(iter(json.loads((out / "manifest.json").read_text())["stitch"].values()))
    assert report["loudness_lufs"] == pytest.approx(-16.0, abs=0.5)
    assert report["true_peak_dbtp"] <= -1.0


def test_make_pairs_then_finetune_a_tiny_model(workspace: Path) -> None:
    from bgm_batch.testing.tiny_llm import build_tiny_llm

    pairs = workspace / "pairs"
    run("make-pairs", pairs, workspace / "recording.parquet", "--val-fraction", "0")
    lines = (pairs / "train.jsonl").read_text().splitlines()
    assert lines and {"instruction", "input", "output"} <= set(json.loads(lines[0]))

    base = build_tiny_llm(workspace / "tiny-llm")
    adapter = workspace / "adapter"
    run(
        "finetune",
        pairs / "train.jsonl",
        "--base",
        base,
        "--out",
        adapter,
        "--epochs",
        "1",
        "--batch-size",
        "2",
        "--grad-accum",
        "1",
        "--max-length",
        "256",
        "--device",
        "cpu",
    )
    assert (adapter / "adapter_config.json").is_file()
    assert (adapter / "adapter_model.safetensors").stat().st_size > 0
