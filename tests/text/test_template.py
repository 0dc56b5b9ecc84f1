"""The rule-based template backend: grammar limits, every group told, music that fits the scene."""

import json
import re
import statistics
from importlib import resources

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from bgm_batch.settings import TextSettings
from bgm_batch.text.prompts import PROMPT_SETS, caption_prompt, direct_prompt, narrative_prompt
from bgm_batch.text.protocol import TEXT_BACKENDS, TextBackend
from bgm_batch.text.template import (
    TemplateTextBackend,
    cues_from_info,
    cues_from_text,
    vocabulary,
)

BACKEND = TemplateTextBackend()
BPM = re.compile(r"\bat (\d+) BPM\b")
KEY = re.compile(r"\bin ([A-G][b#]?) (major|minor)\b")
FORBIDDEN = re.compile(r"\b(games?|players?)\b", re.IGNORECASE)

EXPLORE = {
    "Biome": {"Plains": 100.0},
    "Time": {"Day": 100.0},
    "Climate": {"Clear": 100.0},
    "Motion": {"Sprinting": 27.09},
    "Placing": {"On Ground": 100.0},
}
COMBAT = {
    "Biome": {"Plains": 100.0},
    "Health": {"Normal": 100.0},
    "Hunger": {"Hungry": 100.0},
    "Motion": {"Sprinting": 80.0},
    "Placing": {"On Ground": 100.0},
    "Monster": {"zombie": 1.4, "skelton": 0.6, "sum": 2.0},
    "Attacked": {"Attacked": 60.0},
}


def complete(prompt: str, seed: int = 0) -> str:
    return BACKEND.generate([prompt], max_new_tokens=64, seed=seed)[0]


def two_stage(info: dict, seed: int = 0) -> tuple[str, str]:
    narrative = complete(narrative_prompt(json.dumps(info)), seed)
    return narrative, complete(caption_prompt(narrative), seed)


def test_registered_and_clearly_named():
    backend = TEXT_BACKENDS.create("template", TextSettings())
    assert isinstance(backend, TextBackend)
    assert backend.identity()["backend"] == "template"
    assert backend.identity()["model"] == "rule-based-template-v3"


# Every retained group leaves a recognisable trace in the narrative.
GROUP_TRACES = {
    "Biome": r"plains|forest|snowy taiga|nether wastes|deep dark|warm ocean|desert",
    "Time": r"sunrise|dawn|daylight|\bday|midday|noon|afternoon|sun sets|dusk|evening|night|moon",
    "Climate": r"skies|cloud|rain|thunder|snowflakes|still|drop|water|storm|chill|damp|cold seeps",
    "Temperature": r"cold",
    "Health": r"unhurt|bruised|wounded|collapsing",
    "Hunger": r"fed|hungry|starving",
    "Status": r"flames|water|rain soaks",
    "Motion": r"sprints|races|pace|creeps|stealthily|crouches|walks|roams|wanders",
    "Placing": r"ground|footing|ledge|rail|lava",
    "Monster": r"zombie|skeleton|spider|creeper|creatures",
    "Attacked": r"blows|attack",
}

biomes = st.sampled_from(
    ["Plains", "Forest", "Snowy Taiga", "Nether Wastes", "Deep Dark", "Warm Ocean", "Desert"]
)
percent = st.floats(min_value=1.0, max_value=100.0).map(lambda v: round(v, 2))


@st.composite
def infos(draw) -> dict:
    combat = draw(st.booleans())
    info = {"Biome": {draw(biomes): 100.0}}
    if combat:
        info["Health"] = {draw(st.sampled_from(["Full", "Safe", "Normal", "Dying"])): 100.0}
        info["Hunger"] = {draw(st.sampled_from(["Full", "Normal", "Hungry", "Starve"])): 100.0}
    else:
        info["Time"] = {
            draw(
                st.sampled_from(
                    ["Sunrise", "Day", "Noon", "Afternoon", "Sunset", "Night", "Midnight"]
                )
            ): 100.0
        }
        info["Climate"] = {
            draw(st.sampled_from(["Clear", "Raining", "Thundering", "Snow", "Cloudy"])): 100.0
        }
        if draw(st.booleans()):
            info["Temperature"] = {"Cold": 100.0}
    if draw(st.booleans()):
        info["Status"] = {draw(st.sampled_from(["On Fire", "Toching Water"])): draw(percent)}
    if draw(st.booleans()):
        info["Motion"] = {draw(st.sampled_from(["Sprinting", "Sneaking"])): draw(percent)}
    info["Placing"] = {"On Ground": 100.0, **({"In Lava": 5.0} if draw(st.booleans()) else {})}
    if combat:
        info["Monster"] = {draw(st.sampled_from(["zombie", "skelton", "spider"])): 1.2, "sum": 1.2}
        if draw(st.booleans()):
            info["Attacked"] = {"Attacked": draw(percent)}
    return info


CAVE_SNOW = {  # found by hypothesis: snow heard from a cave is "Cold seeps down through the rock."
    "Biome": {"Deep Dark": 100.0},
    "Time": {"Sunrise": 100.0},
    "Climate": {"Snow": 100.0},
    "Placing": {"On Ground": 100.0},
}


@settings(max_examples=60, deadline=None)
@given(info=infos(), seed=st.integers(0, 2**31))
@example(info=CAVE_SNOW, seed=0)
def test_narratives_are_short_clean_and_tell_every_group(info, seed):
    narrative, caption = two_stage(info, seed)
    assert len(narrative.split()) <= 50
    assert not FORBIDDEN.search(narrative)
    assert narrative[0].isupper() and narrative.endswith(".")
    for group in info:
        assert re.search(GROUP_TRACES[group], narrative.lower()), (group, narrative)
    assert len(caption.split()) <= 20
    assert BPM.search(caption) and KEY.search(caption), caption


@pytest.mark.parametrize("info", [EXPLORE, COMBAT])
def test_two_stage_caption_follows_the_narrative_cues(info):
    narrative, _ = two_stage(info)
    assert cues_from_text(narrative) == cues_from_info(info)


def test_deterministic_per_seed_and_input_yet_varied():
    prompt = narrative_prompt(json.dumps(EXPLORE))
    assert complete(prompt, 7) == complete(prompt, 7)
    assert len({complete(prompt, seed) for seed in range(12)}) >= 4
    captions = {two_stage(EXPLORE, seed)[1] for seed in range(12)}
    assert len(captions) >= 8


def test_every_prompt_set_is_understood():
    for name in PROMPT_SETS:
        narrative = complete(narrative_prompt(json.dumps(EXPLORE), name))
        assert narrative == complete(narrative_prompt(json.dumps(EXPLORE)))
        assert BPM.search(complete(caption_prompt(narrative, name)))
        assert BPM.search(complete(direct_prompt(json.dumps(COMBAT), name)))


def _caption_stats(info: dict, direct: bool) -> tuple[float, set[str]]:
    bpms, modes = [], set()
    for seed in range(16):
        caption = (
            complete(direct_prompt(json.dumps(info)), seed) if direct else two_stage(info, seed)[1]
        )
        bpms.append(int(BPM.search(caption).group(1)))
        modes.add(KEY.search(caption).group(2))
    return statistics.mean(bpms), modes


def _with(**changes) -> dict:
    return {**EXPLORE, **changes}


@pytest.mark.parametrize("direct", [False, True])
def test_music_fits_the_scene(direct):
    day, _ = _caption_stats(EXPLORE, direct)
    night, night_modes = _caption_stats(_with(Time={"Night": 100.0}), direct)
    combat, combat_modes = _caption_stats(COMBAT, direct)
    cave, _ = _caption_stats(_with(Biome={"Deep Dark": 100.0}), direct)
    _, nether_modes = _caption_stats(_with(Biome={"Nether Wastes": 100.0}), direct)
    assert combat >= 130 and combat_modes == {"minor"}
    assert night < day and night_modes == {"minor"}
    assert cave < day and nether_modes == {"minor"}


def test_scene_colours_reach_the_instruments():
    snow = " ".join(two_stage(_with(Biome={"Snowy Taiga": 100.0}), s)[1] for s in range(12))
    ocean = " ".join(two_stage(_with(Biome={"Warm Ocean": 100.0}), s)[1] for s in range(12))
    cave = [two_stage(_with(Biome={"Deep Dark": 100.0}), s)[1] for s in range(12)]
    assert re.search(r"bells|harp|chimes|glockenspiel|pad", snow)
    assert re.search(r"harp|strings|violin", ocean)
    assert all(" and " not in caption.split(":")[-1] for caption in cave if ":" in caption)


def test_descriptors_come_from_the_shipped_musiccaps_vocabulary():
    vocab = vocabulary()
    assert vocab["license"] == "CC-BY-SA-4.0" and "MusicCaps" in vocab["attribution"]
    moods = {term for terms in vocab["moods"].values() for term, _ in terms}
    caption = complete(direct_prompt(json.dumps(COMBAT)))
    assert any(re.search(rf"\b{re.escape(m)}\b", caption.lower()) for m in moods)
    notice = (resources.files("bgm_batch") / "resources" / "ATTRIBUTION.md").read_text()
    assert "CC BY-SA 4.0" in notice and "MusicCaps" in notice


def test_one_scene_keeps_its_key_and_tempo_while_wording_varies() -> None:
    """Calm windows of one scene differ in detail; their captions must not modulate."""
    windows = [dict(EXPLORE, Motion={"Sprinting": share}) for share in (3.5, 12.0, 27.09, 41.0)]
    captions = [BACKEND.complete(direct_prompt(json.dumps(w)), seed=0) for w in windows]
    assert len({KEY.search(c).groups() for c in captions}) == 1
    assert len({BPM.search(c).group(1) for c in captions}) == 1
    assert len(set(captions)) > 1
    night = dict(EXPLORE, Time={"Night": 100.0})
    other = BACKEND.complete(direct_prompt(json.dumps(night)), seed=0)
    assert (KEY.search(other).groups(), BPM.search(other).group(1)) != (
        KEY.search(captions[0]).groups(),
        BPM.search(captions[0]).group(1),
    )


def test_every_scene_key_is_within_two_fifths_of_every_other() -> None:
    """Scene changes move to related keys: all keys of a recording share a neighbourhood."""
    from bgm_batch.text.template import MAJOR_KEYS, MINOR_KEYS, SCENE_WORDS

    signature = {f"{k} major": s for s, k in MAJOR_KEYS.items()}
    signature |= {f"{k} minor": s for s, k in MINOR_KEYS.items()}
    for seed in range(3):
        keys = {
            KEY.search(
                BACKEND.complete(caption_prompt(f"A traveller {flags} in the {scene}."), seed)
            ).group(0)
            for scene in SCENE_WORDS
            for flags in ("walks", "fights zombies at night", "walks in the rain at dawn")
        }
        spread = [signature[k.removeprefix("in ")] for k in keys]
        assert len(keys) > 3 and max(spread) - min(spread) <= 2, keys
