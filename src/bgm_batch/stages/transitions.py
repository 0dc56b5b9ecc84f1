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

Each window then gets ``transition``, ``stinger`` (combat onset) and ``crossfade_s`` from the
profile. As in the paper, the previous segment is the melodic anchor of the next one *across*
scene changes too, so only two transitions drop it:

- ``start``: a recording's first window (no anchor exists);
- ``continue``: same scene, the music carries on;
- ``change``: a new scene, a new caption anchored on the previous audio (MusicGen gets the
  previous tail as its prompt; the synth modulates, ramps its tempo, changes its ensemble);
- ``restart``: after a real gap in the capture, more than ``max_bridged_gap_windows`` missing
  windows. A shorter gap (a few missing capture files) is bridged: the music continues.

Every rule lives in ``profile.transitions``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import polars as pl

from bgm_batch.data.game_profile import Profile, TransitionRules

COMBAT_TAG = "combat"
ANCHORED = frozenset({"continue", "change"})
"""Transitions whose segment is rendered from the previous segment's audio and state."""
PLAN_SCHEMA: dict[str, pl.DataType] = {
    "scene": pl.String(),
    "transition": pl.String(),
    "stinger": pl.Boolean(),
    "crossfade_s": pl.Float64(),
    "caption": pl.String(),
}


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


def _raw_moods(info_strs: Sequence[str], rules: TransitionRules) -> list[tuple[tuple, bool]]:
    """Per window: the label holding at least half of each mood group ("-" when none does:
    a few seconds of sprinting is no sprint), shaped like a scene for ``_settle``."""
    moods = []
    for text in info_strs:
        data = json.loads(text) if text else {}
        values = []
        for group in rules.mood_groups:
            entries = data.get(group) if isinstance(data.get(group), dict) else {}
            held = [label for label, share in entries.items() if share >= 50]
            values.append(held[0] if held else "-")
        moods.append((tuple(values), False))
    return moods


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


def _stretches(indexes: list[int], rules: TransitionRules) -> list[int]:
    """Positions where a real gap (more missing windows than the profile bridges) begins a
    new stretch; the first window always does."""
    limit = rules.max_bridged_gap_windows + 1
    return [0] + [i for i in range(1, len(indexes)) if indexes[i] - indexes[i - 1] > limit]


def _transition(i: int, stretches: list[int], settled: list) -> str:
    if i == 0:
        return "start"
    if i in stretches:
        return "restart"
    return "change" if settled[i] != settled[i - 1] else "continue"


def _smoothed_captions(captions: list[str], raw: list, settled: list) -> list[str]:
    """A window whose own scene or mood was overruled by the hysteresis (one calm window
    inside a fight, one sprint inside a walk) takes the caption of the closest earlier window
    that truly is in the settled scene and mood (else the closest later one), so what it
    says is what the scene plays."""
    true = [i for i in range(len(captions)) if raw[i] == settled[i]]
    smoothed = list(captions)
    for i in range(len(captions)):
        if raw[i] == settled[i]:
            continue
        same = [j for j in true if settled[j] == settled[i]]
        before = [j for j in same if j < i]
        after = [j for j in same if j > i]
        if before or after:
            smoothed[i] = captions[before[-1] if before else after[0]]
    return smoothed


def _plan_recording(
    indexes: list[int],
    info_strs: list[str],
    combats: list[bool],
    captions: list[str] | None,
    rules: TransitionRules,
) -> dict[str, list]:
    """Scene, transition, stinger, crossfade (and smoothed captions) for one recording."""
    stretches = _stretches(indexes, rules)
    raw = _raw_scenes(info_strs, combats, rules)
    settled: list[tuple[tuple[str, ...], bool]] = []
    for start, stop in zip(stretches, [*stretches[1:], len(indexes)], strict=True):
        settled.extend(_settle(raw[start:stop], rules))
    plan: dict[str, list] = {"scene": [], "transition": [], "stinger": [], "crossfade_s": []}
    for i, scene in enumerate(settled):
        transition = _transition(i, stretches, settled)
        onset = transition in ("change", "restart") and scene[1] and not settled[i - 1][1]
        plan["scene"].append(_scene_key(scene, rules))
        plan["transition"].append(transition)
        plan["stinger"].append(bool(onset and rules.stinger_on_combat_onset))
        plan["crossfade_s"].append(float(rules.crossfade_seconds.get(transition, 0.0)))
    if captions is not None:
        moods = _raw_moods(info_strs, rules)
        settled_moods: list[tuple[tuple[str, ...], bool]] = []
        for start, stop in _runs(settled):
            settled_moods.extend(_settle(moods[start:stop], rules))
        plan["caption"] = _smoothed_captions(
            captions,
            list(zip(raw, moods, strict=True)),
            list(zip(settled, settled_moods, strict=True)),
        )
    return plan


def plan_transitions(frame: pl.DataFrame, profile: Profile) -> pl.DataFrame:
    """Add ``scene``, ``transition``, ``stinger`` and ``crossfade_s`` to a characterized frame
    (and smooth its ``caption`` column when it has one, see ``_smoothed_captions``).

    Rows come back ordered by recording and index; the input frame is not modified.
    """
    ordered = frame.sort("recording", "index")
    has_captions = "caption" in ordered.columns
    columns: dict[str, list] = {name: [] for name in PLAN_SCHEMA}
    for part in ordered.partition_by("recording", maintain_order=True):
        plan = _plan_recording(
            part["index"].to_list(),
            part["info_str"].to_list(),
            part["combat"].to_list(),
            part["caption"].to_list() if has_captions else None,
            profile.transitions,
        )
        for name, values in plan.items():
            columns[name].extend(values)
    names = [name for name in PLAN_SCHEMA if name != "caption" or has_captions]
    return ordered.with_columns(
        pl.Series(name, columns[name], dtype=PLAN_SCHEMA[name]) for name in names
    )
