"""The 24-bit work-file writer: the very bytes libsndfile writes, read back as written."""

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import given, settings
from hypothesis import strategies as st

from bgm_batch.audio.pcm24 import from_pcm24, to_pcm24, write_wav24


def _libsndfile_bytes(path: Path, pcm: np.ndarray, rate: int) -> bytes:
    sf.write(path, pcm.T, rate, format="WAV", subtype="PCM_24")
    return path.read_bytes()


@pytest.mark.parametrize("channels", [1, 2])
def test_same_bytes_as_libsndfile(tmp_path: Path, channels: int) -> None:
    rng = np.random.default_rng(channels)
    audio = rng.uniform(-1.2, 1.2, (channels, 4801)).astype(np.float32)
    audio[:, :4] = [1.0, -1.0, 0.0, -(2.0**-24)]  # the edges of the range
    pcm = to_pcm24(audio)
    write_wav24(tmp_path / "ours.wav", pcm, 44_100)
    expected = _libsndfile_bytes(tmp_path / "theirs.wav", pcm, 44_100)
    assert (tmp_path / "ours.wav").read_bytes() == expected


@settings(max_examples=40, deadline=None)
@given(
    samples=st.lists(st.integers(-(2**23), 2**23 - 1), min_size=0, max_size=64),
    rate=st.sampled_from([8_000, 32_000, 48_000, 96_000]),
)
def test_any_samples_read_back_exactly(tmp_path_factory, samples: list[int], rate: int) -> None:
    pcm = (np.array(samples + samples[::-1], dtype=np.int32).reshape(2, -1)) << 8
    path = tmp_path_factory.mktemp("wav") / "x.wav"
    write_wav24(path, pcm, rate)
    back, read_rate = sf.read(path, dtype="float32", always_2d=True)
    assert read_rate == rate
    np.testing.assert_array_equal(back.T, from_pcm24(pcm).reshape(2, -1))
    assert path.read_bytes() == _libsndfile_bytes(path.with_name("ref.wav"), pcm, rate)


def test_rounding_at_the_edges_of_the_range() -> None:
    below_one = np.nextafter(np.float32(1.0), np.float32(0.0))
    audio = np.array(
        [[1.0, -1.0, below_one, -below_one, 1.5, -1.5, 2**-24, -(2**-24), 3 * 2**-24]],
        dtype=np.float32,
    )
    pcm = to_pcm24(audio) >> 8  # halves round to even: 2**23 - 0.5 -> 2**23, clipped
    assert pcm.tolist() == [
        [2**23 - 1, -(2**23), 2**23 - 1, -(2**23), 2**23 - 1, -(2**23), 0, 0, 2]
    ]
