"""Derive the template backend's music vocabulary from MusicCaps' human-written aspect lists.

The rule-based template backend describes music with words that real people used for real
music: for each mood, instrument, tempo and style tag below, this script keeps the MusicCaps
aspect terms that express it (seed words for moods and styles; for instruments, phrases made of
the instrument plus texture words such as "sustained strings melody"), weighted by how often
musicians wrote them. The result ships inside the package with MusicCaps' attribution and
licence (CC-BY-SA 4.0); the package never reads the CSV at run time.

    .venv/bin/python tools/build_vocabulary.py \
        --csv ../shared/data/musiccaps/musiccaps-public.csv \
        --out src/bgm_batch/resources/musiccaps_vocabulary.json
"""

from __future__ import annotations

import argparse
import ast
import csv
import hashlib
import json
from collections import Counter
from pathlib import Path

from bgm_batch.atomic import write_text

ATTRIBUTION = (
    "Derived from MusicCaps (Google; Agostinelli et al., 'MusicLM: Generating Music From Text', "
    "2023), musiccaps-public.csv, licensed CC-BY-SA 4.0 "
    "(https://creativecommons.org/licenses/by-sa/4.0/). Changes: aspect terms filtered by the "
    "tag lexicons of tools/build_vocabulary.py and counted."
)

# Single-word aspect terms that express each mood tag.
MOOD_SEEDS: dict[str, list[str]] = {
    "tense": ["tense", "intense", "suspenseful", "aggressive", "thrilling", "urgent", "menacing"],
    "dark": ["dark", "ominous", "sinister", "eerie", "haunting", "spooky", "mysterious", "scary"],
    "calm": ["calm", "calming", "relaxing", "soothing", "peaceful", "serene", "tranquil", "mellow"],
    "bright": ["happy", "cheerful", "joyful", "uplifting", "bright", "hopeful", "playful"],
    "melancholic": ["melancholic", "sad", "nostalgic", "sentimental", "wistful", "lonely"],
    "airy": ["dreamy", "ethereal", "atmospheric", "mystical", "airy", "magical", "spacey"],
    "epic": ["epic", "dramatic", "powerful", "cinematic", "triumphant", "majestic", "heroic"],
    "warm": ["warm", "gentle", "soft", "tender", "pleasant", "easygoing"],
    "energetic": ["energetic", "exciting", "vigorous", "spirited", "lively", "powerful"],
}

# Instrument tags and the names an aspect phrase may use for them.
INSTRUMENT_HEADS: dict[str, list[str]] = {
    "strings": ["strings", "string section", "violins", "violin"],
    "cello": ["cello", "cellos"],
    "piano": ["piano", "grand piano"],
    "flute": ["flute", "flutes"],
    "harp": ["harp"],
    "bells": ["bells", "glockenspiel", "music box", "chimes"],
    "synth pad": ["synth pad", "synth pads", "pad", "pads"],
    "drone": ["drone", "drones"],
    "choir": ["choir"],
    "brass": ["brass", "brass section", "french horn", "french horns", "horns", "horn section"],
    "timpani": ["timpani"],
    "drums": ["drums", "drumming", "taiko drums", "percussion", "hand percussion"],
    "acoustic guitar": ["acoustic guitar"],
    "bass": ["synth bass", "sub bass", "double bass", "upright bass"],
    "organ": ["organ", "church organ"],
    "marimba": ["marimba"],
    "oud": ["oud"],
}

# Words allowed beside an instrument name: textures a composer would write, and the part it
# plays. Anything else (a genre, a quality complaint, a vocal) disqualifies the phrase.
TEXTURES = frozenset(
    {
        "sustained",
        "mellow",
        "soft",
        "plucked",
        "arpeggiated",
        "staccato",
        "pizzicato",
        "wide",
        "low",
        "deep",
        "breathy",
        "shimmering",
        "dark",
        "reverberant",
        "echoing",
        "intense",
        "punchy",
        "distorted",
        "gentle",
        "atmospheric",
        "ambient",
        "cinematic",
        "acoustic",
        "subtle",
        "tribal",
        "steady",
        "continuous",
        "warm",
        "bright",
    }
)
ROLES = frozenset(
    {"melody", "chords", "harmony", "section", "hits", "rolls", "accompaniment", "arpeggios"}
)

TEMPO_SEEDS: dict[str, list[str]] = {
    "slow": ["slow tempo", "slower tempo", "downtempo", "slow to medium tempo"],
    "medium": ["medium tempo", "moderate tempo", "mid tempo", "steady tempo"],
    "fast": ["fast tempo", "uptempo", "medium fast tempo", "faster tempo", "high tempo"],
}

STYLE_SEEDS: dict[str, list[str]] = {
    "cinematic": ["cinematic", "orchestral", "epic", "dramatic"],
    "ambient": ["ambient", "minimalist", "meditative", "atmospheric"],
    "folk": ["folk", "traditional", "acoustic"],
    "classical": ["classical", "orchestral", "chamber"],
    "electronic": ["electronic", "electronica", "synthwave"],
}

MIN_COUNT = 2


def count_aspects(csv_path: Path) -> Counter[str]:
    """How many clips list each aspect term (lower-cased, stripped)."""
    counts: Counter[str] = Counter()
    with open(csv_path, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            for term in ast.literal_eval(row["aspect_list"]):
                counts[term.strip().lower()] += 1
    return counts


def _modifiers(phrase: str, head: str) -> list[str] | None:
    """The texture words around ``head`` in ``phrase``; None when the phrase is not
    ``head`` plus allowed words only."""
    words, head_words = phrase.split(), head.split()
    for start in range(len(words) - len(head_words) + 1):
        if words[start : start + len(head_words)] == head_words:
            rest = words[:start] + words[start + len(head_words) :]
            if all(word in TEXTURES or word in ROLES for word in rest) and len(words) <= 4:
                return [word for word in rest if word in TEXTURES]
    return None


def instrument_phrases(counts: Counter[str]) -> dict[str, list[list]]:
    """For each instrument tag: [phrase, count, texture words], most used first."""
    vocabulary: dict[str, list[list]] = {}
    for tag, heads in INSTRUMENT_HEADS.items():
        found: dict[str, list] = {}
        for phrase, count in counts.items():
            if count < MIN_COUNT:
                continue
            for head in heads:
                modifiers = _modifiers(phrase, head)
                if modifiers is not None:
                    found[phrase] = [phrase, count, modifiers]
                    break
        vocabulary[tag] = sorted(found.values(), key=lambda item: (-item[1], item[0]))
    return vocabulary


def seeded_terms(counts: Counter[str], seeds: dict[str, list[str]]) -> dict[str, list[list]]:
    """For each tag: [term, count] of the seed terms musicians actually used, most used first."""
    return {
        tag: sorted(
            ([term, counts[term]] for term in terms if counts[term] >= MIN_COUNT),
            key=lambda item: (-item[1], item[0]),
        )
        for tag, terms in seeds.items()
    }


def build_vocabulary(csv_path: Path) -> dict:
    """The whole vocabulary document, attribution and source checksum included."""
    counts = count_aspects(csv_path)
    return {
        "name": "musiccaps-vocabulary",
        "version": 1,
        "generated_by": "tools/build_vocabulary.py",
        "source": "MusicCaps musiccaps-public.csv",
        "source_sha256": hashlib.sha256(csv_path.read_bytes()).hexdigest(),
        "license": "CC-BY-SA-4.0",
        "attribution": ATTRIBUTION,
        "moods": seeded_terms(counts, MOOD_SEEDS),
        "instruments": instrument_phrases(counts),
        "tempos": seeded_terms(counts, TEMPO_SEEDS),
        "styles": seeded_terms(counts, STYLE_SEEDS),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--csv", type=Path, default=Path("../shared/data/musiccaps/musiccaps-public.csv")
    )
    parser.add_argument(
        "--out", type=Path, default=Path("src/bgm_batch/resources/musiccaps_vocabulary.json")
    )
    args = parser.parse_args()
    vocabulary = build_vocabulary(args.csv)
    empty = [
        f"{section}/{tag}"
        for section in ("moods", "instruments", "tempos", "styles")
        for tag, terms in vocabulary[section].items()
        if not terms
    ]
    if empty:
        raise SystemExit(f"no MusicCaps terms for: {', '.join(empty)}")
    write_text(args.out, json.dumps(vocabulary, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
