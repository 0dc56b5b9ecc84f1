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
    cache_dir: Path | None = Path(".cache/bgm-batch/text")


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
    batch_size: int = 16
    sample_rate: int = 48000
    target_lufs: float = -16.0
    true_peak_dbtp: float = -1.0
    soundfont: Path | None = None
    device: str = "auto"


class IngestSettings(BaseModel):
    """Limits that keep one hostile input file from costing the whole run (see data/ingest)."""

    max_recording_hours: float = Field(24.0, gt=0)  # a window index beyond this is quarantined
    max_file_bytes: int = Field(1_000_000, gt=0)  # a capture file is ~1.5 kB
    raw_excerpt_chars: int = Field(4096, ge=0)  # raw text kept per quarantined window


class MuxSettings(BaseModel):
    """Putting the track under the gameplay video."""

    music_gain_db: float = -3.0
    duck: bool = True
    duck_threshold: float = 0.03
    duck_ratio: float = 8.0
    duck_attack_ms: float = 20.0
    duck_release_ms: float = 400.0
    fade_out_seconds: float = 3.0
    max_length_mismatch_seconds: float = 60.0


class ArchiveSettings(BaseModel):
    """Where ``bgm-batch archive`` runs; none of it changes what a recording's outputs are."""

    engine: Literal["local", "dask", "ray"] = "local"
    workers: int = Field(1, ge=1)  # local threads, or the local Dask/Ray cluster's workers
    address: str | None = None  # an existing Dask scheduler (tcp://...) or Ray cluster (ray://...)
    model_gpus: float = Field(0.0, ge=0)  # GPUs each model task requests on the cluster


class Settings(BaseSettings):
    """Everything a run can be told; see the module docstring for where values come from."""

    model_config = SettingsConfigDict(env_prefix="BGM_", env_nested_delimiter="__", extra="forbid")

    seed: int = 0
    profile: str = "minecraft"  # a profile name under schemas/profiles or a path to a YAML file
    progress: bool = True
    text: TextSettings = Field(default_factory=TextSettings)
    audio: AudioSettings = Field(default_factory=AudioSettings)
    mux: MuxSettings = Field(default_factory=MuxSettings)
    archive: ArchiveSettings = Field(default_factory=ArchiveSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)

    @property
    def profile_model(self) -> Profile:
        """The game profile named by ``profile`` (loaded once per process)."""
        return load_profile(self.profile)

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
