"""Regenerate the bundled sample recording and its timeline, deterministically.

The sample is ``simulate_recording(SAMPLE_WINDOWS, seed=SAMPLE_SEED)``: 31 minutes of
synthetic play in the mod's capture format. ``--search`` finds the first seed whose recording
holds every event the sample must show (``missing_events``); use it after changing the
generator, then set ``SAMPLE_SEED`` in ``bgm_batch/simulate.py`` to what it prints.

    .venv/bin/python tools/make_sample.py            # writes data/sample/capture, timeline.md
    .venv/bin/python tools/make_sample.py --search   # prints the first suitable seed
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from bgm_batch.atomic import write_text
from bgm_batch.testing.simulate import (
    HEALTH_ORDER,
    SAMPLE_SEED,
    SAMPLE_WINDOWS,
    START_TIME,
    WINDOW_SECONDS,
    dominant,
    find_fights,
    missing_events,
    simulate_recording,
    write_capture_dir,
)

SAMPLE_DIR = Path(__file__).resolve().parents[1] / "data" / "sample"
WINDOWS_PER_MINUTE = 6


def _clock(window: int) -> str:
    seconds = int(window * WINDOW_SECONDS)
    return f"{seconds // 60:02d}:{seconds % 60:02d}"


def _sequence(labels: Iterable[str]) -> str:
    """Labels in order with repeats collapsed: ``Day → Noon``."""
    kept: list[str] = []
    for label in labels:
        if not kept or kept[-1] != label:
            kept.append(label)
    return " → ".join(kept)


def _hostiles(windows: Sequence[Mapping]) -> str:
    named = sorted({m for s in windows for m, v in s["Monster"].items() if v > 0 and m != "sum"})
    unnamed = any(
        s["Monster"]["sum"] > sum(v for m, v in s["Monster"].items() if m != "sum") + 1e-9
        for s in windows
    )
    return ", ".join(named + (["others"] if unnamed else [])) or "-"


def _minute_row(minute: int, windows: Sequence[Mapping], fights: Sequence) -> str:
    first = minute * WINDOWS_PER_MINUTE
    last = first + len(windows) - 1
    health = max({h for s in windows for h in s["Health"]}, key=HEALTH_ORDER.index)
    events = [f"fight {n}" for n, f in enumerate(fights, 1) if f.start <= last and f.end >= first]
    cells = [
        f"{_clock(first)}",
        _sequence(dominant(s["Biome"]) for s in windows),
        _sequence(dominant(s["Time"]) for s in windows),
        _sequence(dominant(s["Climate"]) for s in windows),
        health if health == "Full" else f"down to {health}",
        _sequence(dominant(s["Hunger"]) for s in windows),
        _hostiles(windows),
        ", ".join(events) or "-",
    ]
    return "| " + " | ".join(cells) + " |"


def timeline_markdown(snapshots: Sequence[Mapping], seed: int) -> str:
    """What happens in the recording, minute by minute, and its fights."""
    fights = find_fights(snapshots)
    lines = [
        "# The bundled sample recording, minute by minute",
        "",
        f"Synthetic: `simulate_recording({len(snapshots)}, seed={seed})` from"
        " `bgm_batch.testing.simulate`, written by `tools/make_sample.py` (do not edit by hand).",
        f"{len(snapshots)} windows of {WINDOW_SECONDS:g} s, capture start time {START_TIME}.",
        "Each row is one minute: dominant labels in order, the lowest health reached, the",
        "hostiles within range (`others`: types the mod counts only in `sum`).",
        "",
        "| minute | biome | time | weather | health | hunger | hostiles | events |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for minute, first in enumerate(range(0, len(snapshots), WINDOWS_PER_MINUTE)):
        windows = snapshots[first : first + WINDOWS_PER_MINUTE]
        lines.append(_minute_row(minute, windows, fights))
    lines += ["", "## Fights (combat windows by the profile's rules)", ""]
    for n, fight in enumerate(fights, 1):
        biome = _sequence(dominant(s["Biome"]) for s in snapshots[fight.start : fight.end + 1])
        lines.append(
            f"{n}. {_clock(fight.start)}-{_clock(fight.end + 1)} (windows {fight.start}-"
            f"{fight.end}) in {biome}: {', '.join(fight.hostiles) or 'others'}; "
            f"health down to {fight.lowest_health}."
        )
    return "\n".join(lines) + "\n"


def write_sample(out_dir: Path, seed: int) -> None:
    """Replace the capture folder and the timeline with those of ``seed``."""
    snapshots = simulate_recording(SAMPLE_WINDOWS, seed=seed)
    capture = out_dir / "capture"
    for old in capture.glob("*.json"):
        old.unlink()
    write_capture_dir(snapshots, capture, START_TIME)
    write_text(out_dir / "timeline.md", timeline_markdown(snapshots, seed))
    print(f"wrote {len(snapshots)} windows (seed {seed}) to {capture} and timeline.md")


def first_suitable_seed(limit: int = 1000) -> int:
    """The first seed whose sample-length recording has every required event."""
    for seed in range(limit):
        if not missing_events(simulate_recording(SAMPLE_WINDOWS, seed=seed)):
            return seed
    raise RuntimeError(f"no seed below {limit} has every required event")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=SAMPLE_DIR)
    parser.add_argument("--search", action="store_true", help="print the first suitable seed")
    args = parser.parse_args()
    if args.search:
        print(first_suitable_seed())
        return
    write_sample(args.out, SAMPLE_SEED)


if __name__ == "__main__":
    main()
