"""The ``template`` text backend: a rule-based offline narrator and captioner, no model at all.

It exists so the whole pipeline runs, and can be tested, on a machine without model weights. It
receives prompts like any backend and reads its input back out of them (``parse_prompt``), so it
works with every prompt set:

- narrative prompts (``info_str``): one or two sentences of at most 50 words that mention every
  retained group of the characterized snapshot, never the words game or player;
- caption prompts (a narrative): scene cues are read from the narrative's words, so the second
  stage really depends on the first, as in the paper;
- direct prompts (``info_str``): scene cues are read from the data itself.

A caption names a mood, an instrumentation, an explicit tempo ("at 92 BPM") and a key ("in D
minor"), in at most 20 words; descriptor words come from MusicCaps' human-written aspect lists
(``resources/musiccaps_vocabulary.json``, see ``tools/build_vocabulary.py``). Every choice is drawn
from a random generator seeded with (seed, prompt kind, payload): the same input and seed give
the same text, different windows read differently.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cache
from importlib import resources

from bgm_batch.settings import TextSettings
from bgm_batch.text.prompts import CAPTION_MAX_WORDS, parse_prompt
from bgm_batch.text.protocol import TEXT_BACKENDS

MODEL_NAME = "rule-based-template-v3"  # bump when the rules change: it keys the text cache
MIN_BPM, MAX_BPM = 50, 180

# --- scene cues -------------------------------------------------------------------------------

# Scene keywords; where two start at the same place, the earlier scene wins.
SCENE_WORDS: dict[str, tuple[str, ...]] = {
    "nether": ("nether", "crimson", "warped", "basalt", "soul sand"),
    "end": ("the end", "end highlands", "end midlands", "end barrens", "end islands", "void"),
    "cave": ("cave", "caves", "cavern", "caverns", "deep dark", "dripstone", "underground"),
    "snow": ("snow", "snowy", "frozen", "ice", "icy", "glacier"),
    "ocean": ("ocean", "sea", "river", "beach", "shore", "coast", "waves"),
    "desert": ("desert", "badlands", "dunes"),
    "swamp": ("swamp", "mangrove", "marsh"),
    "forest": ("forest", "woods", "jungle", "taiga", "grove", "trees", "birch"),
    "mountain": ("peaks", "mountain", "mountains", "hills", "windswept", "slopes", "cliffs"),
    "plains": ("plains", "meadow", "savanna", "fields", "grassland"),
}
DEFAULT_SCENE = "plains"

# Cues that colour any scene, read from a narrative.
FLAG_WORDS: dict[str, tuple[str, ...]] = {
    "combat": (
        "attack",
        "attacked",
        "attacks",
        "struck",
        "blows",
        "fight",
        "fighting",
        "battle",
        "zombie",
        "zombies",
        "skeleton",
        "skeletons",
        "creeper",
        "creepers",
        "spider",
        "spiders",
        "enderman",
        "pillager",
        "pillagers",
        "blaze",
        "piglin",
        "hostile",
        "monster",
        "monsters",
        "enemy",
        "enemies",
        "ambush",
        "close in",
        "closes in",
    ),
    "night": ("night", "midnight", "moonlight", "moonlit", "darkness", "stars"),
    "dusk": ("sunset", "dusk", "twilight", "evening", "sun sets"),
    "dawn": ("sunrise", "dawn", "first light"),
    "rain": ("rain", "raining", "drizzle", "soaked"),
    "storm": ("thunder", "thunderstorm", "storm", "lightning"),
    "cold": ("cold", "chill", "freezing", "frost", "shivering", "snowflakes"),
    "sprint": ("sprint", "sprints", "sprinting", "running", "dashes", "races"),
    "sneak": ("sneak", "sneaks", "sneaking", "creeps", "creeping", "crouching", "stealthily"),
    "wounded": ("wounded", "injured", "bleeding", "hurt", "bruised", "collapsing"),
    "fire": ("fire", "flames", "burning", "lava", "ablaze"),
    "water": ("water", "wading", "swimming"),
}


@dataclass(frozen=True)
class Cues:
    """What the music should follow: one scene and a set of flags (night, combat, rain...)."""

    scene: str
    flags: frozenset[str] = field(default_factory=frozenset)


def _find(text: str, phrase: str) -> int | None:
    """Where ``phrase`` first occurs in ``text`` as whole words, or None."""
    match = re.search(rf"\b{re.escape(phrase)}\b", text)
    return match.start() if match else None


def scene_of(text: str) -> str:
    """The scene a biome name or a narrative talks about: the first one mentioned ("Snowy
    Plains" is snow, "the plains, heading toward the river" is plains)."""
    lowered = text.lower()
    found = [
        (position, rank, scene)
        for rank, (scene, words) in enumerate(SCENE_WORDS.items())
        for word in words
        if (position := _find(lowered, word)) is not None
    ]
    return min(found)[2] if found else DEFAULT_SCENE


def cues_from_text(narrative: str) -> Cues:
    """Scene cues of a narrative, by its words (works on any narrative, not only ours)."""
    lowered = narrative.lower()
    flags = {
        flag
        for flag, words in FLAG_WORDS.items()
        if any(_find(lowered, word) is not None for word in words)
    }
    return Cues(scene_of(narrative), frozenset(flags))


def _dominant(group: Mapping[str, float] | None) -> str | None:
    return max(group, key=lambda label: group[label]) if group else None


_TIME_FLAGS = {"Night": "night", "Midnight": "night", "Sunset": "dusk", "Sunrise": "dawn"}
_CLIMATE_FLAGS = {"Raining": "rain", "Thundering": "storm", "Snow": "cold"}
_STATUS_FLAGS = {
    "On Fire": "fire",
    "Toching Water": "water",
    "Touching Water": "water",
    "Being Rained": "rain",
}
_HEALTH_FLAGS = {"Normal": "wounded", "Dying": "wounded", "Die": "wounded", "Safe": "wounded"}


def cues_from_info(info: Mapping[str, Mapping[str, float]]) -> Cues:
    """Scene cues straight from characterized data (the direct, one-stage path)."""
    flags: set[str] = set()
    if "Attacked" in info or "Monster" in info:
        flags.add("combat")
    for group, table in (
        ("Time", _TIME_FLAGS),
        ("Climate", _CLIMATE_FLAGS),
        ("Health", _HEALTH_FLAGS),
    ):
        label = _dominant(info.get(group))
        if label in table:
            flags.add(table[label])
    flags.update(_STATUS_FLAGS[label] for label in info.get("Status", {}) if label in _STATUS_FLAGS)
    if "Cold" in info.get("Temperature", {}):
        flags.add("cold")
    if "In Lava" in info.get("Placing", {}):
        flags.add("fire")
    motion = info.get("Motion", {})
    if motion.get("Sprinting", 0) >= 50:
        flags.add("sprint")
    if motion.get("Sneaking", 0) >= 50:
        flags.add("sneak")
    return Cues(scene_of(_dominant(info.get("Biome")) or ""), frozenset(flags))


# --- narratives -------------------------------------------------------------------------------

SUBJECTS = (
    "A lone traveller",
    "A wanderer",
    "A solitary explorer",
    "A young adventurer",
    "A quiet figure",
    "A seasoned traveller",
)
TIME_PHRASES = {
    "Sunrise": ("at sunrise", "as dawn breaks"),
    "Day": ("in broad daylight", "on a bright day"),
    "Noon": ("under the midday sun", "at high noon"),
    "Afternoon": ("in the afternoon light", "late in the afternoon"),
    "Sunset": ("as the sun sets", "at dusk"),
    "Night": ("under a night sky", "in the moonlight"),
    "Midnight": ("at midnight", "in the dead of night"),
}
# Time of day without sun or sky: under rain, cloud or snow, at night, and underground.
PLAIN_TIME_PHRASES = {
    "Sunrise": ("at sunrise", "as the day begins"),
    "Day": ("during the day", "in the daytime"),
    "Noon": ("at midday", "around noon"),
    "Afternoon": ("in the afternoon", "late in the afternoon"),
    "Sunset": ("at dusk", "as evening comes"),
    "Night": ("at night", "in the night"),
    "Midnight": ("at midnight", "in the dead of night"),
}
# The weather as heard from a cave: no sky, no sun.
CAVE_CLIMATE_PHRASES = {
    "Clear": ("The air below is still.", "Not a drop seeps through the rock."),
    "Raining": ("Rain drips through the rock.", "Water trickles down the stone."),
    "Thundering": ("Thunder rumbles far above.", "A storm booms beyond the rock."),
    "Snow": ("Cold seeps down through the rock.", "A chill creeps in from above."),
    "Cloudy": ("The air is damp and still.", "A damp chill hangs in the air."),
}
CLIMATE_PHRASES = {
    "Clear": ("Skies are clear.", "Not a cloud hangs overhead."),
    "Raining": ("Rain falls steadily.", "A steady rain drums down."),
    "Thundering": ("Thunder rolls overhead.", "A thunderstorm rages above."),
    "Snow": ("Snowflakes drift down.", "Snowflakes swirl in the air."),
    "Cloudy": ("Grey clouds hang low.", "The sky is heavy with clouds."),
}
# Status flags, and the unusual footing of the Placing group, told as a closing clause.
STATUS_PHRASES = {
    "On Fire": "flames lick at their clothes",
    "Toching Water": "water swirls around their feet",
    "Touching Water": "water swirls around their feet",
    "Being Rained": "rain soaks them through",
    "On Rail": "a rail cart carries them along",
    "In Lava": "lava sears their boots",
}
GROUND_PHRASES = ("on solid ground", "on firm footing")
HEALTH_WORDS = {
    "Full": "unhurt",
    "Safe": "lightly bruised",
    "Normal": "wounded",
    "Dying": "gravely wounded",
    "Die": "collapsing",
}
HUNGER_WORDS = {
    "Full": "well fed",
    "Normal": "a little hungry",
    "Hungry": "hungry",
    "Starve": "starving",
}
CREATURE_NAMES = {"skelton": "skeleton", "patrik": "pillager", "giant": "giant zombie"}
PREPOSITIONS = {
    "ocean": ("along", "beside"),
    "cave": ("through", "deep in"),
    "mountain": ("over", "across"),
}
NUMBER_WORDS = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def _place(info: Mapping[str, Mapping[str, float]]) -> str:
    """``the plains`` or ``the plains and a river``, End kept upper-case."""
    biome = info.get("Biome", {})
    names = sorted(biome, key=lambda label: -biome[label])[:2]
    place = " and the ".join(re.sub(r"\bend\b", "End", n.lower()) for n in names) or "open land"
    return f"the {place}"


MOSTLY, AT_TIMES = 50.0, 15.0  # Motion shares (percent) for "sprints" and "at times"


def _motion(info: Mapping[str, Mapping[str, float]], rng: random.Random) -> str:
    """A movement verb that matches the Motion shares: "sprints" only when sprinting fills
    most of the window, "at times" for a real share, a walk when both are marginal."""
    motion = info.get("Motion", {})
    sprint, sneak = motion.get("Sprinting", 0.0), motion.get("Sneaking", 0.0)
    if sprint >= MOSTLY:
        return rng.choice(("sprints", "races"))
    if sneak >= MOSTLY:
        return rng.choice(("creeps quietly", "moves stealthily"))
    if sprint >= AT_TIMES and sneak >= AT_TIMES:
        return "sprints at times, then creeps"
    if sprint >= AT_TIMES:
        return "picks up the pace at times"
    if sneak >= AT_TIMES:
        return "crouches now and then"
    return rng.choice(("walks", "roams", "wanders"))


def _footing(info: Mapping[str, Mapping[str, float]], rng: random.Random) -> str:
    """`` on solid ground`` when the Placing group says so; rails and lava go to ``_status``."""
    placing = info.get("Placing")
    if placing is None:
        return ""
    if placing.get("On Ground", 0.0) >= 50:
        return " " + rng.choice(GROUND_PHRASES)
    return " leaping from ledge to ledge" if "On Ground" in placing else ""


def _creatures(monsters: Mapping[str, float]) -> str:
    """``a zombie closes in`` / ``two skeletons close in`` from average counts per tick."""
    kinds = {k: v for k, v in monsters.items() if k != "sum" and v > 0}
    if not kinds:
        return "unseen creatures close in"
    parts = []
    for kind, count in sorted(kinds.items(), key=lambda item: -item[1])[:2]:
        name, number = CREATURE_NAMES.get(kind, kind), max(1, round(count))
        parts.append(f"a {name}" if number == 1 else f"{NUMBER_WORDS[min(number, 9)]} {name}s")
    verb = "closes in" if len(parts) == 1 and parts[0].startswith("a ") else "close in"
    return f"{' and '.join(parts)} {verb}"


def _status(info: Mapping[str, Mapping[str, float]]) -> str:
    labels = [*info.get("Status", {}), *info.get("Placing", {})]
    phrases = [STATUS_PHRASES[label] for label in labels if label in STATUS_PHRASES]
    return f"{' and '.join(phrases).capitalize()}." if phrases else ""


def _capitalize(text: str) -> str:
    return text[:1].upper() + text[1:]


def _time_phrases(info: Mapping[str, Mapping[str, float]], scene: str) -> dict:
    """Sunlit time phrases only above ground under a clear sky."""
    climate = _dominant(info.get("Climate"))
    if scene == "cave" or climate not in (None, "Clear"):
        return PLAIN_TIME_PHRASES
    return TIME_PHRASES


def narrate_info(info: Mapping[str, Mapping[str, float]], rng: random.Random) -> str:
    """A narrative of at most 50 words that mentions every retained group of ``info``."""
    subject, verb = rng.choice(SUBJECTS), _motion(info, rng)
    scene = scene_of(_dominant(info.get("Biome")) or "")
    prep = rng.choice(PREPOSITIONS.get(scene, ("across", "through")))
    where = f"{verb}{_footing(info, rng)} {prep} {_place(info)}"
    predict = _dominant(info.get("BiomePredict"))
    if predict and predict not in info.get("Biome", {}):
        where += f", heading toward the {predict.lower()}"
    sentences = []
    if "Attacked" in info or "Monster" in info or "Health" in info:
        state = [
            HEALTH_WORDS.get(_dominant(info.get("Health")) or "", ""),
            HUNGER_WORDS.get(_dominant(info.get("Hunger")) or "", ""),
        ]
        state_text = " and ".join(word for word in state if word)
        opening = f"{subject}, {state_text}," if state_text else subject
        threat = f" as {_creatures(info['Monster'])}" if "Monster" in info else ""
        sentences.append(f"{opening} {where}{threat}.")
        attacked = info.get("Attacked", {}).get("Attacked")
        if attacked:
            sentences.append(
                "Blows land again and again." if attacked >= 50 else "A sudden attack strikes home."
            )
    else:
        time = rng.choice(_time_phrases(info, scene).get(_dominant(info.get("Time")) or "", ("",)))
        if time and rng.random() < 0.5:
            sentences.append(f"{_capitalize(time)}, {subject.lower()} {where}.")
        else:
            sentences.append(f"{subject} {where}{' ' + time if time else ''}.")
        climate = _dominant(info.get("Climate"))
        phrases = CAVE_CLIMATE_PHRASES if scene == "cave" else CLIMATE_PHRASES
        if climate in phrases:
            sentences.append(rng.choice(phrases[climate]))
        if "Cold" in info.get("Temperature", {}):
            sentences.append(rng.choice(("The air bites with cold.", "The cold is biting.")))
    sentences.append(_status(info))
    return " ".join(s for s in sentences if s)


# --- captions ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sound:
    """How a scene sounds: tempo range, mode, mood and instrument tags (best first)."""

    bpm: tuple[int, int]
    mode: str
    moods: tuple[str, ...]
    instruments: tuple[str, ...]
    textures: frozenset[str]
    style: str
    sparse: bool = False  # one instrument only


def _sound(
    bpm: tuple[int, int],
    mode: str,
    moods: str,
    instruments: str,
    textures: str,
    style: str,
    sparse: bool = False,
) -> Sound:
    return Sound(
        bpm,
        mode,
        tuple(moods.split(",")),
        tuple(instruments.split(",")),
        frozenset(textures.split()),
        style,
        sparse,
    )


SCENE_SOUNDS: dict[str, Sound] = {
    "combat": _sound(
        (140, 168),
        "minor",
        "tense,energetic,epic",
        "drums,strings,brass,timpani",
        "staccato intense punchy low deep",
        "cinematic",
    ),
    "nether": _sound(
        (70, 90),
        "minor",
        "dark,tense,epic",
        "drone,brass,choir,organ,cello",
        "low deep dark echoing reverberant sustained",
        "cinematic",
    ),
    "end": _sound(
        (62, 78),
        "minor",
        "airy,dark",
        "synth pad,bells,drone,choir",
        "wide shimmering echoing reverberant",
        "electronic",
    ),
    "cave": _sound(
        (56, 70),
        "minor",
        "dark,calm",
        "drone,bells,piano,synth pad",
        "low echoing reverberant soft continuous",
        "ambient",
        sparse=True,
    ),
    "snow": _sound(
        (66, 84),
        "major",
        "airy,calm,melancholic",
        "bells,harp,synth pad,flute",
        "shimmering wide arpeggiated soft breathy plucked",
        "ambient",
    ),
    "ocean": _sound(
        (72, 90),
        "major",
        "calm,airy,warm",
        "harp,strings,synth pad,piano",
        "arpeggiated sustained wide mellow plucked",
        "cinematic",
    ),
    "desert": _sound(
        (84, 104), "minor", "dark,warm", "oud,drums,flute", "plucked breathy tribal", "folk"
    ),
    "swamp": _sound(
        (66, 82),
        "minor",
        "dark,calm",
        "marimba,bass,flute,cello",
        "low soft mellow plucked",
        "folk",
    ),
    "forest": _sound(
        (76, 96),
        "major",
        "calm,warm,bright",
        "acoustic guitar,flute,strings,harp",
        "plucked breathy mellow arpeggiated soft",
        "folk",
    ),
    "mountain": _sound(
        (72, 92), "major", "epic,airy", "brass,strings,choir,timpani", "wide sustained", "cinematic"
    ),
    "plains": _sound(
        (84, 104),
        "major",
        "calm,bright,warm",
        "piano,strings,acoustic guitar,flute",
        "mellow soft sustained arpeggiated",
        "classical",
    ),
}


@dataclass(frozen=True)
class Shift:
    """What one flag does to a sound: tempo factor, mode, moods, textures (never the band:
    the instruments are the scene's)."""

    tempo: float = 1.0
    mode: str | None = None
    moods: tuple[str, ...] = ()
    textures: frozenset[str] = frozenset()


SHIFTS: dict[str, Shift] = {
    "night": Shift(0.82, "minor", ("dark",), frozenset({"soft", "low"})),
    "dusk": Shift(0.92, None, ("melancholic",), frozenset({"mellow"})),
    "dawn": Shift(1.0, "major", ("bright",), frozenset({"breathy"})),
    "rain": Shift(0.92, "minor", ("melancholic",), frozenset({"soft"})),
    "storm": Shift(1.08, "minor", ("tense",), frozenset({"deep"})),
    "cold": Shift(0.95, None, ("airy",), frozenset({"shimmering"})),
    "sprint": Shift(1.12),
    "sneak": Shift(0.9, None, ("dark",), frozenset({"pizzicato"})),
    "wounded": Shift(1.05, "minor", ("tense",), frozenset({"sustained"})),
    "fire": Shift(1.1, "minor", ("tense",), frozenset({"intense"})),
    "water": Shift(1.0, None, ("calm",), frozenset({"arpeggiated"})),
}


def _insert_second(items: tuple[str, ...], new: tuple[str, ...]) -> tuple[str, ...]:
    """Put ``new`` right after the first item: the scene keeps its lead, the flag colours it."""
    rest = tuple(item for item in items[1:] if item not in new)
    return items[:1] + tuple(n for n in new if n != items[0]) + rest


def _clamp_bpm(bpm: float) -> int:
    return min(MAX_BPM, max(MIN_BPM, round(bpm)))


def sound_for(cues: Cues) -> Sound:
    """The sound of a scene under its flags (combat takes over and keeps a scene colour)."""
    scene = SCENE_SOUNDS[cues.scene]
    sound = scene
    if "combat" in cues.flags:
        combat = SCENE_SOUNDS["combat"]
        lead = _insert_second(combat.instruments, scene.instruments[:1])
        sound = replace(combat, instruments=lead)
    for flag in sorted(cues.flags - {"combat"}):
        shift = SHIFTS[flag]
        low, high = sound.bpm
        sound = replace(
            sound,
            bpm=(_clamp_bpm(low * shift.tempo), _clamp_bpm(high * shift.tempo)),
            mode="minor" if "combat" in cues.flags else shift.mode or sound.mode,
            moods=_insert_second(sound.moods, shift.moods),
            textures=sound.textures | shift.textures,
        )
    return sound


@cache
def vocabulary() -> dict:
    """The MusicCaps-derived vocabulary shipped in the package."""
    path = resources.files("bgm_batch") / "resources" / "musiccaps_vocabulary.json"
    return json.loads(path.read_text(encoding="utf-8"))


def _weighted(rng: random.Random, terms: Sequence[Sequence], exclude: set[str]) -> str:
    """A term drawn by how often musicians used it (square root, so rarer words appear too)."""
    pool = [term for term in terms if term[0] not in exclude] or list(terms)
    return rng.choices([t[0] for t in pool], weights=[t[1] ** 0.5 for t in pool])[0]


def _instrument(rng: random.Random, tag: str, textures: frozenset[str], short: bool) -> str:
    phrases = vocabulary()["instruments"][tag]
    fitting = [
        p for p in phrases if set(p[2]) <= textures and (not short or len(p[0].split()) <= 2)
    ]
    return _weighted(rng, fitting or phrases[:1], set())


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


# Keys by signature (sharps positive, flats negative): the major key and its relative minor.
MAJOR_KEYS = {-3: "Eb", -2: "Bb", -1: "F", 0: "C", 1: "G", 2: "D", 3: "A"}
MINOR_KEYS = {-3: "C", -2: "G", -1: "D", 0: "A", 1: "E", 2: "B", 3: "F#"}
HOME_SIGNATURES = (-2, -1, 0, 1, 2)


def scene_key(mode: str, home: int, scene_rng: random.Random) -> str:
    """The key of a scene: a signature at most one step from the recording's ``home``, so
    any two scenes are at most two steps apart on the circle of fifths; a minor mood takes
    the relative minor, a real modulation the synth makes through its new dominant."""
    signature = home + scene_rng.choice((-1, 0, 1))
    return f"{(MINOR_KEYS if mode == 'minor' else MAJOR_KEYS)[signature]} {mode}"


CAPTION_FORMS = (
    "{A} {mood1}, {mood2} {style} piece at {bpm} BPM in {key}, with {inst}.",
    "{Inst} in {key}, {tempo} at {bpm} BPM; {mood1} and {mood2}.",
    "{Tempo} at {bpm} BPM in {key}: {mood1}, {mood2} {style} music with {inst}.",
    "{Mood1} and {mood2} in {key} at {bpm} BPM: {inst}, {tempo}.",
)


def compose_caption(
    sound: Sound, rng: random.Random, scene_rng: random.Random, home: int = 0
) -> str:
    """A composer's description of ``sound`` in at most 20 words, tempo and key explicit.

    The scene's musical plan comes first and from ``scene_rng`` (seeded by the scene alone):
    its key (``scene_key``), the place of its tempo within the sound's range and its
    instruments; wording comes from ``rng``. Windows of one scene are described differently
    but keep key, tempo and band; flags (night, rain, sprinting) shift only tempo and mode.
    """
    vocab = vocabulary()
    low, high = sound.bpm
    bpm = round(low + scene_rng.random() * (high - low))
    key = scene_key(sound.mode, home, scene_rng)
    tempo_tag = "slow" if bpm < 80 else "medium" if bpm < 116 else "fast"
    mood1 = _weighted(rng, vocab["moods"][sound.moods[0]], set())
    mood2 = _weighted(rng, vocab["moods"][sound.moods[min(1, len(sound.moods) - 1)]], {mood1})
    style = _weighted(rng, vocab["styles"][sound.style], {mood1, mood2})
    tempo = _weighted(rng, vocab["tempos"][tempo_tag], set())
    lead = scene_rng.choice(sound.instruments[:2])
    others = [tag for tag in sound.instruments[:4] if tag != lead]
    tags = [lead] if sound.sparse else [lead, scene_rng.choice(others)]
    form = rng.choice(CAPTION_FORMS)
    for short in (False, True):
        inst = " and ".join(_instrument(rng, tag, sound.textures, short) for tag in tags)
        caption = form.format(
            A=_capitalize(_article(mood1)),
            mood1=mood1,
            mood2=mood2,
            style=style,
            bpm=bpm,
            key=key,
            inst=inst,
            Inst=_capitalize(inst),
            tempo=tempo,
            Tempo=_capitalize(tempo),
            Mood1=_capitalize(mood1),
        )
        if len(caption.split()) <= CAPTION_MAX_WORDS:
            break
    return caption


# --- the backend ------------------------------------------------------------------------------


def _rng(seed: int, kind: str, payload: str) -> random.Random:
    digest = hashlib.sha256(f"{seed}\x00{kind}\x00{payload}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def _info(payload: str) -> dict[str, dict[str, float]]:
    data = json.loads(payload)
    if not isinstance(data, dict):
        raise ValueError(f"info_str must be a JSON object, got {payload[:60]!r}")
    return {group: dict(entries) for group, entries in data.items() if isinstance(entries, dict)}


class TemplateTextBackend:
    """Rule-based narrator and captioner (no weights); see the module docstring."""

    name = "template"

    def identity(self) -> dict[str, str]:
        """Backend, rule-set version and the vocabulary's source checksum."""
        return {
            "backend": self.name,
            "model": MODEL_NAME,
            "vocabulary": vocabulary()["source_sha256"][:16],
        }

    def complete(self, prompt: str, seed: int) -> str:
        """The completion of one prompt."""
        kind, payload = parse_prompt(prompt)
        rng = _rng(seed, kind, payload)
        if kind == "narrative":
            return narrate_info(_info(payload), rng)
        cues = cues_from_text(payload) if kind == "caption" else cues_from_info(_info(payload))
        scene = cues.scene + ("+combat" if "combat" in cues.flags else "")
        home = _rng(seed, "home", "").choice(HOME_SIGNATURES)
        return compose_caption(sound_for(cues), rng, _rng(seed, "scene", scene), home)

    def generate(self, prompts: Sequence[str], *, max_new_tokens: int, seed: int) -> list[str]:
        """Completions in prompt order; ``max_new_tokens`` is moot, the word limits are built in."""
        return [self.complete(prompt, seed) for prompt in prompts]


@TEXT_BACKENDS.register("template")
def create_template_backend(settings: TextSettings) -> TemplateTextBackend:
    """The template backend needs no settings: it has no model."""
    return TemplateTextBackend()
