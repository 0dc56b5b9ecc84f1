"""Why each track was picked, in one or two sentences an editor can read.

The template reason names what matched: the scene, the caption words the track's description
shares, its tempo, key and energy against what the captions asked for, and the feedback it
answers. With a text backend other than ``template`` (the ``hf`` LLM) the model writes the
reason from the same facts; an empty completion falls back to the template.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

from bgm_batch.audio.synth.compose import MusicParams, parse_caption
from bgm_batch.library.rank import STOPWORDS, Feedback, Stretch, covers, scene_words
from bgm_batch.text.protocol import TextBackend

MAX_MATCHED_WORDS = 4
REASON_MAX_NEW_TOKENS = 60
ENERGY_TOLERANCE = 0.25
TEMPO_TOLERANCE_OCTAVES = 0.2  # about 15 %; half or double tempo counts too
GENERIC_WORDS = frozenset(
    {"bpm", "tempo", "major", "minor", "key", "energy", "high", "medium", "low"}
)


def _energy_word(energy: float) -> str:
    return "high" if energy >= 0.6 else "low" if energy < 0.35 else "medium"


def matched_words(captions: Sequence[str], description: str) -> list[str]:
    """Caption words (in caption order) that the track's description also uses, leaving out
    the words every description has (bpm, tempo, key names)."""
    have = set(re.findall(r"[a-z]+", description.lower())) - GENERIC_WORDS
    words = re.findall(r"[a-z]+", " ".join(captions).lower())
    found = [w for w in dict.fromkeys(words) if w in have and w not in STOPWORDS and len(w) > 2]
    return found[:MAX_MATCHED_WORDS]


def fitting_features(track: dict, wanted: MusicParams) -> list[str]:
    """The measured features that agree with what the captions ask for."""
    fits = []
    if abs(track["energy"] - wanted.intensity) < ENERGY_TOLERANCE:
        fits.append(f"{_energy_word(track['energy'])} energy")
    if (track["mode"] == "minor") == wanted.minor:
        fits.append(f"{track['key']} {track['mode']} key")
    octaves = abs(math.log2(max(track["tempo_bpm"], 1.0) / wanted.tempo))
    if min(octaves, abs(octaves - 1)) < TEMPO_TOLERANCE_OCTAVES:
        fits.append(f"{track['tempo_bpm']:.0f} bpm pulse")
    return fits


def facts(stretch: Stretch, track: dict, feedback: Sequence[Feedback]) -> dict[str, str]:
    """What the reason is made of, as short phrases."""
    wanted = parse_caption(" ".join(stretch.captions))
    asked = [turn.text for turn in feedback if covers(turn.scope, stretch)]
    return {
        "title": track["title"] or track["file"],
        "scene": scene_words(stretch.scene) or "this",
        "matched": ", ".join(matched_words(stretch.captions, track["text"])),
        "fits": " and ".join(fitting_features(track, wanted)),
        "wanted": f"{'intense' if wanted.intensity >= 0.6 else 'calm'} "
        f"{'minor' if wanted.minor else 'major'}-key music",
        "feedback": "; ".join(asked),
    }


def template_reason(fact: dict[str, str]) -> str:
    """One or two sentences from ``facts``."""
    match = f"it shares {fact['matched']} with the caption" if fact["matched"] else ""
    verb = "fit" if " and " in fact["fits"] else "fits"
    fits = f"its {fact['fits']} {verb} the {fact['wanted']} asked for" if fact["fits"] else ""
    why = "; ".join(p for p in (match, fits) if p) or "it is the closest match in the library"
    reason = f"\u201c{fact['title']}\u201d for the {fact['scene']} stretch: {why}."
    if fact["feedback"]:
        reason += f" It follows your feedback \u201c{fact['feedback']}\u201d."
    return reason


def _prompt(fact: dict[str, str], caption: str) -> str:
    return (
        "You pick background music for a gameplay video from the editor's own library. In one "
        f"or two sentences, tell the editor why the track \u201c{fact['title']}\u201d "
        f"({fact['fits'] or 'closest match'}) fits this {fact['scene']} scene, described "
        f"as: {caption}" + (f" The editor asked: {fact['feedback']}." if fact["feedback"] else "")
    )


def reasons(
    items: Sequence[Stretch],
    tracks: Sequence[dict],
    feedback: Sequence[Feedback],
    backend: TextBackend | None = None,
    seed: int = 0,
) -> list[str]:
    """One reason per (stretch, picked track); the LLM writes them when ``backend`` is given."""
    all_facts = [facts(s, t, feedback) for s, t in zip(items, tracks, strict=True)]
    written = [""] * len(items)
    if backend is not None and items:
        prompts = [_prompt(f, s.captions[0]) for f, s in zip(all_facts, items, strict=True)]
        written = backend.generate(prompts, max_new_tokens=REASON_MAX_NEW_TOKENS, seed=seed)
    return [w.strip() or template_reason(f) for w, f in zip(written, all_facts, strict=True)]
