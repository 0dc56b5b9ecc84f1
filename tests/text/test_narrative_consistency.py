"""Template narratives agree with the state they tell, over many simulated recordings:
no sunlit wording under rain, cloud, snow or at night, no sky underground, movement words
that match the Motion shares."""

from __future__ import annotations

import json
import random
import re

import pytest

from bgm_batch.stages.characterize import characterize
from bgm_batch.testing.simulate import simulate_frame
from bgm_batch.text.template import AT_TIMES, MOSTLY, narrate_info, scene_of

SUNLIT = re.compile(r"bright day|broad daylight|midday sun|afternoon light|sun\b|sunny")
SKY = re.compile(r"\bsky|skies|overhead|cloud|moonlight|\bsun|stars|snowflakes")
SPRINT = re.compile(r"\bsprints\b|\braces\b")
AT_TIMES_SPRINT = re.compile(r"pace at times|sprints at times")
CREEP = re.compile(r"creeps|stealthily")


def _dominant(group: dict | None) -> str | None:
    return max(group, key=group.get) if group else None


def violations(info: dict, narrative: str) -> list[str]:
    """The consistency rules a narrative of ``info`` breaks."""
    text, broken = narrative.lower(), []
    climate, time = _dominant(info.get("Climate")), _dominant(info.get("Time"))
    cave = scene_of(_dominant(info.get("Biome")) or "") == "cave"
    if (climate not in (None, "Clear") or time in ("Night", "Midnight") or cave) and SUNLIT.search(
        text
    ):
        broken.append("sunlit wording under rain, cloud, night or rock")
    if cave and SKY.search(text):
        broken.append("sky in a cave")
    motion = info.get("Motion", {})
    sprint, sneak = motion.get("Sprinting", 0.0), motion.get("Sneaking", 0.0)
    if SPRINT.search(text) and not AT_TIMES_SPRINT.search(text) and sprint < MOSTLY:
        broken.append(f"sprints at {sprint}%")
    if AT_TIMES_SPRINT.search(text) and sprint < AT_TIMES:
        broken.append(f"sprints at times at {sprint}%")
    if CREEP.search(text) and sneak < AT_TIMES:
        broken.append(f"creeps at {sneak}%")
    if sprint >= MOSTLY and not SPRINT.search(text):
        broken.append(f"no sprint at {sprint}%")
    return broken


@pytest.fixture(scope="module")
def infos() -> list[dict]:
    """Characterized windows of eight simulated recordings from four sessions (3 h 20 min)."""
    frames = [
        characterize(simulate_frame(300, seed=seed, n_recordings=2, pool_windows=300))
        for seed in range(4)
    ]
    return [json.loads(text) for frame in frames for text in frame["info_str"].to_list()]


def test_the_simulated_play_covers_the_hard_cases(infos):
    climates = {_dominant(i.get("Climate")) for i in infos}
    assert {"Raining", "Clear"} <= climates
    assert any(scene_of(_dominant(i.get("Biome")) or "") == "cave" for i in infos)
    assert any(i.get("Motion", {}).get("Sprinting", 0) >= MOSTLY for i in infos)
    assert any(0 < i.get("Motion", {}).get("Sprinting", 0) < AT_TIMES for i in infos)


def test_every_narrative_agrees_with_its_state(infos):
    broken = []
    for n, info in enumerate(infos):
        for seed in range(3):
            narrative = narrate_info(info, random.Random(n * 7 + seed))
            broken.extend((problem, narrative) for problem in violations(info, narrative))
    assert not broken, broken[:5]


def test_the_rules_catch_the_old_contradictions():
    rainy_day = {"Time": {"Day": 100.0}, "Climate": {"Raining": 100.0}}
    assert violations(rainy_day, "A wanderer walks on a bright day.")
    cave = {"Biome": {"Deep Dark": 100.0}, "Climate": {"Clear": 100.0}}
    assert violations(cave, "A wanderer walks through the deep dark. Skies are clear.")
    assert violations({"Motion": {"Sprinting": 1.5}}, "A wanderer sprints across the plains.")
