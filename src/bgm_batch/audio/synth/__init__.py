"""The ``synth`` backend: rule-based composition (``compose``) rendered with FluidSynth
(``backend``)."""

from bgm_batch.audio.synth import backend as backend  # registers "synth"
