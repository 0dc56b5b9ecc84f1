"""The audio backend protocol, its request/result types and its registry.

A backend renders a batch of independent segment requests; each request carries its own
melodic anchor (the previous segment's audio tail and the backend's musical state), so one
batch can hold step k of many runs. Backend modules register a factory
``factory(settings: AudioSettings)`` with ``@AUDIO_BACKENDS.register("name")`` and import
heavy libraries lazily.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from bgm_batch.registry import Registry


@dataclass(frozen=True)
class SegmentRequest:
    """One segment to render.

    ``prompt_audio`` is the tail of the previous segment of the same run as float32
    (channels, samples) at ``prompt_sample_rate``, or None at the start of a run or after a
    hard restart. ``prev_state`` is the previous segment's ``RenderedSegment.state``
    (key, tempo...), or None likewise. ``transition`` is start, continue or restart;
    ``stinger`` asks for a short accent at the start (combat onset). ``hop_s`` is where the
    next segment of the run will start (the window length, or more when this segment fills
    a bridged gap in the capture); None means the window length.
    """

    key: str
    caption: str
    duration_s: float
    seed: int
    transition: str = "start"
    stinger: bool = False
    prompt_audio: np.ndarray | None = None
    prompt_sample_rate: int | None = None
    prev_state: dict[str, Any] | None = None
    hop_s: float | None = None


# Instrument roles an editor gets as stems (``--stems``): what is mixed down separately.
STEM_ROLES = ("drums", "bass", "harmony", "lead", "pad", "stinger")


@dataclass
class RenderedSegment:
    """Audio for one request: float32 (channels, samples) at ``sample_rate``.

    ``state`` is what the next segment needs to continue this one musically (JSON-able);
    ``midi`` holds a Standard MIDI File when the backend composes symbolically. ``stems``
    (asked for with ``AudioSettings.stems``, by a backend that knows its parts) splits
    ``audio`` by instrument role (keys from ``STEM_ROLES``, each shaped like ``audio``);
    they sum to ``audio``, and a role that does not play is left out.
    """

    audio: np.ndarray
    sample_rate: int
    state: dict[str, Any] = field(default_factory=dict)
    midi: bytes | None = None
    stems: dict[str, np.ndarray] | None = None


@runtime_checkable
class AudioBackend(Protocol):
    """Renders segment requests; output i answers request i."""

    name: str

    def identity(self) -> dict[str, str]:
        """Backend name, model id and revision: for the manifest and resume checks."""
        ...

    def render(self, requests: Sequence[SegmentRequest]) -> list[RenderedSegment]:
        """Render a batch of independent requests."""
        ...


@runtime_checkable
class StateContinued(Protocol):
    """A backend whose segment continues the previous one through its musical ``state``
    alone, never its audio (``prompt_audio`` is not read). ``next_state`` gives the state a
    request leaves, cheaply (no audio), so the render stage can plan a whole run first and
    then render its segments in any order, in parallel."""

    def next_state(self, request: SegmentRequest) -> dict[str, Any]:
        """``RenderedSegment.state`` of ``render([request])``, without rendering."""
        ...


AUDIO_BACKENDS: Registry[AudioBackend] = Registry("audio", "bgm_batch.audio")
