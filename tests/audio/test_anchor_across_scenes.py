"""MusicGen is anchored on the previous audio at every window but a recording's first and
the first after a real gap in the capture: scene changes keep the anchor (the paper's
continuity across scene transitions), short gaps are bridged. The real tiny MusicGen renders
the planned frame through the render stage; the requests it receives are recorded."""

from __future__ import annotations

import json

import polars as pl
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from bgm_batch.audio.protocol import AUDIO_BACKENDS  # noqa: E402
from bgm_batch.data.game_profile import load_profile  # noqa: E402
from bgm_batch.settings import AudioSettings  # noqa: E402
from bgm_batch.stages.render import render_segments  # noqa: E402
from bgm_batch.stages.transitions import plan_transitions  # noqa: E402
from bgm_batch.testing.tiny_musicgen import build_tiny_musicgen  # noqa: E402

# (index, biome, combat): a scene change at 3, a fight at 5, one missing window (8) bridged,
# then a gap of five windows (12-16): a real break.
WINDOWS = [(0, "Plains", False), (1, "Plains", False), (2, "Plains", False)]
WINDOWS += [(3, "Forest", False), (4, "Forest", False), (5, "Forest", True), (6, "Forest", True)]
WINDOWS += [(7, "Forest", True), (9, "Forest", True), (17, "Forest", False), (18, "Forest", False)]


class Recording:
    """The real backend, with the requests it was handed kept for inspection."""

    def __init__(self, backend):
        self.backend, self.name, self.requests = backend, backend.name, []

    def identity(self):
        return self.backend.identity()

    def render(self, requests):
        self.requests.extend(requests)
        return self.backend.render(requests)


def planned() -> pl.DataFrame:
    rows = [
        {
            "recording": "r",
            "index": index,
            "start_s": 10.0 * index,
            "end_s": 10.0 * index + 10.0,
            "combat": combat,
            "info_str": json.dumps({"Biome": {biome: 100.0}, "Time": {"Day": 100.0}}),
            "caption": f"{'tense battle' if combat else 'calm'} music in the {biome.lower()}",
        }
        for index, biome, combat in WINDOWS
    ]
    return plan_transitions(pl.DataFrame(rows), load_profile("minecraft"))


@pytest.mark.slow  # about 20 s on two shared cores: eleven sequential generate calls
def test_musicgen_gets_the_anchor_except_at_the_start_and_after_a_real_gap(tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        folder = build_tiny_musicgen(tmp_path / "tiny")
        settings = AudioSettings(
            backend="musicgen",
            model=str(folder),
            device="cpu",
            segment_seconds=0.2,
            overlap_seconds=0.06,
            prompt_seconds=0.1,
        )
        backend = Recording(AUDIO_BACKENDS.create("musicgen", settings))
        frame = planned()
        result = render_segments(frame, backend, settings, seed=0, work_dir=tmp_path / "work")
    finally:
        torch.set_num_threads(threads)
    assert result.failures.is_empty() and result.rendered == len(WINDOWS)
    transitions = dict(zip(frame["index"], frame["transition"], strict=True))
    assert [transitions[i] for i in (0, 3, 5, 9, 17)] == [
        "start",
        "change",
        "change",
        "continue",
        "restart",
    ]
    anchored = {int(r.key.split("/")[1]): r.prompt_audio is not None for r in backend.requests}
    assert [i for i, has in sorted(anchored.items()) if not has] == [0, 17]
    prompt = next(r for r in backend.requests if r.key == "r/3").prompt_audio
    assert prompt.shape[-1] == round(0.1 * backend.backend.sample_rate)  # the tail before it
