"""The musicgen backend on a tiny random MusicGen saved to disk and loaded back by path."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from bgm_batch.audio.musicgen import SeededSampler  # noqa: E402
from bgm_batch.audio.protocol import AUDIO_BACKENDS, AudioBackend, SegmentRequest  # noqa: E402
from bgm_batch.settings import AudioSettings  # noqa: E402
from bgm_batch.testing.tiny_musicgen import build_tiny_musicgen  # noqa: E402

RATE = 32000
# The tiny random decoder is weakly sensitive to its codes: different tokens move the audio by
# ~1e-4, float32 noise is ~1e-8, so differences are judged against this floor.
AUDIBLE = 1e-5


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: extra threads only spin on a shared machine
    folder = build_tiny_musicgen(tmp_path_factory.mktemp("musicgen") / "tiny")
    settings = AudioSettings(backend="musicgen", model=str(folder), device="cpu", batch_size=8)
    yield AUDIO_BACKENDS.create("musicgen", settings)
    torch.set_num_threads(threads)


def _tail(seed: int, seconds: float = 1.0, rate: int = 48000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (0.1 * rng.standard_normal((2, int(seconds * rate)))).astype(np.float32)


def _sine(seconds: float = 1.0, rate: int = 48000) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return np.stack([0.5 * np.sin(2 * np.pi * 440 * t)] * 2).astype(np.float32)


def _differs(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and float(np.abs(a - b).max()) > AUDIBLE


def _request(key: str, seed: int, duration: float = 0.5, prompt: np.ndarray | None = None):
    return SegmentRequest(
        key=key,
        caption=f"calm piano night {key}",
        duration_s=duration,
        seed=seed,
        transition="continue" if prompt is not None else "start",
        prompt_audio=prompt,
        prompt_sample_rate=48000 if prompt is not None else None,
    )


def test_loaded_by_path_with_model_geometry(backend):
    assert isinstance(backend, AudioBackend)
    assert backend.sample_rate == RATE
    assert backend.codec.frame_rate == 50.0
    assert backend.identity()["backend"] == "musicgen"


def test_lengths_rate_and_dtype_in_a_mixed_batch(backend):
    requests = [
        _request("a", 1, duration=1.0),
        _request("b", 2, duration=0.5, prompt=_tail(0)),
        _request("c", 3, duration=0.73),
        _request("d", 4, duration=0.31, prompt=_tail(1, seconds=0.5)),
    ]
    out = backend.render(requests)
    assert [segment.audio.shape for segment in out] == [
        (1, 32000),
        (1, 16000),
        (1, 23360),
        (1, 9920),
    ]
    for segment in out:
        assert segment.sample_rate == RATE
        assert segment.audio.dtype == np.float32
        assert np.isfinite(segment.audio).all() and np.abs(segment.audio).max() > 0


def test_continuation_feeds_the_prompt(backend):
    plain, prompted, other = backend.render(
        [_request("a", 7), _request("a", 7, prompt=_tail(0)), _request("a", 7, prompt=_sine())]
    )
    assert _differs(plain.audio, prompted.audio)
    assert _differs(prompted.audio, other.audio)


def test_same_batch_and_seeds_reproduce_exactly(backend):
    requests = [_request("a", 1), _request("b", 2, prompt=_tail(0)), _request("c", 3)]
    first, second = backend.render(requests), backend.render(requests)
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a.audio, b.audio)
    reseeded = backend.render([_request("a", 99)])[0]
    assert _differs(first[0].audio, reseeded.audio)


def test_a_request_renders_the_same_alone_and_in_a_batch(backend):
    """Each request draws from its own generator, so batch-mates do not change its audio."""
    batch = backend.render([_request("a", 1), _request("b", 2, prompt=_tail(0)), _request("c", 3)])
    alone = [backend.render([r])[0] for r in (_request("b", 2, prompt=_tail(0)), _request("c", 3))]
    np.testing.assert_allclose(batch[1].audio, alone[0].audio, atol=AUDIBLE / 10)
    np.testing.assert_allclose(batch[2].audio, alone[1].audio, atol=AUDIBLE / 10)


def test_too_long_a_segment_is_refused(backend):
    with pytest.raises(ValueError, match="positions"):
        backend.render([_request("a", 1, duration=60.0)])


def test_sampler_applies_guidance_then_top_k():
    """Conditional logits favour token 1 and unconditional ones token 0; guidance 3 gives
    1 + (1 - 0) * 3 = 4 for token 1 against 0 + (0 - 1) * 3 = -3 for token 0, and top-k 1 keeps
    only the best: every row must pick token 1, in both halves of the returned mask."""
    generators = [torch.Generator().manual_seed(s) for s in (0, 1)]
    sampler = SeededSampler(generators, num_codebooks=2, guidance_scale=3.0, top_k=1)
    conditional = torch.tensor([[0.0, 1.0, 0.5]]).repeat(4, 1)
    unconditional = torch.tensor([[1.0, 0.0, 0.5]]).repeat(4, 1)
    mask = sampler(None, torch.cat([conditional, unconditional]))
    assert mask.shape == (8, 3)
    assert (mask.argmax(dim=-1) == 1).all()
    assert (mask[:, 1] == 0).all() and (mask[:, [0, 2]] < -1e8).all()
