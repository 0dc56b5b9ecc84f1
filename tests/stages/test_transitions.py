"""Transition planning: scene keys, hysteresis, combat onset, gaps, rules from the profile."""

from __future__ import annotations

import json

import polars as pl

from bgm_batch.data.game_profile import load_profile
from bgm_batch.stages.transitions import plan_transitions

PROFILE = load_profile("minecraft")


def windows(
    spec: list[tuple[str, str | None, bool]], recording: str = "r", indexes: list[int] | None = None
) -> pl.DataFrame:
    """A characterized frame from (biome, time or None, combat) per window."""
    rows = []
    for i, (biome, time, combat) in zip(indexes or range(len(spec)), spec, strict=True):
        info = {"Biome": {biome: 90.0, "River": 10.0}}
        if time is not None:
            info["Time"] = {time: 100.0}
        rows.append(
            {
                "recording": recording,
                "index": i,
                "start_s": 10.0 * i,
                "end_s": 10.0 * i + 10,
                "combat": combat,
                "info_str": json.dumps(info),
            }
        )
    return pl.DataFrame(rows)


def plan(spec, profile=PROFILE, **kwargs) -> pl.DataFrame:
    return plan_transitions(windows(spec, **kwargs), profile)


def test_columns_types_and_the_first_window():
    frame = windows([("Plains", "Day", False)] * 3)
    planned = plan_transitions(frame, PROFILE)
    assert planned.schema["scene"] == pl.String
    assert planned.schema["transition"] == pl.String
    assert planned.schema["stinger"] == pl.Boolean
    assert planned.schema["crossfade_s"] == pl.Float64
    assert planned["transition"].to_list() == ["start", "continue", "continue"]
    assert planned["scene"][0] == "Biome=Plains|Time=day"
    assert planned["crossfade_s"].to_list() == [0.0, 1.0, 1.0]
    assert "scene" not in frame.columns  # the input is not modified


def test_aliases_merge_times_of_day_but_not_day_and_night():
    planned = plan(
        [
            ("Plains", "Day", False),
            ("Plains", "Noon", False),
            ("Plains", "Noon", False),
            ("Plains", "Night", False),
            ("Plains", "Midnight", False),
        ]
    )
    assert planned["transition"].to_list() == [
        "start",
        "continue",
        "continue",
        "restart",
        "continue",
    ]
    assert planned["scene"][3] == "Biome=Plains|Time=night"
    assert planned["crossfade_s"][3] == 2.5


def test_a_one_window_blip_does_not_flip_the_music():
    spec = (
        [("Plains", "Day", False)] * 3 + [("Forest", "Day", False)] + [("Plains", "Day", False)] * 3
    )
    planned = plan(spec)
    assert set(planned["transition"].to_list()[1:]) == {"continue"}
    assert planned["scene"].n_unique() == 1


def test_a_held_change_switches_from_its_first_window():
    spec = [("Plains", "Day", False)] * 3 + [("Forest", "Day", False)] * 2
    planned = plan(spec)
    assert planned["transition"].to_list() == [
        "start",
        "continue",
        "continue",
        "restart",
        "continue",
    ]
    assert planned["scene"][3].startswith("Biome=Forest")


def test_combat_onset_is_immediate_with_a_stinger_and_its_end_waits():
    spec = (
        [("Plains", "Day", False)] * 3
        + [("Plains", None, True)]
        + [("Plains", "Day", False)]
        + [("Plains", None, True)]
        + [("Plains", "Day", False)] * 3
    )
    planned = plan(spec)
    assert planned["transition"].to_list() == [
        "start",
        "continue",
        "continue",
        "restart",
        "continue",
        "continue",
        "restart",
        "continue",
        "continue",
    ]
    assert planned["stinger"].to_list() == [False, False, False, True] + [False] * 5
    # the combat window lacks Time: the scene keeps the last known time of day
    assert planned["scene"][3] == "Biome=Plains|Time=day|combat"
    assert planned["scene"][6] == "Biome=Plains|Time=day"


def test_rules_come_from_the_profile():
    rules = PROFILE.transitions.model_copy(
        update={
            "hysteresis_windows": 1,
            "immediate_on_combat_onset": False,
            "stinger_on_combat_onset": False,
            "crossfade_seconds": {"continue": 0.5, "restart": 4.0},
        }
    )
    profile = PROFILE.model_copy(update={"transitions": rules})
    spec = (
        [("Plains", "Day", False)] * 2
        + [("Forest", "Day", False)]
        + [("Plains", "Day", False)] * 2
        + [("Plains", None, True)]
    )
    planned = plan(spec, profile)
    assert planned["transition"].to_list() == [
        "start",
        "continue",
        "restart",
        "restart",
        "continue",
        "restart",
    ]
    assert not planned["stinger"].any()
    assert planned["crossfade_s"].to_list() == [0.0, 0.5, 4.0, 4.0, 0.5, 4.0]


def test_a_missing_window_is_a_restart_and_recordings_are_planned_apart():
    a = windows([("Plains", "Day", False)] * 4, recording="a", indexes=[0, 1, 3, 4])
    b = windows([("Cave", "Night", False)] * 2, recording="b")
    planned = plan_transitions(pl.concat([b, a]), PROFILE)
    assert planned["recording"].to_list() == ["a"] * 4 + ["b"] * 2
    assert planned["transition"].to_list() == [
        "start",
        "continue",
        "restart",
        "continue",
        "start",
        "continue",
    ]


def test_a_blip_at_the_start_takes_the_scene_that_follows():
    planned = plan([("Forest", "Day", False)] + [("Plains", "Day", False)] * 3)
    assert planned["scene"].n_unique() == 1
    assert planned["scene"][0].startswith("Biome=Plains")
