"""A small real library for the library-mode tests: tracks rendered by the synth backend
(FluidSynth), with metadata in library.csv and one JSON sidecar, plus two unreadable files.

A plugin module (``pytest_plugins = ["musiclib"]`` in each test module), not a conftest: a
second ``conftest`` module would shadow ``tests/conftest.py`` for ``from conftest import``.
As a plugin its session fixtures are built once per test session."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import soundfile as sf

from bgm_batch.audio.protocol import AUDIO_BACKENDS, SegmentRequest
from bgm_batch.settings import AudioSettings

TRACK_SECONDS = 16.0
# file, title, tags, the caption the synth renders it from
TRACKS = [
    (
        "iron_charge.flac",
        "Iron Charge",
        "epic, battle, orchestral, strings, brass, drums, instrumental",
        "Intense fast epic battle music with pounding drums, brass and strings, 150 bpm.",
    ),
    (
        "steel_storm.wav",
        "Steel Storm",
        "battle, aggressive, vocals, choir, drums, rock",
        "Aggressive fast combat music with heavy drums and electric guitar, 144 bpm.",
    ),
    (
        "meadow_morning.flac",
        "Meadow Morning",
        "calm, peaceful, piano, flute, pastoral",
        "Gentle and peaceful music with a soft piano melody and flute, 76 bpm.",
    ),
    (
        "quiet_stream.ogg",
        "Quiet Stream",
        "calm, ambient, relaxing, harp, soft",
        "Slow ambient relaxing music with harp, 70 bpm.",
    ),
    (
        "night_watch.flac",
        "Night Watch",
        "dark, mysterious, cave, strings, slow, minor",
        "Dark mysterious slow music with cello in A minor, 80 bpm.",
    ),
    (
        "village_dance.flac",
        "Village Dance",
        "cheerful, upbeat, folk, guitar, dance",
        "Cheerful upbeat folk music with acoustic guitar, 120 bpm.",
    ),
]
SIDECAR_TRACK = "village_dance.flac"  # its metadata is in a JSON sidecar, not the CSV
UNREADABLE = {"broken.mp3": b"ID3\x03\x00not really an mp3" * 40, "empty.wav": b""}


def render_track(path: Path, caption: str, seed: int, seconds: float = TRACK_SECONDS) -> None:
    """Render ``caption`` with the synth backend into ``path`` (format from the suffix)."""
    synth = AUDIO_BACKENDS.create("synth", AudioSettings())
    request = SegmentRequest(key=path.stem, caption=caption, duration_s=seconds, seed=seed)
    segment = synth.render([request])[0]
    sf.write(path, segment.audio.T, segment.sample_rate)


def make_library(root: Path) -> Path:
    """Six tracks, library.csv, a sidecar and two unreadable files under ``root``."""
    rows = ["file,title,artist,tags"]
    for seed, (name, title, tags, caption) in enumerate(TRACKS):
        render_track(root / name, caption, seed)
        if name == SIDECAR_TRACK:
            sidecar = {"title": title, "artist": "Test Band", "tags": tags.split(", ")}
            (root / name).with_suffix(".json").write_text(json.dumps(sidecar))
        else:
            rows.append(f'{name},{title},Test Band,"{tags}"')
    (root / "library.csv").write_text("\n".join(rows) + "\n")
    for name, data in UNREADABLE.items():
        (root / name).write_bytes(data)
    return root


@pytest.fixture(scope="session")
def music_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The library folder (``make_library``)."""
    return make_library(tmp_path_factory.mktemp("music"))


@pytest.fixture(scope="session")
def index_dir(music_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The library indexed with the real MiniLM."""
    from bgm_batch.library.index import index_library
    from bgm_batch.settings import LibrarySettings

    out = tmp_path_factory.mktemp("index")
    index_library(music_dir, out, LibrarySettings())
    return out


def build_tiny_clap(out_dir: Path, seed: int = 0) -> Path:
    """A random ``ClapModel`` (16-dim projections, 2-layer text and audio towers) with a BPE
    tokenizer and a 48 kHz ``ClapFeatureExtractor``, saved for ``from_pretrained(out_dir)``."""
    import torch
    from transformers import (
        ClapAudioConfig,
        ClapConfig,
        ClapFeatureExtractor,
        ClapModel,
        ClapTextConfig,
    )

    from bgm_batch.testing.tiny_llm import train_tokenizer

    tokenizer = train_tokenizer()
    tokenizer.padding_side = "right"
    text = ClapTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=130,
        pad_token_id=tokenizer.pad_token_id,
        projection_dim=16,
    )
    audio = ClapAudioConfig(
        hidden_size=32,
        patch_embeds_hidden_size=16,
        depths=[1, 1],
        num_attention_heads=[2, 2],
        window_size=8,
        spec_size=256,
        num_mel_bins=64,
        projection_dim=16,
        enable_fusion=False,
    )
    torch.manual_seed(seed)
    config = ClapConfig(text_config=text.to_dict(), audio_config=audio.to_dict(), projection_dim=16)
    ClapModel(config).save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    ClapFeatureExtractor(feature_size=64, sampling_rate=48000, max_length_s=10).save_pretrained(
        out_dir
    )
    return out_dir
