"""Synthetic MetaBGM captures: plausible Minecraft play from a seeded, tick-level state machine.

The mod's repository publishes a single real snapshot, yet every stage needs half-hour inputs
with the shape of real play: a route through neighbouring biomes, the day cycle, weather
fronts, a cave, fights that cost health and hunger. This module plays such a session tick by
tick (20 ticks a second) and tallies every window the way the mod does: the share of ticks
spent in each state, the average count of each hostile type per tick. A window lasts about
200 ticks but not exactly (the mod cuts windows by wall time), so values look like the real
``27.093596059113302`` (55 of 203 ticks), not round multiples of 0.5.

``simulate_recording`` gives snapshot dicts in the file structure, ``write_capture_dir``
writes them as capture files, ``simulate_frame`` builds recording frames of any size for
benchmarks by splicing and re-timing windows of one simulated session with numpy.
``find_fights`` and ``missing_events`` describe what happens in a recording (the bundled
sample is chosen with them). ``python -m bgm_batch.testing.simulate OUT_DIR --windows N --seed S``
writes a capture folder.
"""

from __future__ import annotations

import argparse
import json
import random
from bisect import bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import NamedTuple

import numpy as np
import polars as pl
import pyarrow as pa

from bgm_batch.atomic import write_text
from bgm_batch.data.game_profile import Profile, load_profile
from bgm_batch.stages.characterize import is_combat

TICKS_PER_SECOND = 20
WINDOW_SECONDS = load_profile("minecraft").window_seconds  # the simulated game's capture interval
DAY_TICKS = 24000
TICKS_PER_WINDOW = (196, 205)  # wall-clock windows hold a few ticks more or less than 200
SCORE_SAMPLES = 29  # BiomePredict scores are shares of this many points sampled ahead
START_TIME = "20240601093000"
SAMPLE_WINDOWS = 186  # the bundled sample: 31 minutes
SAMPLE_SEED = 7  # the first seed whose 186 windows hold every event of ``missing_events``

GROUPS = (
    "Biome", "Time", "Climate", "Temperature", "Health", "Hunger", "Status", "Motion",
    "Placing", "Monster", "Attacked", "BiomePredict",
)  # fmt: skip
# The mod's hostile types in the order its hash map writes them (as in sample-4.json).
MONSTER_TYPES = (
    "zoglin", "vex", "sum", "skelton", "piglin", "blaze", "endermite", "silverfish", "zombie",
    "warden", "giant", "guardian", "wither", "spider", "patrik", "creeper", "enderman",
)  # fmt: skip
CAVE_BIOMES = frozenset({"Dripstone Caves", "Lush Caves", "Deep Dark"})
DAY_LABELS = frozenset({"Sunrise", "Day", "Noon", "Afternoon"})
NIGHT_LABELS = frozenset({"Night", "Midnight"})
HEALTH_ORDER = ("Full", "Safe", "Normal", "Dying", "Die")

_TIME_STARTS = (0, 450, 5000, 7000, 11617, 13702, 18000, 22200)
_TIME_LABELS = ("Sunrise", "Day", "Noon", "Afternoon", "Sunset", "Night", "Midnight", "Sunrise")

# One tick's state: a label per field. The first six fields list labels in order of first
# occurrence; the others are flags the mod writes in a fixed order (affirmative first).
_FIELD_GROUPS = (
    "Biome", "Time", "Climate", "Temperature", "Health", "Hunger", "Status", "Status",
    "Motion", "Motion", "Placing", "Placing", "Placing", "Attacked",
)  # fmt: skip
_FIXED_ORDER: dict[int, tuple[str, ...]] = {
    6: ("Toching Water", "Being Rained", "Not Touching Water"),
    7: ("On Fire", "Not On Fire"),
    8: ("Sprinting", "Not Sprinting"),
    9: ("Sneaking", "Not Sneaking"),
    10: ("On Ground", "Not On Ground"),
    11: ("On Rail", "Not On Rail"),
    12: ("In Lava", "Not In Lava"),
    13: ("Attacked", "Not Attacked"),
}
_PERCENT, _AVERAGE, _SCORE = 0, 1, 2  # how an entry's count becomes its value


@dataclass(frozen=True)
class Biome:
    """What a biome means for play: where it leads, how long a visit lasts, what lives there."""

    name: str
    neighbours: tuple[str, ...]
    minutes: tuple[float, float]
    hostiles: str = "surface"
    cold: bool = False  # Temperature Cold; rain falls as Snow
    dry: bool = False  # no precipitation; rain shows as Cloudy
    water: float = 0.0  # share of ticks touching water
    cover: float = 0.0  # share of ticks sheltered from rain by trees
    dark: bool = False  # hostiles spawn by day too

    @property
    def cave(self) -> bool:
        return self.name in CAVE_BIOMES


BIOMES: dict[str, Biome] = {
    b.name: b
    for b in (
        Biome("Plains", ("Forest", "River", "Birch Forest", "Desert", "Swamp", "Taiga"), (2, 5)),
        Biome("Forest", ("Plains", "Birch Forest", "River", "Dark Forest", "Taiga"), (1.5, 3.5),
              cover=0.35),
        Biome("Birch Forest", ("Forest", "Plains", "River"), (1, 3), cover=0.3),
        Biome("Dark Forest", ("Forest", "Swamp"), (1, 2.5), cover=0.8, dark=True),
        Biome("River", ("Plains", "Forest", "Beach", "Swamp", "Taiga", "Desert"), (0.3, 0.8),
              water=0.75),
        Biome("Beach", ("River", "Ocean", "Plains", "Desert"), (0.5, 1.5), water=0.2),
        Biome("Ocean", ("Beach",), (1, 2.5), hostiles="ocean", water=0.95),
        Biome("Desert", ("Plains", "River", "Beach"), (1.5, 3.5), hostiles="desert", dry=True),
        Biome("Swamp", ("Plains", "River", "Dark Forest"), (1, 2.5), hostiles="swamp",
              water=0.35, cover=0.3),
        Biome("Taiga", ("Forest", "Plains", "River", "Snowy Taiga"), (1.5, 3), cover=0.3),
        Biome("Snowy Taiga", ("Taiga", "Snowy Plains", "Frozen River"), (1.5, 3),
              hostiles="snowy", cold=True, cover=0.3),
        Biome("Snowy Plains", ("Snowy Taiga", "Frozen River", "Plains"), (1.5, 3.5),
              hostiles="snowy", cold=True),
        Biome("Frozen River", ("Snowy Plains", "Snowy Taiga"), (0.3, 0.8), hostiles="snowy",
              cold=True, water=0.25),
        Biome("Dripstone Caves", ("Lush Caves", "Deep Dark"), (1.5, 3), hostiles="cave"),
        Biome("Lush Caves", ("Dripstone Caves", "Deep Dark"), (1, 2.5), hostiles="cave",
              water=0.15),
        Biome("Deep Dark", ("Dripstone Caves", "Lush Caves"), (1, 2), hostiles="deep"),
    )
}  # fmt: skip

# Who shows up, by habitat. Husks, strays, drowned, slimes and witches are not among the
# mod's named types: they count only in ``sum``, as in real captures.
_HOSTILES: dict[str, tuple[tuple[str, ...], tuple[int, ...]]] = {
    "surface": (("zombie", "skelton", "spider", "creeper", "enderman"), (35, 30, 15, 15, 5)),
    "desert": (("husk", "zombie", "skelton", "creeper", "spider"), (35, 15, 25, 15, 10)),
    "snowy": (("stray", "skelton", "zombie", "creeper", "spider"), (35, 15, 25, 15, 10)),
    "swamp": (
        ("zombie", "skelton", "slime", "witch", "creeper", "spider"),
        (25, 20, 25, 10, 10, 10),
    ),
    "ocean": (("drowned", "guardian"), (85, 15)),
    "cave": (("zombie", "skelton", "creeper", "spider", "enderman"), (30, 30, 20, 15, 5)),
    "deep": (("zombie", "skelton", "creeper"), (40, 35, 25)),
}
_DAMAGE = {"creeper": 9, "enderman": 5, "witch": 4, "guardian": 4, "patrik": 4, "spider": 2,
           "slime": 2}  # fmt: skip
_BURN_IN_DAYLIGHT = frozenset({"zombie", "skelton", "stray", "drowned"})
_MEALS = ((8, 12.8), (5, 6.0), (6, 7.2), (4, 2.4))  # (food, saturation): steak, bread...
_WEATHER_MINUTES = {"Clear": (5.0, 14.0), "Raining": (3.0, 7.0), "Thundering": (1.5, 4.0)}


def time_label(day_tick: int) -> str:
    """The mod's Time label for a tick of the 24000-tick Minecraft day."""
    return _TIME_LABELS[bisect_right(_TIME_STARTS, day_tick % DAY_TICKS) - 1]


def health_label(health: int) -> str:
    """The mod's Health label for a health value (20 = full hearts)."""
    if health >= 20:
        return "Full"
    if health >= 15:
        return "Safe"
    if health >= 5:
        return "Normal"
    return "Dying" if health > 0 else "Die"


def hunger_label(food: int) -> str:
    """The mod's Hunger label for a food level (20 = full)."""
    if food >= 20:
        return "Full"
    if food >= 10:
        return "Normal"
    return "Hungry" if food > 0 else "Starve"


def _chain(draw: float, on: bool, share: float, run: float) -> bool:
    """One tick of a two-state chain that is on ``share`` of the time in runs of ``run`` ticks."""
    if on:
        return draw >= 1.0 / run
    return draw * run * max(1.0 - share, 1e-9) < share


class _Entry(NamedTuple):
    """One label of a window: its count (ticks, hostile-ticks or sampled points) and kind.

    ``dominant`` marks the largest label of each set of exclusive labels, which absorbs the
    ticks added or removed when ``simulate_frame`` re-times a window; ``partner`` is the
    offset from it to the runner-up of its set (0: none), with which it trades a few ticks.
    """

    group: str
    label: str
    count: int
    kind: int
    dominant: bool = False
    partner: int = 0


@dataclass
class _Window:
    """One window's tallies, in file order."""

    ticks: int
    entries: list[_Entry]

    def snapshot(self, index: int) -> dict:
        """The window as the mod's file structure."""
        snap: dict = {"Index": index}
        for entry in self.entries:
            value = _value(entry.count, entry.kind, self.ticks)
            snap.setdefault(entry.group, {})[entry.label] = value
        return snap


def _value(count: int, kind: int, ticks: int) -> float:
    if kind == _PERCENT:
        return count / ticks * 100
    if kind == _AVERAGE:
        return count / ticks
    return count / SCORE_SAMPLES * 100


class _Session:
    """A player's session, one tick at a time: route, weather, hostiles, vitals and body."""

    def __init__(self, seed: int, start_tick: int) -> None:
        self.rng = random.Random(seed)
        self.tick = start_tick
        # route: the current visit, the planned next one, and where the cave was entered
        self.biome, self.previous, self.entrance, self.depth = "Plains", "", "Plains", 0
        self.visit_left = self._visit_ticks("Plains")
        self.next_biome = self._choose_next("Plains", "")
        self.weather = "Clear"
        self.weather_left = int(self.rng.uniform(1.0, 10.0) * 1200)
        # vitals
        self.health, self.food, self.saturation, self.exhaustion = 20, 20, 5.0, 0.0
        self.regen = self.eating = self.meal = 0
        self.meal_at = self.rng.randint(12, 16)
        # hostiles
        self.monsters: list[str] = []
        self.engaged = self.fleeing = False
        # body
        self.hurt = self.fire = self.lava = self.rail = self.airborne = 0
        self.sprint = self.sneak = self.wet = self.sheltered = False
        self.pace = self.rng.uniform(0.15, 0.6)

    # --- route and weather ------------------------------------------------------------

    def _visit_ticks(self, name: str) -> int:
        low, high = BIOMES[name].minutes
        return int(self.rng.uniform(low, high) * 60 * TICKS_PER_SECOND)

    def _choose_next(self, here: str, previous: str) -> str:
        """Where the route goes after ``here``: a neighbour, down into a cave, or back up."""
        rng, biome = self.rng, BIOMES[here]
        if biome.cave:
            if self.depth < 3 and rng.random() < 0.55:
                self.depth += 1
                return rng.choice(biome.neighbours)
            return self.entrance
        if biome.water < 0.5 and here != "Beach" and rng.random() < 0.15:
            self.entrance, self.depth = here, 1
            return rng.choices(("Dripstone Caves", "Lush Caves"), (6, 4))[0]
        options = [n for n in biome.neighbours if n != previous] or list(biome.neighbours)
        return rng.choice(options)

    def _advance_route(self) -> None:
        self.visit_left -= 1
        if self.visit_left > 0:
            return
        self.previous, self.biome = self.biome, self.next_biome
        self.visit_left = self._visit_ticks(self.biome)
        self.next_biome = self._choose_next(self.biome, self.previous)
        self.pace = self.rng.uniform(0.15, 0.6)

    def _advance_weather(self) -> None:
        self.weather_left -= 1
        if self.weather_left > 0:
            return
        rng = self.rng
        if self.weather == "Clear":
            self.weather = "Raining"
        elif self.weather == "Raining":
            self.weather = "Thundering" if rng.random() < 0.35 else "Clear"
        else:
            self.weather = "Raining" if rng.random() < 0.5 else "Clear"
        self.weather_left = int(rng.uniform(*_WEATHER_MINUTES[self.weather]) * 1200)

    # --- hostiles and fights ----------------------------------------------------------

    def _arrival_ticks(self, biome: Biome, time: str) -> float:
        """Mean ticks between hostiles coming into range: dark places and nights are busy."""
        if biome.cave:
            return 2500.0 if biome.name == "Deep Dark" else 1500.0
        if time in NIGHT_LABELS or biome.dark:
            return 1100.0
        if time == "Sunset":
            return 3000.0
        return 4000.0 if self.weather == "Thundering" else 12000.0

    def _step_hostiles(self, biome: Biome, time: str) -> None:
        rng = self.rng
        if rng.random() * self._arrival_ticks(biome, time) < 1.0:
            names, weights = _HOSTILES[biome.hostiles]
            pack = rng.choices((1, 2, 3), (5, 3, 2))[0]  # zombies and skeletons come in packs
            self.monsters += rng.choices(names, weights, k=pack)
        if not biome.cave and biome.water < 0.5 and rng.random() < 1 / 80000:
            self.monsters.extend(["patrik"] * rng.randint(2, 4))  # a pillager patrol
        if not self.monsters:
            self.engaged = self.fleeing = False
            return
        if self.engaged:
            self._fight_tick()
            return
        daylight = not biome.cave and time in DAY_LABELS
        for name in list(self.monsters):
            leave = 1 / 150 if daylight and name in _BURN_IN_DAYLIGHT else 1 / 500
            if rng.random() < leave:
                self.monsters.remove(name)
        self.engaged = rng.random() < 0.002 * len(self.monsters)

    def _fight_tick(self) -> None:
        """Hostiles hit, the player strikes back, and flees when health runs low."""
        rng = self.rng
        self.fleeing = self.health <= 6
        if rng.random() < len(self.monsters) / (390 if self.fleeing else 130):
            attacker = rng.choice(self.monsters)
            if attacker == "creeper":
                self.monsters.remove(attacker)  # it explodes
            self._damage(_DAMAGE.get(attacker, 3), attacked=True)
        if self.fleeing:
            self.monsters = [m for m in self.monsters if rng.random() >= 1 / 60]
        elif self.monsters and rng.random() < 1 / 110:
            self.monsters.remove(rng.choice(self.monsters))
            self.exhaustion += 0.1

    def _damage(self, amount: int, *, attacked: bool) -> None:
        self.health = max(1, self.health - amount)  # this player always escapes
        self.exhaustion += 0.1
        if attacked:
            self.hurt = 10  # the hurt animation lasts 10 ticks

    # --- health and hunger ------------------------------------------------------------

    def _step_vitals(self) -> None:
        """Natural regeneration, exhaustion into hunger, and meals (Minecraft's rules)."""
        if self.health < 20 and self.food >= 18:
            self.regen += 1
            if self.regen >= (10 if self.food == 20 and self.saturation > 0 else 80):
                self.health, self.regen = self.health + 1, 0
                self.exhaustion += 6.0
        while self.exhaustion >= 4.0:
            self.exhaustion -= 4.0
            if self.saturation > 0:
                self.saturation = max(0.0, self.saturation - 1.0)
            else:
                self.food = max(0, self.food - 1)
        if self.eating:
            self.eating -= 1
            if not self.eating:
                food, saturation = _MEALS[self.meal]
                self.food = min(20, self.food + food)
                self.saturation = min(float(self.food), self.saturation + saturation)
        elif not self.engaged and (
            self.food <= self.meal_at or (self.food < 18 and self.health < 20)
        ):
            self.eating, self.meal = 32, self.rng.randrange(len(_MEALS))
            self.meal_at = self.rng.randint(12, 16)

    # --- movement ---------------------------------------------------------------------

    def _step_body(self, biome: Biome) -> None:
        rng = self.rng
        self.wet = _chain(rng.random(), self.wet, biome.water, 120.0)
        self.sheltered = _chain(rng.random(), self.sheltered, biome.cover, 100.0)
        if self.eating or self.rail:
            self.sprint = self.sneak = False
        else:
            can_sprint = self.food > 6
            self.sprint = can_sprint and _chain(
                rng.random(), self.sprint, self._sprint_share(biome), 40.0
            )
            self.sneak = not self.sprint and _chain(
                rng.random(), self.sneak, self._sneak_share(biome), 60.0
            )
        if self.airborne:
            self.airborne -= 1
        elif not self.eating and rng.random() < (0.05 if self.sprint else 0.008):
            self.airborne = 11
            self.exhaustion += 0.2 if self.sprint else 0.05
        if self.sprint:
            self.exhaustion += 0.028  # 0.1 per metre at 5.6 m/s
        self._step_hazards(biome)

    def _sprint_share(self, biome: Biome) -> float:
        if self.fleeing:
            return 0.9
        if self.engaged:
            return 0.55
        if biome.cave:
            return 0.03 if biome.name == "Deep Dark" else 0.12
        return 0.3 if self.wet else self.pace

    def _sneak_share(self, biome: Biome) -> float:
        if self.engaged or self.wet:
            return 0.0
        if biome.name == "Deep Dark":
            return 0.6  # sneaking past the sculk sensors
        return 0.05 if biome.cave else 0.01

    def _step_hazards(self, biome: Biome) -> None:
        """Minecart rides and lava in caves; burning afterwards."""
        rng = self.rng
        if self.rail:
            self.rail -= 1
        elif biome.cave and biome.name != "Deep Dark" and rng.random() < 1 / 15000:
            self.rail = rng.randint(200, 500)  # an abandoned mineshaft's track
        if self.lava:
            self.lava -= 1
            self.fire = rng.randint(100, 160)
            if self.lava % 10 == 0:
                self._damage(2, attacked=False)
        elif biome.name == "Dripstone Caves" and rng.random() < 1 / 25000:
            self.lava = rng.randint(8, 20)
        if self.fire and not self.lava:
            self.fire = 0 if self.wet else self.fire - 1
            if self.fire % 20 == 0:
                self._damage(1, attacked=False)

    # --- one tick, one window ---------------------------------------------------------

    def step(self) -> tuple:
        """Advance one tick; return its state: a label per field, then the hostiles in range."""
        self.tick += 1
        self._advance_route()
        self._advance_weather()
        biome, time = BIOMES[self.biome], time_label(self.tick)
        self._step_hostiles(biome, time)
        self._step_vitals()
        self._step_body(biome)
        if self.hurt:
            self.hurt -= 1
        raining = self.weather != "Clear"
        climate = "Snow" if biome.cold else "Cloudy" if biome.dry else self.weather
        rained = raining and not (biome.cave or biome.cold or biome.dry or self.sheltered)
        water = "Toching Water" if self.wet else "Being Rained" if rained else "Not Touching Water"
        return (
            self.biome,
            time,
            climate if raining else "Clear",
            "Cold" if biome.cold else "Not Cold",
            health_label(self.health),
            hunger_label(self.food),
            water,
            "On Fire" if self.fire else "Not On Fire",
            "Sprinting" if self.sprint else "Not Sprinting",
            "Sneaking" if self.sneak else "Not Sneaking",
            "Not On Ground"
            if self.airborne or self.rail or (self.wet and biome.water > 0.5)
            else "On Ground",
            "On Rail" if self.rail else "Not On Rail",
            "In Lava" if self.lava else "Not In Lava",
            "Attacked" if self.hurt else "Not Attacked",
            tuple(self.monsters),
        )

    def window(self) -> _Window:
        """Play one window of wall time and tally it; consecutive equal ticks are tallied once."""
        ticks = self.rng.randint(*TICKS_PER_WINDOW)
        counts: list[dict[str, int]] = [{} for _ in _FIELD_GROUPS]
        hostiles: dict[str, int] = {}
        state, run = self.step(), 1
        for _ in range(ticks - 1):
            now = self.step()
            if now == state:
                run += 1
                continue
            _tally(counts, hostiles, state, run)
            state, run = now, 1
        _tally(counts, hostiles, state, run)
        return _Window(ticks, self._entries(counts, hostiles))

    def _entries(self, counts: list[dict[str, int]], hostiles: dict[str, int]) -> list[_Entry]:
        entries = []
        for field, group in enumerate(_FIELD_GROUPS):
            if group == "Attacked":
                entries += _monster_entries(hostiles)
            entries += _share_entries(group, counts[field], _FIXED_ORDER.get(field))
        entries.append(_Entry("BiomePredict", *self._predict(), _SCORE))
        return entries

    def _predict(self) -> tuple[str, int]:
        """The biome ahead and how many sampled points lie in it: the next biome when its
        border is near (the closer, the higher), else the current one."""
        reach = 30 * TICKS_PER_SECOND
        if self.visit_left < reach:
            closeness = 1.0 - self.visit_left / reach
            share = closeness * self.rng.uniform(0.6, 1.0)
            return self.next_biome, max(1, round(SCORE_SAMPLES * share))
        return self.biome, self.rng.randint(18, SCORE_SAMPLES)


def _tally(counts: list[dict[str, int]], hostiles: dict[str, int], state: tuple, run: int) -> None:
    for field, label in enumerate(state[:-1]):
        tally = counts[field]
        tally[label] = tally.get(label, 0) + run
    for name in state[-1]:
        hostiles[name] = hostiles.get(name, 0) + run


def _share_entries(group: str, tally: dict[str, int], order: Sequence[str] | None) -> list[_Entry]:
    """One set of exclusive labels, in ``order`` (default: first occurrence)."""
    labels = [label for label in order or tally if label in tally]
    ranked = sorted(labels, key=tally.__getitem__, reverse=True)
    top = labels.index(ranked[0])
    partner = labels.index(ranked[1]) - top if len(ranked) > 1 else 0
    return [
        _Entry(group, label, tally[label], _PERCENT, i == top, partner if i == top else 0)
        for i, label in enumerate(labels)
    ]


def _monster_entries(hostiles: dict[str, int]) -> list[_Entry]:
    """Every named type (0 when absent, as the mod writes it) and ``sum`` over all hostiles."""
    total = sum(hostiles.values())
    return [
        _Entry("Monster", name, total if name == "sum" else hostiles.get(name, 0), _AVERAGE)
        for name in MONSTER_TYPES
    ]


def _simulate_windows(n_windows: int, seed: int, start_tick: int) -> list[_Window]:
    session = _Session(seed, start_tick)
    return [session.window() for _ in range(n_windows)]


def simulate_recording(
    n_windows: int, *, seed: int = 0, start_time: str = START_TIME, start_tick: int = 1000
) -> list[dict]:
    """Snapshots of a plausible session of ``n_windows`` 10-second windows, in file structure.

    ``start_tick`` is the in-game time of day at the start (1000 = early morning), so 30
    minutes run from day through sunset and night to the next sunrise. ``start_time`` is the
    wall-clock start; it names the files (``write_capture_dir``) and does not change the play.
    """
    datetime.strptime(start_time, "%Y%m%d%H%M%S")  # a bad start time fails here, not later
    windows = _simulate_windows(n_windows, seed, start_tick)
    return [window.snapshot(index) for index, window in enumerate(windows)]


def capture_text(snapshot: Mapping) -> str:
    """A snapshot as the mod writes it: 8-space indent, no space after colons, final newline
    (``json.loads`` of sample-4.json through this gives the file back byte for byte)."""
    return json.dumps(snapshot, indent=8, separators=(",", ":")) + "\n"


def write_capture_dir(snapshots: Sequence[dict], out_dir: Path, start_time: str) -> list[Path]:
    """Write snapshots as the mod does, one ``<start_time>-<Index>.json`` file per window."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for snapshot in snapshots:
        path = out_dir / f"{start_time}-{snapshot['Index']}.json"
        write_text(path, capture_text(snapshot))
        paths.append(path)
    return paths


# --- recording frames for benchmarks -------------------------------------------------------


@dataclass
class _Pool:
    """Simulated windows flattened into numpy arrays: the raw material of ``simulate_frame``."""

    ticks: np.ndarray  # per window
    offsets: np.ndarray  # per window, into the entry arrays (length windows + 1)
    group: np.ndarray  # per entry: code into GROUPS
    label: np.ndarray  # per entry: code into labels
    count: np.ndarray
    kind: np.ndarray
    dominant: np.ndarray
    partner: np.ndarray
    labels: list[str]

    @classmethod
    def of(cls, windows: Sequence[_Window]) -> _Pool:
        entries = [e for w in windows for e in w.entries]
        codes: dict[str, int] = {}
        group_code = {g: i for i, g in enumerate(GROUPS)}
        sizes = np.array([len(w.entries) for w in windows])
        return cls(
            ticks=np.array([w.ticks for w in windows], dtype=np.int64),
            offsets=np.concatenate([[0], np.cumsum(sizes)]),
            group=np.array([group_code[e.group] for e in entries], dtype=np.int32),
            label=np.array([codes.setdefault(e.label, len(codes)) for e in entries], np.int32),
            count=np.array([e.count for e in entries], dtype=np.int64),
            kind=np.array([e.kind for e in entries], dtype=np.int8),
            dominant=np.array([e.dominant for e in entries], dtype=bool),
            partner=np.array([e.partner for e in entries], dtype=np.int64),
            labels=list(codes),
        )

    def snapshots(
        self, picks: np.ndarray, shift: np.ndarray, retimed: np.ndarray, rng: np.random.Generator
    ) -> pl.Series:
        """The snapshot column for windows ``picks`` of the pool. Windows marked ``retimed``
        gain ``shift`` ticks (the dominant label of every exclusive set absorbs them) and
        each set's dominant label trades up to 3 ticks with its runner-up."""
        sizes = np.diff(self.offsets)[picks]
        offsets = np.concatenate([[0], np.cumsum(sizes)])
        entry = np.arange(offsets[-1]) + np.repeat(self.offsets[picks] - offsets[:-1], sizes)
        kind = self.kind[entry]
        count = self.count[entry] + np.repeat(shift, sizes) * self.dominant[entry]
        donors = np.flatnonzero((self.partner[entry] != 0) & np.repeat(retimed, sizes))
        takers = donors + self.partner[entry[donors]]
        moved = np.maximum(rng.integers(-3, 4, size=donors.size), 1 - count[takers])
        count[donors] -= moved  # the runner-up keeps at least one tick
        count[takers] += moved
        divisor = np.repeat(self.ticks[picks] + shift, sizes).astype(np.float64)
        divisor[kind == _SCORE] = SCORE_SAMPLES
        value = count / divisor * np.array([100.0, 1.0, 100.0])[kind]  # as ``_value`` computes
        struct = pa.StructArray.from_arrays(
            [_strings(GROUPS, self.group[entry]), _strings(self.labels, self.label[entry]), value],
            names=["group", "label", "value"],
        )
        return pl.Series("snapshot", pa.LargeListArray.from_arrays(offsets, struct))


def _strings(names: Sequence[str], codes: np.ndarray) -> pa.Array:
    """``names[codes]`` as an Arrow string-view array, built without per-row Python."""
    return (
        pl.Series(names, dtype=pl.String)
        .gather(codes)
        .to_arrow(compat_level=pl.CompatLevel.newest())
    )


def _block_picks(rng: np.random.Generator, length: int, pool_size: int) -> np.ndarray:
    """Pool windows for a long recording: stretches of 5-20 minutes of simulated play, each
    from a random point of the pool, spliced one after another."""
    lengths = rng.integers(30, 121, size=length // 30 + 1).clip(max=pool_size)
    lengths = lengths[: np.searchsorted(np.cumsum(lengths), length) + 1]
    starts = rng.integers(0, pool_size - lengths + 1)
    block_start = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    picks = np.repeat(starts - block_start, lengths) + np.arange(lengths.sum())
    return picks[:length]


def _recording_ids(lengths: Sequence[int]) -> list[str]:
    """Start times of back-to-back recordings, an hour apart after each one ends."""
    start, ids = datetime.strptime(START_TIME, "%Y%m%d%H%M%S"), []
    for length in lengths:
        ids.append(start.strftime("%Y%m%d%H%M%S"))
        start += timedelta(seconds=length * WINDOW_SECONDS + 3600)
    return ids


def simulate_frame(
    n_windows: int, *, seed: int = 0, n_recordings: int = 1, pool_windows: int = 720
) -> pl.DataFrame:
    """``n_windows`` windows split over ``n_recordings`` recordings, as a recording frame.

    One session of up to ``pool_windows`` windows is simulated tick by tick; a recording no
    longer than that is its first windows unchanged (equal to ``simulate_recording``), longer
    or further recordings splice stretches of it and re-time every window by a few ticks, so
    values vary while label sets stay realistic. A million windows take seconds.
    """
    if n_windows < 1 or not 1 <= n_recordings <= n_windows:
        raise ValueError("need n_windows >= n_recordings >= 1")
    lengths = [len(part) for part in np.array_split(np.arange(n_windows), n_recordings)]
    pool_size = min(max(lengths), pool_windows)
    pool = _Pool.of(_simulate_windows(pool_size, seed, 1000))
    plans = [_recording_picks(pool, number, length, seed) for number, length in enumerate(lengths)]
    picks = np.concatenate([p for p, _ in plans])
    shift = np.concatenate([np.zeros(p.size, np.int64) if s is None else s for p, s in plans])
    retimed = np.repeat([s is not None for _, s in plans], lengths)
    recording = np.repeat(np.arange(n_recordings), lengths)
    index = np.arange(n_windows) - np.repeat(np.cumsum([0, *lengths[:-1]]), lengths)
    frame = pl.DataFrame(
        {
            "recording": pl.Series(_recording_ids(lengths), dtype=pl.String).gather(recording),
            "index": index,
            "start_s": index * WINDOW_SECONDS,
            "end_s": (index + 1) * WINDOW_SECONDS,
        }
    )
    snapshots = pool.snapshots(picks, shift, retimed, np.random.default_rng([seed, n_recordings]))
    return frame.with_columns(
        pl.format("{}-{}.json", "recording", "index").alias("source"), snapshots
    )


def _recording_picks(
    pool: _Pool, number: int, length: int, seed: int
) -> tuple[np.ndarray, np.ndarray | None]:
    """Pool windows and tick shifts for recording ``number``: the pool itself, unchanged
    (shift None), for a first recording that fits in it; spliced, re-timed stretches
    otherwise."""
    size = pool.ticks.size
    if number == 0 and length <= size:
        return np.arange(length), None
    rng = np.random.default_rng([seed, number])
    picks = _block_picks(rng, length, size)
    retimed = (pool.ticks[picks] + rng.integers(-3, 4, size=length)).clip(*TICKS_PER_WINDOW)
    return picks, retimed - pool.ticks[picks]


# --- what happens in a recording ------------------------------------------------------------


@dataclass(frozen=True)
class Fight:
    """A run of combat windows (``start`` to ``end`` inclusive) and what it cost."""

    start: int
    end: int
    lowest_health: str
    hostiles: tuple[str, ...]


def dominant(group: Mapping[str, float]) -> str:
    """The label holding most of a group's ticks."""
    return max(group, key=group.__getitem__)


def find_fights(snapshots: Sequence[Mapping], profile: Profile | None = None) -> list[Fight]:
    """Fights: runs of combat windows (the profile's combat rules), bridging one-window lulls.

    The lowest health counts the window after the run too: the last hit lands at its end.
    """
    profile = profile or load_profile()
    combat = [i for i, s in enumerate(snapshots) if is_combat(s, profile)]
    runs: list[list[int]] = []
    for i in combat:
        if runs and i - runs[-1][-1] <= 2:
            runs[-1].append(i)
        else:
            runs.append([i])
    fights = []
    for run in runs:
        span = snapshots[run[0] : run[-1] + 2]
        health = {label for s in span for label in s["Health"]}
        named = {m for s in span for m, v in s["Monster"].items() if v > 0 and m != "sum"}
        lowest = max(health, key=HEALTH_ORDER.index)
        fights.append(Fight(run[0], run[-1], lowest, tuple(sorted(named))))
    return fights


def missing_events(snapshots: Sequence[Mapping]) -> list[str]:
    """What the bundled sample must show and this recording lacks (empty: it has it all)."""
    labels = {g: {lab for s in snapshots for lab in s[g]} for g in ("Biome", "Time", "Climate")}
    hunger = {lab for s in snapshots for lab in s["Hunger"]}
    hurt = [f for f in find_fights(snapshots) if f.lowest_health != "Full"]
    needs = {
        "four biomes": len(labels["Biome"]) >= 4,
        "a cave": bool(labels["Biome"] & CAVE_BIOMES),
        "day": bool(labels["Time"] & DAY_LABELS),
        "night": bool(labels["Time"] & NIGHT_LABELS),
        "two kinds of weather": len(labels["Climate"]) >= 2,
        "two fights that cost health": len(hurt) >= 2,
        "hunger changes": len(hunger) >= 2,
        "a cold biome": any("Cold" in s["Temperature"] for s in snapshots),
    }
    return [need for need, met in needs.items() if not met]


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m bgm_batch.testing.simulate OUT_DIR``: write a synthetic capture folder."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--windows", type=int, default=SAMPLE_WINDOWS)
    parser.add_argument("--seed", type=int, default=SAMPLE_SEED)
    parser.add_argument("--start-time", default=START_TIME)
    args = parser.parse_args(argv)
    snapshots = simulate_recording(args.windows, seed=args.seed, start_time=args.start_time)
    paths = write_capture_dir(snapshots, args.out_dir, args.start_time)
    print(f"wrote {len(paths)} windows to {args.out_dir}")


if __name__ == "__main__":
    main()
