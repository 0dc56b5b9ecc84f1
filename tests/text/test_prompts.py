"""The paper's prompts verbatim, prompt sets by name, and the way back from prompt to payload."""

import hashlib

import pytest

from bgm_batch.text.prompts import (
    KINDS,
    PROMPT_SETS,
    caption_prompt,
    direct_prompt,
    narrative_prompt,
    parse_prompt,
    prompt_template_hashes,
)

INFO = '{"Biome": {"Plains": 100.0}, "Time": {"Night": 100.0}}'

# Fig. 2 of the MetaBGM paper, as its f-strings render.
PAPER_NARRATIVE = (
    "The following is the scene data and player data from the continuous scene, provided in JSON "
    "format. Imagine this as a real-world scenario, and describe the current situation in a "
    "narrative manner. Do not use terms like 'game' or 'player.' Please provide a concise "
    f"description of no more than 50 words. \n{INFO};"
)
PAPER_CAPTION = (
    "Imagine you are a music composer. Now, please help me compose music for the following "
    "scene: \nA wanderer crosses the plains.\n\nThe music can include rhythm, melody, "
    "instruments, mood, or key changes. Please use no more than 20 words to provide a brief and "
    "fluent music description."
)


def test_paper_prompts_are_verbatim_and_default():
    assert narrative_prompt(INFO) == PAPER_NARRATIVE
    assert narrative_prompt(INFO, "paper") == PAPER_NARRATIVE
    assert caption_prompt("A wanderer crosses the plains.") == PAPER_CAPTION


def test_direct_prompt_carries_the_data_and_the_composer_request():
    prompt = direct_prompt(INFO)
    assert INFO in prompt
    assert "Imagine you are a music composer" in prompt and "no more than 20 words" in prompt


@pytest.mark.parametrize("prompt_set", sorted(PROMPT_SETS))
@pytest.mark.parametrize(
    "payload", [INFO, "line one\n\nline two; {payload} {scene}", "", "ends with ;"]
)
def test_parse_prompt_recovers_kind_and_payload(prompt_set, payload):
    makers = {"narrative": narrative_prompt, "caption": caption_prompt, "direct": direct_prompt}
    for kind in KINDS:
        assert parse_prompt(makers[kind](payload, prompt_set)) == (kind, payload)


def test_parse_prompt_rejects_foreign_text():
    with pytest.raises(ValueError, match="not a prompt"):
        parse_prompt("Write me a poem about the sea.")


def test_alternative_set_differs_and_unknown_set_lists_known_names():
    assert narrative_prompt(INFO, "composer") != narrative_prompt(INFO)
    assert "BPM" in caption_prompt("x", "composer")
    with pytest.raises(KeyError, match="composer, paper"):
        narrative_prompt(INFO, "nope")


def test_template_hashes_are_sha256_of_each_template():
    hashes = prompt_template_hashes("paper")
    assert set(hashes) == set(KINDS)
    template = PROMPT_SETS["paper"].narrative
    assert hashes["narrative"] == hashlib.sha256(template.encode()).hexdigest()
    assert prompt_template_hashes("composer")["caption"] != hashes["caption"]
