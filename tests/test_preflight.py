"""Pre-flight checks: every problem found in seconds, one line each, before any stage runs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import huggingface_hub.constants
import pytest

from bgm_batch.cli import build_parser, main
from bgm_batch.preflight import PreflightError, preflight
from bgm_batch.settings import Settings, load_settings

REPO = Path(__file__).parents[1]
SAMPLE = REPO / "data" / "sample" / "capture"


def _capture(dest: Path, windows: int) -> Path:
    """The bundled sample's first ``windows`` capture files (10 s each)."""
    dest.mkdir(parents=True)
    for index in range(windows):
        name = f"20240601093000-{index}.json"
        shutil.copy(SAMPLE / name, dest / name)
    return dest


def _video(path: Path, seconds: float) -> Path:
    args = ["ffmpeg", "-v", "error", "-y", "-f", "lavfi"]
    args += ["-i", f"testsrc=size=64x48:rate=5:duration={seconds}", "-c:v", "libx264"]
    subprocess.run([*args, "-preset", "ultrafast", str(path)], check=True)
    return path


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _capture(tmp_path_factory.mktemp("in") / "capture", 3)  # 30 s


@pytest.fixture(scope="module")
def short_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _video(tmp_path_factory.mktemp("video") / "short.mp4", 12.0)


def _problems(settings: Settings, capture: Path, out: Path, **kwargs) -> list[str]:
    with pytest.raises(PreflightError) as caught:
        preflight(settings, input_path=capture, out_dir=out, **kwargs)
    return caught.value.problems


def test_a_good_run_passes(capture: Path, tmp_path: Path) -> None:
    preflight(Settings(), input_path=capture, out_dir=tmp_path / "out")
    assert (tmp_path / "out").is_dir() and not list((tmp_path / "out").iterdir())


def test_unknown_backends_are_named_with_the_known_ones(capture: Path, tmp_path: Path) -> None:
    settings = load_settings(None, {"text": {"backend": "gpt9"}, "audio": {"backend": "banjo"}})
    text, audio = _problems(settings, capture, tmp_path)
    assert text.startswith("--text gpt9: no such text backend (known: ") and "template" in text
    assert audio.startswith("--audio banjo: no such audio backend (known: ") and "synth" in audio


def test_stems_need_a_backend_that_knows_its_parts(capture: Path, tmp_path: Path) -> None:
    local = tmp_path / "musicgen"
    local.mkdir()
    (local / "config.json").write_text("{}")
    settings = load_settings(
        None, {"audio": {"backend": "musicgen", "model": str(local), "stems": True}}
    )
    problems = _problems(settings, capture, tmp_path / "out")
    assert any(p.startswith("--stems: the musicgen audio backend has no") for p in problems)
    preflight(load_settings(None, {"audio": {"stems": True}}), input_path=capture, out_dir=tmp_path)


def test_model_folders_must_exist_and_hold_a_config(capture: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty-model"
    empty.mkdir()
    settings = load_settings(
        None,
        {
            "text": {"backend": "hf", "model": str(tmp_path / "nope"), "adapter": "./no-adapter"},
            "audio": {"backend": "musicgen", "model": str(empty)},
        },
    )
    assert _problems(settings, capture, tmp_path / "out") == [
        f"--llm {tmp_path / 'nope'}: no such model folder",
        "--adapter no-adapter: no such model folder",
        f"--music-model {empty}: the folder holds no config.json",
    ]
    (empty / "config.json").write_text("{}")
    settings = load_settings(None, {"audio": {"backend": "musicgen", "model": str(empty)}})
    preflight(settings, input_path=capture, out_dir=tmp_path / "out")


def test_a_hub_id_offline_must_be_cached(
    capture: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    settings = load_settings(None, {"text": {"backend": "hf", "model": "org/llm"}, "offline": True})
    (problem,) = _problems(settings, capture, tmp_path / "out")
    assert problem.startswith("--llm org/llm: not in the local hub cache and offline mode is on")
    assert problem.endswith("pass a local model folder with --llm DIR")
    cached = tmp_path / "hub" / "models--org--llm"
    (cached / "refs").mkdir(parents=True)
    (cached / "refs" / "main").write_text("abc123")
    (cached / "snapshots" / "abc123").mkdir(parents=True)
    (cached / "snapshots" / "abc123" / "config.json").write_text("{}")
    preflight(settings, input_path=capture, out_dir=tmp_path / "out")


def test_a_hub_id_online_that_cannot_be_fetched_fails_fast(
    capture: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")  # refused
    settings = load_settings(None, {"audio": {"backend": "musicgen", "model": "org/music"}})
    started = time.perf_counter()
    (problem,) = _problems(settings, capture, tmp_path / "out")
    assert time.perf_counter() - started < 15
    assert problem.startswith("--music-model org/music: cannot be fetched from the hub (")
    assert problem.endswith("pass a local model folder with --music-model DIR")


def test_video_unreadable_short_or_missing(
    capture: Path, short_video: Path, tmp_path: Path
) -> None:
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video" * 50)
    (problem,) = _problems(Settings(), capture, tmp_path / "out", video=broken)
    assert problem.startswith(f"--video {broken}: ffprobe cannot read it: ")
    (problem,) = _problems(Settings(), capture, tmp_path / "out", video=short_video)
    assert "lasts 12.0 s but the recording 30.0 s" in problem and "--fit trim" in problem
    trim = load_settings(None, {"mux": {"fit": "trim"}})
    preflight(trim, input_path=capture, out_dir=tmp_path / "out", video=short_video)
    early = load_settings(None, {"mux": {"video_offset_seconds": -18.5}})
    preflight(early, input_path=capture, out_dir=tmp_path / "out", video=short_video)
    missing = tmp_path / "missing.mp4"
    settings = load_settings(None, {"audio": {"backend": "banjo"}})
    problems = _problems(settings, capture, tmp_path / "out", video=missing)
    assert problems[-1] == f"--video {missing}: no such file"
    # every problem at once: a bad backend does not hide a bad video
    problems = _problems(settings, tmp_path / "no-input", tmp_path / "out", video=broken)
    assert [p.split(":")[0] for p in problems] == [
        str(tmp_path / "no-input"),
        "--audio banjo",
        f"--video {broken}",
    ]


def test_output_folder_must_be_writable(capture: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    (problem,) = _problems(Settings(), capture, blocker / "out")
    assert problem.startswith(f"--out {blocker / 'out'}: cannot write there (")


def test_too_little_disk_is_refused_with_what_the_run_needs(
    capture: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import bgm_batch.preflight as checks

    out, free = tmp_path / "out", {"bytes": 10**6}
    monkeypatch.setattr(checks.shutil, "disk_usage", lambda _: SimpleNamespace(free=free["bytes"]))
    (problem,) = _problems(Settings(), capture, out)
    needed = checks.disk_needed(30.0, None, Settings())  # the capture's three windows
    assert problem == (
        f"--out {out}: 1 MB free, but 30 s of gameplay needs about "
        f"{sum(needed.values()) / 1e6:.0f} MB there while it is scored (work files "
        f"{needed['work files'] / 1e6:.0f} MB, track {needed['track'] / 1e6:.0f} MB): "
        "free some space or choose another --out"
    )
    # the work files of a killed run are reused: only the rest must fit
    free["bytes"] = int(sum(needed.values())) - 2 * 10**6
    (out / "segments").mkdir()
    (out / "segments" / "000000.wav").write_bytes(bytes(3 * 10**6))
    preflight(Settings(), input_path=capture, out_dir=out)


def test_score_fails_in_seconds_with_one_line_per_problem(
    capture: Path, short_video: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "out"
    started = time.perf_counter()
    code = main(
        ["score", str(capture), "--out", str(out), "--audio", "banjo", "--text", "hf"]
        + ["--llm", str(tmp_path / "missing-model")]
    )
    assert time.perf_counter() - started < 20
    err = capsys.readouterr().err.splitlines()
    assert code == 2
    assert err == [
        "bgm-batch: error: --audio banjo: no such audio backend (known: "
        + err[0].split("(known: ")[1],
        f"bgm-batch: error: --llm {tmp_path / 'missing-model'}: no such model folder",
    ]
    assert not list(out.iterdir())  # nothing rendered, nothing written

    code = main(["score", str(capture), "--out", str(out), "--video", str(short_video)])
    (line,) = capsys.readouterr().err.splitlines()
    assert code == 2 and line.startswith("bgm-batch: error: the video lasts 12.0 s")
    assert not list(out.iterdir())


def test_alignment_and_mix_flags_set_the_settings(tmp_path: Path) -> None:
    from bgm_batch.cli import _score_overrides

    args = build_parser().parse_args(
        ["score", "in", "--out", "o", "--video-offset", "-40", "--fit", "trim"]
        + ["--target-lufs", "-16", "--duck-depth", "6", "--cache-dir", str(tmp_path), "--offline"]
    )
    settings = load_settings(None, _score_overrides(args))
    assert settings.mux.video_offset_seconds == -40.0 and settings.mux.fit == "trim"
    assert (settings.mux.target_lufs, settings.mux.duck_depth_db) == (-16.0, 6.0)
    assert settings.offline and settings.cache_dir == tmp_path
    assert settings.text.cache_dir == tmp_path / "text"  # never ./.cache
    defaults = load_settings(
        None, _score_overrides(build_parser().parse_args(["score", "in", "--out", "o"]))
    )
    assert defaults.mux.fit == "error" and not defaults.offline
    assert not defaults.text.cache_dir.is_relative_to(Path.cwd())


def test_config_show_names_every_setting_with_its_sources(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    config = tmp_path / "bgm.yaml"
    config.write_text(json.dumps({"mux": {"duck_depth_db": 9.0}}))
    monkeypatch.setenv("BGM_MUX__TARGET_LUFS", "-18")
    assert main(["config", "show", "--config", str(config)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "mux.target_lufs = -18.0  (BGM_MUX__TARGET_LUFS; --target-lufs)" in lines
    assert "mux.duck_depth_db = 9.0  (BGM_MUX__DUCK_DEPTH_DB; --duck-depth)" in lines
    assert "text.backend = 'template'  (BGM_TEXT__BACKEND; --text)" in lines
    settings = [line.split(" = ")[0] for line in lines if not line.startswith("#")]
    assert {"seed", "audio.sample_rate", "mux.fit", "cache_dir"} <= set(settings)


def test_the_hub_is_offline_only_when_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bgm_batch.cli import _prepare_environment

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect"))  # already configured
    _prepare_environment(load_settings(None, {"cache_dir": str(tmp_path)}))
    assert "HF_HUB_OFFLINE" not in os.environ  # hub ids may download
    _prepare_environment(load_settings(None, {"cache_dir": str(tmp_path), "offline": True}))
    assert os.environ["HF_HUB_OFFLINE"] == "1"
