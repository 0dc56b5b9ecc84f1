"""The prompts of the two-stage generation, and the way back from a prompt to its payload.

Stage 1 (``narrative``) turns the characterized snapshot (``info_str``) into a short narrative,
stage 2 (``caption``) turns the narrative into a music description of at most 20 words; the
ablation (``direct``) goes from ``info_str`` to the music description in one prompt. The
``paper`` set holds the MetaBGM paper's prompts (Fig. 2) verbatim; other sets are selected by
name (``settings.text.prompt_set``). Every template has exactly one placeholder, so
``parse_prompt`` can recover the payload of any prompt that a set produced: the rule-based
template backend receives prompts like any backend and reads its input back out of them.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import cache

KINDS = ("narrative", "caption", "direct")
PAYLOAD = "{payload}"
NARRATIVE_MAX_WORDS = 50  # stage 1's limit, as the paper's narrative prompt states it
CAPTION_MAX_WORDS = 20  # stage 2's limit, as the paper's caption prompt states it


@dataclass(frozen=True)
class PromptSet:
    """The three templates of one prompt set; ``{payload}`` marks where the input goes."""

    narrative: str
    caption: str
    direct: str

    def template(self, kind: str) -> str:
        """The template for ``kind`` (one of ``KINDS``)."""
        if kind not in KINDS:
            raise ValueError(f"unknown prompt kind {kind!r}; known: {', '.join(KINDS)}")
        return getattr(self, kind)


# The paper's Fig. 2 prompts, character for character ("\n" is a newline, as in the f-strings).
_PAPER_NARRATIVE = (
    "The following is the scene data and player data from the continuous scene, provided in JSON "
    "format. Imagine this as a real-world scenario, and describe the current situation in a "
    "narrative manner. Do not use terms like 'game' or 'player.' Please provide a concise "
    "description of no more than 50 words. \n{payload};"
)
_PAPER_CAPTION = (
    "Imagine you are a music composer. Now, please help me compose music for the following "
    "scene: \n{payload}\n\nThe music can include rhythm, melody, instruments, mood, or key "
    "changes. Please use no more than 20 words to provide a brief and fluent music description."
)
# The paper gives no text for its direct-generation ablation; this joins its two prompts: the
# data introduction of stage 1 with the composer request of stage 2.
_PAPER_DIRECT = (
    "The following is the scene data and player data from the continuous scene, provided in JSON "
    "format. Imagine you are a music composer. Now, please help me compose music for this "
    "scene: \n{payload}\n\nThe music can include rhythm, melody, instruments, mood, or key "
    "changes. Please use no more than 20 words to provide a brief and fluent music description."
)

# An alternative that asks for what a text-to-music model conditions on best: an explicit
# tempo in BPM, a key, instruments and mood.
_COMPOSER_CAPTION_TAIL = (
    "Answer with one music description of no more than 20 words that names the tempo in BPM "
    "(for example 'at 92 BPM'), the key (for example 'in D minor'), the instruments and the "
    "mood. Answer with the description only."
)
_COMPOSER_NARRATIVE = (
    "Here is what happens around a person during ten seconds, as JSON data (percentages of the "
    "time each state held, counts of nearby creatures):\n{payload}\n\nDescribe the moment as a "
    "real-world scene in at most 50 words, in the present tense. Do not use the words 'game' or "
    "'player'. Answer with the description only."
)
_COMPOSER_CAPTION = (
    "You are a film composer scoring this scene:\n{payload}\n\n" + _COMPOSER_CAPTION_TAIL
)
_COMPOSER_DIRECT = (
    "You are a film composer. Here is what happens around a person during ten seconds, as JSON "
    "data:\n{payload}\n\n" + _COMPOSER_CAPTION_TAIL
)

PROMPT_SETS: dict[str, PromptSet] = {
    "paper": PromptSet(_PAPER_NARRATIVE, _PAPER_CAPTION, _PAPER_DIRECT),
    "composer": PromptSet(_COMPOSER_NARRATIVE, _COMPOSER_CAPTION, _COMPOSER_DIRECT),
}


def get_prompt_set(name: str) -> PromptSet:
    """The prompt set called ``name``; the error lists the known names."""
    try:
        return PROMPT_SETS[name]
    except KeyError:
        known = ", ".join(sorted(PROMPT_SETS))
        raise KeyError(f"unknown prompt set {name!r}; known: {known}") from None


def render_prompt(kind: str, payload: str, prompt_set: str = "paper") -> str:
    """The ``kind`` prompt of ``prompt_set`` with ``payload`` filled in."""
    return get_prompt_set(prompt_set).template(kind).replace(PAYLOAD, payload)


def narrative_prompt(info_str: str, prompt_set: str = "paper") -> str:
    """Stage 1: characterized snapshot -> narrative."""
    return render_prompt("narrative", info_str, prompt_set)


def caption_prompt(narrative: str, prompt_set: str = "paper") -> str:
    """Stage 2: narrative -> music description."""
    return render_prompt("caption", narrative, prompt_set)


def direct_prompt(info_str: str, prompt_set: str = "paper") -> str:
    """The ablation: characterized snapshot -> music description in one step."""
    return render_prompt("direct", info_str, prompt_set)


@cache
def _patterns() -> tuple[tuple[str, re.Pattern[str]], ...]:
    patterns = []
    for prompt_set in PROMPT_SETS.values():
        for kind in KINDS:
            head, tail = prompt_set.template(kind).split(PAYLOAD)
            patterns.append((kind, re.compile(re.escape(head) + "(.*)" + re.escape(tail), re.S)))
    return tuple(patterns)


def parse_prompt(prompt: str) -> tuple[str, str]:
    """``(kind, payload)`` of a prompt made by any prompt set; ValueError for anything else."""
    for kind, pattern in _patterns():
        match = pattern.fullmatch(prompt)
        if match:
            return kind, match.group(1)
    raise ValueError(f"not a prompt of any known prompt set: {prompt[:80]!r}...")


def prompt_template_hashes(prompt_set: str = "paper") -> dict[str, str]:
    """sha256 of each template of ``prompt_set``, for the run manifest."""
    templates = get_prompt_set(prompt_set)
    return {kind: hashlib.sha256(templates.template(kind).encode()).hexdigest() for kind in KINDS}
