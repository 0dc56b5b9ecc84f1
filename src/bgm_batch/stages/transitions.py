"""Scene transitions: does a window's music continue its anchor or restart?

The scene of a window is the dominant label of each of the profile's ``scene_groups``
(mapped through ``scene_aliases``, so Day -> Noon is no change but day -> night is) plus
combat on/off. A group the window's characterized data lacks (combat windows drop Time)
keeps its last known value, so entering combat is not also read as a change of time.

Hysteresis, offline: the whole recording is known, so a scene change is decided on runs of
equal raw scenes. A run shorter than ``hysteresis_windows`` is a blip and takes the scene of
the run before it (at the very start, the run after it), so the music does not flip for one
window; a run that holds long enough switches the scene from its first window, without the
lag a live system would need. Combat onset switches at once when the profile says so.

Each window then gets ``transition`` (start for a recording's first window, restart on a
scene change or after a missing window, else continue), ``stinger`` (combat onset) and
``crossfade_s`` from the profile. Every rule lives in ``profile.transitions``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import polars as pl

from bgm_batch.data.game_profile import Profile, TransitionRules

COMBAT_TAG = "combat"


def _raw_scenes(
    info_strs: Sequence[str], combats: Sequence[bool], rules: TransitionRules
) -> list[tuple[tuple[str, ...], bool]]:
    """Per window: (group values, combat), carrying a missing group's last value forward."""
    last = {group: "?" for group in rules.scene_groups}
    scenes = []
    for text, combat in zip(info_strs, combats, strict=True):
        data = json.loads(text) if text else {}
        for group in rules.scene_groups:
            entries = data.get(group)
            if isinstance(entries, dict) and entries:
                label = max(entries, key=lambda k: entries[k])
                last[group] = rules.scene_aliases.get(group, {}).get(label, label)
        scenes.append((tuple(last[g] for g in rules.scene_groups), bool(combat)))
    return scenes


def _runs(values: Sequence[object]) -> list[tuple[int, int]]:
    """(start, stop) of each run of equal consecutive values."""
    bounds = [i for i in range(1, len(values)) if values[i] != values[i - 1]]
    starts = [0, *bounds]
    return list(zip(starts, [*bounds, len(values)], strict=True))


def _settle(
    scenes: list[tuple[tuple[str, ...], bool]], rules: TransitionRules
) -> list[tuple[tuple[str, ...], bool]]:
    """Apply the hysteresis to one contiguous stretch of windows (see the module docstring)."""
    runs = _runs(scenes)
    held = [stop - start >= rules.hysteresis_windows for start, stop in runs]
    settled: list[tuple[tuple[str, ...], bool] | None] = []
    current = None
    for (start, stop), holds in zip(runs, held, strict=True):
        scene = scenes[start]
        onset = (
            rules.immediate_on_combat_onset and scene[1] and current is not None and not current[1]
        )
        if holds or onset:
            current = scene
        settled.extend([current] * (stop - start))
    opening = next((scenes[s] for (s, _), h in zip(runs, held, strict=True) if h), scenes[0])
    return [opening if scene is None else scene for scene in settled]


def _scene_key(scene: tuple[tuple[str, ...], bool], rules: TransitionRules) -> str:
    parts = [f"{g}={v}" for g, v in zip(rules.scene_groups, scene[0], strict=True)]
    return "|".join([*parts, COMBAT_TAG] if scene[1] else parts)


def _plan_recording(
    indexes: list[int], info_strs: list[str], combats: list[bool], rules: TransitionRules
) -> dict[str, list]:
    """Scene, transition, stinger and crossfade for one recording ordered by index."""
    gaps = [0] + [i for i in range(1, len(indexes)) if indexes[i] != indexes[i - 1] + 1]
    raw = _raw_scenes(info_strs, combats, rules)
    settled: list[tuple[tuple[str, ...], bool]] = []
    for start, stop in zip(gaps, [*gaps[1:], len(indexes)], strict=True):
        settled.extend(_settle(raw[start:stop], rules))
    plan: dict[str, list] = {"scene": [], "transition": [], "stinger": [], "crossfade_s": []}
    for i, scene in enumerate(settled):
        if i == 0:
            transition = "start"
        elif i in gaps or scene != settled[i - 1]:
            transition = "restart"
        else:
            transition = "continue"
        onset = transition == "restart" and scene[1] and not settled[i - 1][1]
        plan["scene"].append(_scene_key(scene, rules))
        plan["transition"].append(transition)
        plan["stinger"].append(bool(onset and rules.stinger_on_combat_onset))
        plan["crossfade_s"].append(float(rules.crossfade_seconds.get(transition, 0.0)))
    return plan


def plan_transitions(frame: pl.DataFrame, profile: Profile) -> pl.DataFrame:
    """Add ``scene``, ``transition``, ``stinger`` and ``crossfade_s`` to a characterized frame.

    Rows come back ordered by recording and index; the input frame is not modified.
    """
    ordered = frame.sort("recording", "index")
    columns: dict[str, list] = {"scene": [], "transition": [], "stinger": [], "crossfade_s": []}
    for part in ordered.partition_by("recording", maintain_order=True):
        plan = _plan_recording(
            part["index"].to_list(),
            part["info_str"].to_list(),
            part["combat"].to_list(),
            profile.transitions,
        )
        for name, values in plan.items():
            columns[name].extend(values)
    return ordered.with_columns(
        pl.Series("scene", columns["scene"], dtype=pl.String),
        pl.Series("transition", columns["transition"], dtype=pl.String),
        pl.Series("stinger", columns["stinger"], dtype=pl.Boolean),
        pl.Series("crossfade_s", columns["crossfade_s"], dtype=pl.Float64),
    )
