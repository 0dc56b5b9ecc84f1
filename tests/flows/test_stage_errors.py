"""A user-fixable error inside a stage says which stage, keeping its type."""

from __future__ import annotations

import pytest
from bgm_batch.flows.score_session import _timed

from bgm_batch.stages.mux import LengthMismatchError


def test_an_error_inside_a_stage_names_the_stage() -> None:
    timings: dict[str, float] = {}
    with (
        pytest.raises(ValueError, match="^stage mux: the video lasts 5 s$"),
        _timed(timings, "mux"),
    ):
        raise LengthMismatchError("the video lasts 5 s")
    assert "mux" not in timings  # a failed stage has no timing
    with pytest.raises(KeyError), _timed(timings, "stitch"):  # a bug keeps its own message
        raise KeyError("x")
    with _timed(timings, "export"):
        pass
    assert timings["export"] >= 0
