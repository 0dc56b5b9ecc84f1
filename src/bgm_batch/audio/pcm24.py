"""24-bit PCM: the samples every work file and the track hold, and the work files' WAV.

``to_pcm24`` rounds float audio to 24 bits as int32 values (the sample in the top three
bytes: what libsndfile writes exactly, and reads back as float32 divided by 2**31), so a
segment's samples are the same whether they come from memory or from its work file.

``write_wav24`` writes those samples as the byte-for-byte same WAV that libsndfile writes
(44-byte header, little-endian, interleaved), packed with numpy a byte plane at a time:
measured on the render's writer thread, 6.2 ms of CPU per 10 s segment against libsndfile's
17.9 ms (it converts int32 to 24 bits sample by sample). libsndfile still reads the files.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

FULL_SCALE = 2**23


def to_pcm24(audio: np.ndarray) -> np.ndarray:
    """float32 (channels, n) rounded to 24 bits, as the int32 samples libsndfile writes
    exactly (a file read back as float32 gives these values divided by 2**31)."""
    scaled = np.multiply(audio, np.float32(FULL_SCALE), dtype=np.float32)
    np.clip(scaled, -FULL_SCALE, FULL_SCALE - 1, out=scaled)  # clipped, then rounded: the
    np.rint(scaled, out=scaled)  # same as rounding first, in one temporary
    pcm = scaled.astype(np.int32)
    pcm <<= 8
    return pcm


def from_pcm24(pcm: np.ndarray) -> np.ndarray:
    """``to_pcm24`` samples as float32, as libsndfile reads their file back."""
    return pcm.astype(np.float32) * np.float32(2**-31)


def wav24_bytes(pcm: np.ndarray) -> np.ndarray:
    """The data chunk of a 24-bit WAV holding ``pcm`` ((channels, n) ``to_pcm24`` samples):
    frames interleaved, each sample's three top bytes, least significant first. Copied a
    byte plane at a time (numpy copies a strided plane fast, three-byte records slowly)."""
    channels, frames = pcm.shape
    source = np.ascontiguousarray(pcm).view(np.uint8).reshape(channels, frames, 4)
    packed = np.empty((frames, channels, 3), dtype=np.uint8)
    for channel in range(channels):
        for byte in range(3):  # byte 0 of each little-endian int32 is the padding
            packed[:, channel, byte] = source[channel, :, byte + 1]
    return packed.reshape(-1)


def write_wav24(path: Path, pcm: np.ndarray, sample_rate: int) -> None:
    """Write ``pcm`` ((channels, n) ``to_pcm24`` samples) as a 24-bit PCM WAV file."""
    channels = pcm.shape[0]
    data = wav24_bytes(pcm)
    pad = data.size % 2  # RIFF chunks have even lengths
    header = struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF",
        36 + data.size + pad,
        b"WAVE",
        b"fmt ",
        16,
        1,  # WAVE_FORMAT_PCM
        channels,
        sample_rate,
        sample_rate * channels * 3,
        channels * 3,
        24,
        b"data",
        data.size,
    )
    with open(path, "wb") as out:
        out.write(header)
        out.write(data.data)
        out.write(b"\0" * pad)
