"""Check everything a scoring run needs before any stage runs, and report every problem at once.

A run that fails after twenty minutes of text generation because of a typo in ``--audio`` or a
video that is too short wastes the user's time; these checks cost seconds. Each problem is one
line naming the option or file and what to do. ``preflight`` collects them all and raises one
:class:`PreflightError`; the CLI prints one line per problem.

Models: a local folder must exist; a hub id must be in the hub cache when offline
(``--offline`` or the user's ``HF_HUB_OFFLINE=1``) and fetchable otherwise.
"""

from __future__ import annotations

import ctypes.util
import functools
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl

from bgm_batch.audio.protocol import STEM_ROLES
from bgm_batch.errors import BgmError
from bgm_batch.settings import Settings

if TYPE_CHECKING:
    from bgm_batch.data.ingest import IngestResult
    from bgm_batch.stages.mux import MediaInfo


class PreflightError(BgmError):
    """One or more problems found before any stage ran; ``problems`` holds one line each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


# option spelling per model setting, for messages
MODEL_OPTIONS = {"text.model": "--llm", "text.adapter": "--adapter", "audio.model": "--music-model"}
HUB_TIMEOUT_S = 10.0
HUB_BACKENDS = {"text": {"hf"}, "audio": {"musicgen", "audiocraft"}}


def offline(settings: Settings) -> bool:
    """Offline when the settings say so or the user set ``HF_HUB_OFFLINE``."""
    env = os.environ.get("HF_HUB_OFFLINE", "").strip().lower()
    return settings.offline or env in {"1", "true", "yes", "on"}


def models_in_use(settings: Settings) -> dict[str, str | None]:
    """The models the configured backends load: ``{"text.model": id-or-folder, ...}``."""
    models: dict[str, str | None] = {}
    if settings.text.backend in HUB_BACKENDS["text"]:
        models["text.model"] = settings.text.model
        adapter = settings.text.adapter
        models["text.adapter"] = str(adapter) if adapter else None
    if settings.audio.backend in HUB_BACKENDS["audio"]:
        models["audio.model"] = settings.audio.model
    return models


def _looks_local(ref: str) -> bool:
    """A path rather than a hub id ("org/name"): absolute, relative with ./ or ~, or deeper."""
    return ref.startswith((".", "/", "~")) or ref.count("/") > 1 or os.sep != "/" and os.sep in ref


def _hub_problem(repo_id: str, option: str, is_offline: bool) -> str | None:
    """None when ``repo_id`` can load: cached when offline, fetchable (and then cached) online."""
    from huggingface_hub import HfApi, try_to_load_from_cache

    instead = f"pass a local model folder with {option} DIR"
    if is_offline:
        if isinstance(try_to_load_from_cache(repo_id, "config.json"), str):
            return None
        return (
            f"{option} {repo_id}: not in the local hub cache and offline mode is on "
            f"(--offline or HF_HUB_OFFLINE=1); run once without it to download, or {instead}"
        )
    try:  # metadata only, one request without retries: the weights download when loading
        HfApi().model_info(repo_id, timeout=HUB_TIMEOUT_S)
    except Exception as exc:  # any hub failure (network, gated, missing) is the user's to fix
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"{option} {repo_id}: cannot be fetched from the hub ({reason}); {instead}"
    return None


def _model_problems(settings: Settings) -> list[str]:
    problems = []
    for role, ref in models_in_use(settings).items():
        option = MODEL_OPTIONS[role]
        if ref is None:
            continue
        if Path(ref).expanduser().exists():
            path = Path(ref).expanduser()
            if role != "text.adapter" and path.is_dir() and not (path / "config.json").is_file():
                problems.append(f"{option} {ref}: the folder holds no config.json")
        elif role == "text.adapter" or _looks_local(ref):
            problems.append(f"{option} {ref}: no such model folder")
        elif problem := _hub_problem(ref, option, offline(settings)):
            problems.append(problem)
    return problems


def _backend_problems(settings: Settings) -> list[str]:
    from bgm_batch.audio.protocol import AUDIO_BACKENDS
    from bgm_batch.library.score import index_dir_of
    from bgm_batch.text.protocol import TEXT_BACKENDS

    problems = []
    if settings.text.backend not in TEXT_BACKENDS.names():
        known = ", ".join(TEXT_BACKENDS.names())
        problems.append(f"--text {settings.text.backend}: no such text backend (known: {known})")
    index_dir = index_dir_of(settings.audio.backend)
    if index_dir is not None:
        if not index_dir.is_dir():
            problems.append(f"--audio {settings.audio.backend}: no such library index folder")
    elif settings.audio.backend not in AUDIO_BACKENDS.names():
        known = ", ".join([*AUDIO_BACKENDS.names(), "library:INDEX_DIR"])
        problems.append(f"--audio {settings.audio.backend}: no such audio backend (known: {known})")
    elif settings.audio.backend == "synth":
        problems += _synth_problems(settings)
    if settings.audio.stems and settings.audio.backend != "synth":
        problems.append(
            f"--stems: the {settings.audio.backend} audio backend has no instrument parts to "
            "split (stems come from the synth backend)"
        )
    return problems


def _synth_problems(settings: Settings) -> list[str]:
    from bgm_batch.audio.synth.backend import DEFAULT_SOUNDFONT

    problems = []
    if ctypes.util.find_library("fluidsynth") is None:
        problems.append(
            "FluidSynth is not installed (the synth backend plays through it): "
            "apt-get install fluidsynth"
        )
    soundfont = Path(settings.audio.soundfont or DEFAULT_SOUNDFONT)
    if not soundfont.is_file():
        problems.append(f"SoundFont {soundfont} not found: install it or set audio.soundfont")
    return problems


def _input_problems(input_path: Path) -> list[str]:
    if not input_path.exists():
        return [f"{input_path}: no such capture folder, capture file or recording Parquet"]
    return []


def _output_problems(out_dir: Path) -> list[str]:
    """The output folder must exist or be creatable, and be writable."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out_dir, prefix=".bgm-preflight-"):
            pass
    except OSError as exc:
        return [f"--out {out_dir}: cannot write there ({exc.strerror or exc})"]
    return []


@dataclass
class _Sources:
    """The input recording and the video, each read at most once whatever checks ask
    (ingest and a probe are cheap, but not free); a read that fails raises again."""

    input_path: Path
    settings: Settings
    recording: str | None
    video: Path | None

    @functools.cached_property
    def loaded(self) -> IngestResult:
        """The selected recording(s), as the import stage will read them."""
        from bgm_batch.data.ingest import read_recording
        from bgm_batch.stages.deliver import select_recording

        read = read_recording(self.input_path, self.settings.profile_model)
        return select_recording(read, self.recording)

    @functools.cached_property
    def video_info(self) -> MediaInfo:
        from bgm_batch.stages.mux import probe_media

        assert self.video is not None
        return probe_media(self.video)


def _recording_end_s(sources: _Sources) -> float:
    """Capture time at which the recording's last window ends."""
    loaded, input_path = sources.loaded, sources.input_path
    recordings = loaded.recordings()
    if len(recordings) > 1:
        raise BgmError(
            f"{input_path} holds {len(recordings)} recordings ({', '.join(recordings)}); "
            "pass --recording NAME to put one under the video"
        )
    if not recordings:
        raise BgmError(f"{input_path}: no usable window (see import-capture for the reasons)")
    return float(loaded.frame["end_s"].max())


def disk_needed(
    gameplay_s: float, video: tuple[float, int] | None, settings: Settings
) -> dict[str, float]:
    """Bytes a run writes under its output folder at most while it runs, by kind, for
    ``gameplay_s`` of recording (and a ``video`` of (seconds, bytes)): 24-bit work files of
    every segment (with its overlap tail; one more per instrument role with stems), the track
    (at most uncompressed 24-bit; the stems' WAV files), and with a video the mux's raw float
    scratch and the scored video (the picture copied, the audio at most 256 kbit/s).
    Measured on an hour (``docs/benchmarks.md``): the work files and the track peaked at
    1.8 GB, this says 2.2 GB."""
    audio = settings.audio
    per_second = 2 * 3 * audio.sample_rate * (1 + (len(STEM_ROLES) if audio.stems else 0))
    tail = 1 + audio.overlap_seconds / audio.segment_seconds
    needed = {"work files": gameplay_s * per_second * tail, "track": gameplay_s * per_second}
    if video is not None:
        seconds, size = video
        needed["mux scratch"] = seconds * 2 * 4 * settings.mux.sample_rate
        needed["scored video"] = size + seconds * 256_000 / 8
    return needed


def _disk_problems(out_dir: Path, sources: _Sources) -> list[str]:
    """Enough free space under ``out_dir`` for ``disk_needed``, less the work files a killed
    run left (a rerun reuses them). An input that cannot be read is left to the import stage
    to report."""
    from bgm_batch.stages.render import WORK_DIR

    try:
        loaded = sources.loaded
    except (BgmError, OSError, ValueError):
        return []
    ends = loaded.frame.group_by("recording").agg(pl.col("end_s").max())["end_s"]
    gameplay_s = float(ends.sum()) if len(ends) else 0.0
    video = sources.video
    media = (sources.video_info.duration_s, video.stat().st_size) if video else None
    needed = disk_needed(gameplay_s, media, sources.settings)
    total = sum(needed.values()) - _bytes_under(out_dir / WORK_DIR)
    free = shutil.disk_usage(out_dir).free
    if free >= total:
        return []
    parts = ", ".join(f"{kind} {_size(size)}" for kind, size in needed.items())
    return [
        f"--out {out_dir}: {_size(free)} free, but {_length(gameplay_s)} of gameplay needs about "
        f"{_size(total)} there while it is scored ({parts}): free some space or choose "
        "another --out"
    ]


def _length(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 60:.0f} min" if seconds >= 60 else f"{seconds:.0f} s"


def _size(size: float) -> str:
    return f"{size / 1e9:.1f} GB" if size >= 1e9 else f"{size / 1e6:.0f} MB"


def _bytes_under(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _video_problems(video: Path, sources: _Sources) -> list[str]:
    """ffmpeg present, the video readable with a picture, long enough for the recording (when
    the input exists to say how long that is)."""
    from bgm_batch.stages.mux import check_fit

    if not video.is_file():
        return [f"--video {video}: no such file"]
    if shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None:
        return ["ffmpeg/ffprobe not found on PATH (needed for --video): apt-get install ffmpeg"]
    try:
        info = sources.video_info
        if info.video_codec is None:
            return [f"--video {video}: holds no video stream"]
        if sources.input_path.exists():
            check_fit(info.duration_s, _recording_end_s(sources), sources.settings.mux)
    except (BgmError, ValueError) as exc:
        return [f"--video {exc}" if str(exc).startswith(str(video)) else str(exc)]
    return []


def preflight(
    settings: Settings,
    *,
    input_path: Path,
    out_dir: Path,
    video: Path | None = None,
    recording: str | None = None,
) -> None:
    """Raise :class:`PreflightError` listing every problem that would stop the run."""
    problems = _input_problems(Path(input_path))
    problems += _backend_problems(settings)
    problems += _model_problems(settings)
    problems += _output_problems(Path(out_dir))
    video = Path(video) if video is not None else None
    sources = _Sources(Path(input_path), settings, recording, video)
    if video is not None:
        problems += _video_problems(video, sources)
    if not problems:  # the input and the video are readable, the folder writable
        problems += _disk_problems(Path(out_dir), sources)
    if problems:
        raise PreflightError(problems)
