"""One typed settings object for the whole pipeline.

Sources, strongest first: explicit overrides (the CLI's flags), environment variables
(``BGM_SEED=3``, ``BGM_TEXT__BACKEND=hf``: nested fields joined by ``__``), a YAML or TOML
config file (``--config``), then the defaults below. Stages receive the part they need;
nothing reads configuration deep inside a stage.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

import platformdirs
import yaml
from pydantic import BaseModel, Field, model_validator
from pydantic_settings import BaseSettings, InitSettingsSource, SettingsConfigDict

from bgm_batch.data.game_profile import DEFAULT_WINDOW_SECONDS, Profile, load_profile


class TextSettings(BaseModel):
    """Stage 1 and 2: snapshot -> narrative -> music description."""

    backend: str = "template"
    model: str = "meta-llama/Llama-2-7b-chat-hf"
    revision: str | None = None
    adapter: Path | None = None
    mode: Literal["two-stage", "direct"] = "two-stage"
    prompt_set: str = "paper"
    narrative_max_new_tokens: int = 80
    caption_max_new_tokens: int = 40
    token_budget: int = 8192  # prompt + new tokens per generation batch
    do_sample: bool = False
    temperature: float = 0.7
    top_p: float = 0.9
    device: str = "auto"
    cache_dir: Path | None = None  # in a full Settings: <cache_dir>/text unless set; None: off


class AudioSettings(BaseModel):
    """Rendering, continuation and stitching of the per-window music."""

    backend: str = "synth"
    model: str = "facebook/musicgen-small"
    # One window of the capture. In a full ``Settings`` it comes from the game profile
    # (``window_seconds``); setting it to anything else is rejected there.
    segment_seconds: float = Field(DEFAULT_WINDOW_SECONDS, gt=0)
    overlap_seconds: float = 1.0
    prompt_seconds: float = 3.0  # tail of the previous segment fed as the melodic anchor
    guidance_scale: float = 3.0
    top_k: int = 250
    batch_size: int = Field(16, gt=0)
    sample_rate: int = Field(48000, ge=8000)  # of the render and track.flac
    target_lufs: float = -16.0
    true_peak_dbtp: float = -1.0
    soundfont: Path | None = None
    device: str = "auto"
    render_workers: int = Field(0, ge=0)  # render threads for the synth; 0: one per core
    stems: bool = False  # per-instrument-role stems of the track (synth: it knows its parts)


class IngestSettings(BaseModel):
    """Limits that keep one hostile input file from costing the whole run (see data/ingest)."""

    max_recording_hours: float = Field(24.0, gt=0)  # a window index beyond this is quarantined
    max_file_bytes: int = Field(1_000_000, gt=0)  # a capture file is ~1.5 kB
    raw_excerpt_chars: int = Field(4096, ge=0)  # raw text kept per quarantined window


class MuxSettings(BaseModel):
    """Putting the track under the gameplay video and mastering the final mix."""

    target_lufs: float = Field(-14.0, le=0)  # integrated loudness of scored.mp4 (video platforms)
    true_peak_dbtp: float = Field(-1.0, le=0)  # true-peak ceiling of scored.mp4
    sample_rate: int = Field(48000, ge=8000)  # of scored.mp4's audio, whatever the source's
    music_gain_db: float = -6.0  # music relative to track.flac, before ducking and mastering
    duck: bool = True
    duck_depth_db: float = Field(12.0, ge=0)  # music reduction while the game audio is loud
    duck_threshold: float = Field(0.03, gt=0, le=1)  # game audio RMS level that counts as loud
    duck_attack_ms: float = Field(80.0, gt=0)
    duck_release_ms: float = Field(600.0, gt=0)
    fade_out_seconds: float = Field(3.0, ge=0)
    video_offset_seconds: float = 0.0  # where capture time 0 falls in the video
    fit: Literal["trim", "error"] = "error"  # a video shorter than the recording: cut or refuse
    short_video_tolerance_seconds: float = Field(1.0, ge=0)  # shorter by this much is not "short"
    max_length_mismatch_seconds: float = 60.0  # a longer video: how much music may be looped
    max_stream_mismatch_seconds: float = Field(0.5, gt=0)  # scored.mp4 video vs audio vs input


class ArchiveSettings(BaseModel):
    """Where ``bgm-batch archive`` runs; none of it changes what a recording's outputs are."""

    engine: Literal["local", "dask", "ray"] = "local"
    workers: int = Field(1, ge=1)  # local threads, or the local Dask/Ray cluster's workers
    address: str | None = None  # an existing Dask scheduler (tcp://...) or Ray cluster (ray://...)
    model_gpus: float = Field(0.0, ge=0)  # GPUs each model task requests on the cluster


class LibrarySettings(BaseModel):
    """Library mode (``--audio library:INDEX_DIR``): ranking, refinement, explanations."""

    clap_model: str | None = None  # ClapModel hub id or folder for `library index` (optional)
    feedback: str | None = None  # a refinement turn, e.g. "less vocals, more epic strings"
    feedback_for: str | None = None  # its scope: a scene substring or a time range "60-180"
    text_weight: float = 1.0  # description embedding vs. the stretch's captions
    lexical_weight: float = 0.3  # BM25 of the stretch's words in the description (0..1)
    feature_weight: float = 0.5  # measured energy, tempo and mode vs. what the captions ask
    clap_weight: float = 0.5  # CLAP audio vs. caption text (indexes built with a CLAP model)
    fit_margin: float = Field(0.15, ge=0)  # tracks this close to the best count as fitting
    llm_reasons: bool = True  # with a text backend other than template, the LLM writes reasons
    device: str = "cpu"


class Settings(BaseSettings):
    """Everything a run can be told; see the module docstring for where values come from."""

    model_config = SettingsConfigDict(env_prefix="BGM_", env_nested_delimiter="__", extra="forbid")

    seed: int = 0
    profile: str = "minecraft"  # a profile name under schemas/profiles or a path to a YAML file
    progress: bool = True
    keep_work: bool = False  # keep the per-window audio work files after a successful run
    offline: bool = False  # never contact the model hub (as HF_HUB_OFFLINE=1 does)
    # the text cache (<cache_dir>/text) and Prefect's home (<cache_dir>/prefect)
    cache_dir: Path = Field(default_factory=lambda: Path(platformdirs.user_cache_dir("bgm-batch")))
    text: TextSettings = Field(default_factory=TextSettings)
    audio: AudioSettings = Field(default_factory=AudioSettings)
    mux: MuxSettings = Field(default_factory=MuxSettings)
    archive: ArchiveSettings = Field(default_factory=ArchiveSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    library: LibrarySettings = Field(default_factory=LibrarySettings)

    @property
    def profile_model(self) -> Profile:
        """The game profile named by ``profile`` (loaded once per process)."""
        return load_profile(self.profile)

    @model_validator(mode="after")
    def _text_cache_in_cache_dir(self) -> Settings:
        """The text cache lives in ``cache_dir`` unless ``text.cache_dir`` is set (never ./)."""
        if "cache_dir" not in self.text.model_fields_set:
            self.text.cache_dir = self.cache_dir / "text"
        return self

    @model_validator(mode="after")
    def _window_from_profile(self) -> Settings:
        """The profile owns the window length: copy it into the audio settings, reject a clash."""
        window = self.profile_model.window_seconds
        if "segment_seconds" not in self.audio.model_fields_set:
            self.audio.segment_seconds = window
        elif self.audio.segment_seconds != window:
            raise ValueError(
                f"audio.segment_seconds={self.audio.segment_seconds} disagrees with the window "
                f"length of profile {self.profile!r} ({window} s); set window_seconds in the "
                "profile instead"
            )
        return self


def read_config_file(path: Path) -> dict[str, Any]:
    """Parse a YAML (.yaml/.yml) or TOML (.toml) config file into a plain dict."""
    text = Path(path).read_text()
    data = tomllib.loads(text) if Path(path).suffix == ".toml" else yaml.safe_load(text)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a config file must hold a mapping at its top level")
    return data


def load_settings(
    config_file: Path | None = None, overrides: dict[str, Any] | None = None
) -> Settings:
    """Build the settings: overrides > environment > config file > defaults."""
    file_data = read_config_file(config_file) if config_file else {}

    class _Layered(Settings):
        @classmethod
        def settings_customise_sources(  # type: ignore[override]
            cls, settings_cls: type[BaseSettings], init_settings: Any, env_settings: Any, **_: Any
        ) -> tuple[Any, ...]:
            return (init_settings, env_settings, InitSettingsSource(settings_cls, file_data))

    return Settings.model_validate(_Layered(**(overrides or {})).model_dump())
