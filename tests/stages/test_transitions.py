"""Transition planning: scene keys, hysteresis, combat onset, gaps, rules from the profile."""

from __future__ import annotations

import json

import polars as pl
import pytest

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
        "change",
        "continue",
    ]
    assert planned["scene"][3] == "Biome=Plains|Time=night"
    assert planned["crossfade_s"][3] == 1.5


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
        "change",
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
        "change",
        "continue",
        "continue",
        "change",
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
            "crossfade_seconds": {"continue": 0.5, "change": 4.0},
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
        "change",
        "change",
        "continue",
        "change",
    ]
    assert not planned["stinger"].any()
    assert planned["crossfade_s"].to_list() == [0.0, 0.5, 4.0, 4.0, 0.5, 4.0]


def test_a_short_gap_is_bridged_a_long_one_restarts_and_recordings_are_planned_apart():
    a = windows([("Plains", "Day", False)] * 5, recording="a", indexes=[0, 1, 3, 8, 9])
    b = windows([("Cave", "Night", False)] * 2, recording="b")
    planned = plan_transitions(pl.concat([b, a]), PROFILE)
    assert PROFILE.transitions.max_bridged_gap_windows == 3
    assert planned["recording"].to_list() == ["a"] * 5 + ["b"] * 2
    assert planned["transition"].to_list() == [
        "start",
        "continue",
        "continue",  # one missing window: bridged, the music carries on
        "restart",  # four missing windows: a real gap, no anchor
        "continue",
        "start",
        "continue",
    ]
    assert planned["crossfade_s"][3] == 2.5


def test_a_scene_change_keeps_its_anchor_only_a_real_gap_drops_it():
    rules = PROFILE.transitions.model_copy(update={"max_bridged_gap_windows": 0})
    profile = PROFILE.model_copy(update={"transitions": rules})
    frame = windows([("Plains", "Day", False)] * 2 + [("Forest", "Day", False)] * 3)
    frame = frame.with_columns(pl.Series("index", [0, 1, 2, 3, 5]))
    planned = plan_transitions(frame, profile)
    assert planned["transition"].to_list() == ["start", "continue", "change", "continue", "restart"]
    assert planned["crossfade_s"].to_list() == [0.0, 1.0, 1.5, 1.0, 2.5]


def test_a_window_overruled_by_the_hysteresis_takes_its_scene_caption():
    spec = (
        [("Plains", "Day", False)] * 2
        + [("Plains", None, True)] * 2
        + [("Plains", "Day", False)]  # one calm window inside the fight
        + [("Plains", None, True)] * 2
    )
    captions = ["calm 1", "calm 2", "fight 3", "fight 4", "calm 5", "fight 6", "fight 7"]
    frame = windows(spec).with_columns(pl.Series("caption", captions))
    planned = plan_transitions(frame, PROFILE)
    assert planned["caption"].to_list() == [*captions[:4], "fight 4", *captions[5:]]
    assert planned["transition"].to_list()[2:] == ["change"] + ["continue"] * 4
    assert plan(spec).columns == windows(spec).columns + [
        "scene",
        "transition",
        "stinger",
        "crossfade_s",
    ]


def test_a_blip_at_the_start_takes_the_scene_that_follows():
    planned = plan([("Forest", "Day", False)] + [("Plains", "Day", False)] * 3)
    assert planned["scene"].n_unique() == 1
    assert planned["scene"][0].startswith("Biome=Plains")


def test_a_mood_that_does_not_hold_keeps_the_scene_s_caption():
    sprints = [10.0, 10.0, 80.0, 10.0, 80.0, 90.0, 10.0, 10.0]
    frame = windows([("Plains", "Day", False)] * len(sprints))
    infos = [
        json.dumps({**json.loads(text), "Motion": {"Sprinting": share}})
        for text, share in zip(frame["info_str"], sprints, strict=True)
    ]
    captions = [f"caption {i}" for i in range(len(sprints))]
    frame = frame.with_columns(pl.Series("info_str", infos), pl.Series("caption", captions))
    planned = plan_transitions(frame, PROFILE)
    assert PROFILE.transitions.mood_groups == ["Climate", "Motion"]
    # one sprint window is a blip; two in a row are the scene's new mood
    assert planned["caption"].to_list() == [*captions[:2], "caption 1", *captions[3:]]
    assert set(planned["transition"].to_list()[1:]) == {"continue"}


def test_a_bridged_gap_is_filled_by_the_music_before_it(tmp_path):
    from bgm_batch.audio.protocol import AUDIO_BACKENDS
    from bgm_batch.settings import AudioSettings
    from bgm_batch.stages.render import render_segments

    frame = windows([("Plains", "Day", False)] * 3, indexes=[0, 1, 3])
    caption = "Calm piano and strings at 90 BPM in G major."
    frame = frame.with_columns(pl.lit(caption).alias("caption"))
    planned = plan_transitions(frame, PROFILE)
    assert planned["transition"].to_list() == ["start", "continue", "continue"]
    settings = AudioSettings()
    result = render_segments(
        planned, AUDIO_BACKENDS.create("synth", settings), settings, seed=0, work_dir=tmp_path
    )
    durations = dict(zip(result.segments["index"], result.segments["duration_s"], strict=True))
    assert durations[0] == pytest.approx(11.0)
    assert durations[1] == pytest.approx(21.0)  # window 1 and the missing window 2, + the tail
    states = {
        i: json.loads((tmp_path / "r" / f"{i:06d}.json").read_text())["state"] for i in (0, 1)
    }
    beats_per_window = 90.0 / 60.0 * 10.0
    assert states[1]["beat"] - states[0]["beat"] == pytest.approx(2 * beats_per_window)
