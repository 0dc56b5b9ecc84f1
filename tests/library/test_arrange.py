"""Playing a library track through the render stage: bar loops without clicks, seamless
windows, every window where the placement says."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from bgm_batch.audio.protocol import SegmentRequest
from bgm_batch.library.arrange import (
    LOOP_FADE_S,
    LibraryBackend,
    Placement,
    loop_points,
    read_window,
    wrap,
)

RATE = 8000


@pytest.fixture
def ramp(tmp_path: Path) -> Path:
    """A 10 s stereo file whose left channel is its own time in seconds: every sample says
    where in the file it came from."""
    t = np.arange(10 * RATE, dtype=np.float32) / RATE
    path = tmp_path / "ramp.wav"
    sf.write(path, np.stack([t / 10, -t / 10], axis=1), RATE, subtype="FLOAT")
    return path


def test_loop_points_are_bars_with_room_for_the_fade() -> None:
    assert loop_points([0.5, 2.5, 4.5, 6.5, 8.5], 10.0) == (0.5, 8.5)
    assert loop_points([0.5, 2.5, 4.5, 6.5, 9.99], 10.0) == (0.5, 6.5)  # no tail to fade
    assert loop_points([1.0], 10.0) == (0.0, 10.0 - LOOP_FADE_S)  # too few bars: whole file
    assert wrap(3.0, 1.0, 5.0) == 3.0 and wrap(6.0, 1.0, 5.0) == 2.0 and wrap(14.0, 1.0, 5.0) == 2.0


def test_a_window_across_the_loop_jumps_back_to_the_first_bar(ramp: Path) -> None:
    placement = Placement(str(ramp), position_s=7.0, loop_start_s=2.0, loop_end_s=8.0)
    audio, rate = read_window(placement, 4.0)
    assert rate == RATE and audio.shape == (2, 4 * RATE)
    heard = audio[0] * 10  # seconds of the file
    fade = round(LOOP_FADE_S * RATE)
    assert np.allclose(heard[: RATE - 1], 7.0 + np.arange(RATE - 1) / RATE, atol=1e-4)
    after = heard[RATE + fade :]  # past the crossfade: the loop from its first bar
    assert np.allclose(after, 2.0 + (fade + np.arange(after.size)) / RATE, atol=1e-4)
    seam = heard[RATE : RATE + fade]  # equal-power: the tail (8 s...) out, the loop (2 s...) in
    u = np.arange(fade)
    t = (u + 0.5) / fade
    blend = (8.0 + u / RATE) * np.cos(0.5 * np.pi * t) + (2.0 + u / RATE) * np.sin(0.5 * np.pi * t)
    assert np.allclose(seam, blend, atol=1e-4)


def test_consecutive_windows_overlap_with_identical_audio(ramp: Path) -> None:
    placements = {
        f"r/{k}": Placement(str(ramp), 1.0 + 3.0 * k, loop_start_s=1.0, loop_end_s=9.0)
        for k in range(5)
    }
    backend = LibraryBackend(placements, "idx")
    requests = [SegmentRequest(f"r/{k}", "", 4.0, seed=0) for k in range(5)]
    windows = [s.audio for s in backend.render(requests)]
    for before, after in zip(windows, windows[1:], strict=False):
        assert np.array_equal(before[:, 3 * RATE :], after[:, :RATE])  # the 1 s render tail


def test_identity_changes_with_any_placement(ramp: Path) -> None:
    one = LibraryBackend({"r/0": Placement(str(ramp), 0.0, 0.0, 9.0)}, "idx")
    other = LibraryBackend({"r/0": Placement(str(ramp), 2.0, 0.0, 9.0)}, "idx")
    assert one.identity()["backend"] == "library"
    assert one.identity() != other.identity()
