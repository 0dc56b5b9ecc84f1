"""The text backend protocol and its registry.

A text backend turns prompts into completions. Stage logic (which prompt, post-processing,
caching, deduplication) lives in ``bgm_batch.stages.narrate``; a backend only generates.
Backend modules in this package register a factory ``factory(settings: TextSettings)``
with ``@TEXT_BACKENDS.register("name")`` and import heavy libraries lazily.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from bgm_batch.registry import Registry


@runtime_checkable
class TextBackend(Protocol):
    """Generates one completion per prompt, in prompt order."""

    name: str

    def identity(self) -> dict[str, str]:
        """What makes outputs reproducible: backend, model id, revision, adapter hash.

        Goes into the generation cache key and the run manifest.
        """
        ...

    def generate(self, prompts: Sequence[str], *, max_new_tokens: int, seed: int) -> list[str]:
        """Completions for ``prompts`` (same order); deterministic for a given seed."""
        ...


TEXT_BACKENDS: Registry[TextBackend] = Registry("text", "bgm_batch.text")
