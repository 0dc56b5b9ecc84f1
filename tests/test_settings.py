"""The one settings object: layering, and the game profile as the source of the window length."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from bgm_batch.data.game_profile import profiles_dir
from bgm_batch.settings import AudioSettings, Settings, load_settings


def test_window_length_comes_from_the_profile(tmp_path: Path) -> None:
    profile = yaml.safe_load((profiles_dir() / "minecraft.yaml").read_text())
    profile["window_seconds"] = 5.0
    path = tmp_path / "fast.yaml"
    path.write_text(yaml.safe_dump(profile))
    assert load_settings().audio.segment_seconds == 10.0
    assert load_settings(overrides={"profile": str(path)}).audio.segment_seconds == 5.0


def test_a_window_length_that_disagrees_with_the_profile_is_rejected() -> None:
    with pytest.raises(ValidationError, match="window length of profile 'minecraft'"):
        Settings(audio=AudioSettings(segment_seconds=4.0))
    assert Settings(audio=AudioSettings(segment_seconds=10.0)).audio.segment_seconds == 10.0


def test_flags_beat_environment_beat_config_file(tmp_path, monkeypatch) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("seed: 1\naudio:\n  target_lufs: -20\n")
    monkeypatch.setenv("BGM_SEED", "2")
    settings = load_settings(config, {"seed": 3})
    assert settings.seed == 3 and settings.audio.target_lufs == -20
    assert load_settings(config).seed == 2
