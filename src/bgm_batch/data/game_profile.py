"""Game profiles: the capture groups, Algorithm 1's mode lists, combat and transition rules.

A profile is a YAML file (``schemas/profiles/<name>.yaml``); supporting another game means
writing another profile, not code.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, Field


class GroupSpec(BaseModel):
    """One capture group: its name in the files, the paper's name, and its value kind."""

    name: str
    paper: str
    kind: Literal["percent", "count"]
    required: bool = True
    drop_zero: bool = False  # drop entries that round to 0 (the mod lists every monster at 0.0)


class CombatRule(BaseModel):
    """``group[label] op value`` on the raw numbers marks a window as combat."""

    group: str
    label: str
    op: Literal[">", ">="]
    value: float


class TransitionRules(BaseModel):
    """When the music continues its anchor and when it restarts with a transition."""

    scene_groups: list[str] = Field(default_factory=list)
    scene_aliases: dict[str, dict[str, str]] = Field(default_factory=dict)
    hysteresis_windows: int = 2
    immediate_on_combat_onset: bool = True
    max_bridged_gap_windows: int = Field(3, ge=0)  # longer gaps in the capture restart the music
    mood_groups: list[str] = Field(default_factory=list)  # smoothed like scenes within a scene
    crossfade_seconds: dict[str, float] = Field(
        default_factory=lambda: {"continue": 1.0, "change": 1.5, "restart": 2.5}
    )
    stinger_on_combat_onset: bool = True


DEFAULT_WINDOW_SECONDS = 10.0
"""MetaBGM's capture interval; a profile may set another (``window_seconds``)."""


class Profile(BaseModel):
    """Everything game-specific that the pipeline needs."""

    name: str
    window_seconds: float = Field(DEFAULT_WINDOW_SECONDS, gt=0)
    groups: list[GroupSpec]
    drop_label_substring: str = "Not"
    decimals: int = 2
    modes: dict[Literal["combat", "explore"], list[str]]
    combat_rules: list[CombatRule]
    transitions: TransitionRules = Field(default_factory=TransitionRules)

    @property
    def group_names(self) -> list[str]:
        """Capture group names in info_str order."""
        return [g.name for g in self.groups]

    def kept_groups(self, combat: bool) -> list[str]:
        """Capture groups Algorithm 1 keeps in the given mode, in info_str order."""
        keep = set(self.modes["combat" if combat else "explore"])
        return [g.name for g in self.groups if g.paper in keep]

    def group(self, name: str) -> GroupSpec:
        """The spec of one capture group."""
        return next(g for g in self.groups if g.name == name)


def profiles_dir() -> Path:
    """The folder of bundled profiles (``schemas/profiles`` in the repository)."""
    return Path(str(resources.files("bgm_batch") / "resources" / "schemas" / "profiles"))


@cache
def load_profile(name_or_path: str = "minecraft") -> Profile:
    """Load a bundled profile by name, or any profile YAML by path."""
    path = Path(name_or_path)
    if not path.suffix:
        path = profiles_dir() / f"{name_or_path}.yaml"
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in profiles_dir().glob("*.yaml")))
        raise FileNotFoundError(f"profile {name_or_path!r} not found (bundled: {known})")
    return Profile.model_validate(yaml.safe_load(path.read_text()))
