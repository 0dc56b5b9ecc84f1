"""The audiocraft backend end to end: the real worker in .venv-audiocraft on a tiny checkpoint.

Run with `make test-audiocraft` (builds the environment first); skipped without the environment.
"""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

from bgm_batch.audio.audiocraft.backend import DEFAULT_PYTHON
from bgm_batch.audio.protocol import AUDIO_BACKENDS, SegmentRequest
from bgm_batch.settings import AudioSettings

pytestmark = [
    pytest.mark.audiocraft,
    pytest.mark.skipif(
        not DEFAULT_PYTHON.exists(),
        reason=f"{DEFAULT_PYTHON} missing: build it with `make audiocraft-env`",
    ),
]
CHECKPOINT_SCRIPT = __file__.replace("test_audiocraft.py", "audiocraft_checkpoint.py")


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    folder = tmp_path_factory.mktemp("audiocraft") / "tiny"
    subprocess.run([str(DEFAULT_PYTHON), "-I", CHECKPOINT_SCRIPT, str(folder)], check=True)
    settings = AudioSettings(backend="audiocraft", model=str(folder), device="cpu")
    backend = AUDIO_BACKENDS.create("audiocraft", settings)
    yield backend
    backend.close()


def _request(seed: int, duration: float, prompt: np.ndarray | None = None) -> SegmentRequest:
    return SegmentRequest(
        key=f"r{seed}",
        caption="calm piano night",
        duration_s=duration,
        seed=seed,
        prompt_audio=prompt,
        prompt_sample_rate=None if prompt is None else 48000,
    )


def _tail() -> np.ndarray:
    rng = np.random.default_rng(0)
    return (0.1 * rng.standard_normal((2, 48000))).astype(np.float32)


def test_worker_renders_lengths_at_the_model_rate(backend):
    assert backend.identity()["revision"] == "audiocraft-1.3.0"
    out = backend.render([_request(1, 1.0), _request(2, 0.5, _tail()), _request(3, 0.7)])
    assert [s.audio.shape for s in out] == [(1, 32000), (1, 16000), (1, 22400)]
    assert all(s.sample_rate == 32000 and s.audio.dtype == np.float32 for s in out)
    assert all(np.isfinite(s.audio).all() and np.abs(s.audio).max() > 0 for s in out)


def test_same_batch_reproduces_and_the_prompt_matters(backend):
    batch = [_request(1, 0.5), _request(1, 0.5, _tail())]
    first, second = backend.render(batch), backend.render(batch)
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a.audio, b.audio)
    assert not np.allclose(first[0].audio, first[1].audio)


def test_a_failing_job_raises_with_the_worker_traceback(backend):
    badly_shaped = np.zeros((1, 2, 48000), dtype=np.float32)  # (channels, samples) expected
    with pytest.raises(RuntimeError, match="audiocraft worker failed"):
        backend.render([_request(1, 0.5, badly_shaped)])
    assert backend.render([_request(1, 0.2)])[0].audio.shape == (1, 6400)
