"""Joint audio-text embeddings from a tiny CLAP model saved to disk and loaded by path."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from musiclib import build_tiny_clap

from bgm_batch.evaluation.embeddings import load_embedder
from bgm_batch.library import rank
from bgm_batch.library.index import index_library, load_index
from bgm_batch.settings import LibrarySettings

pytest_plugins = ["musiclib"]
pytest.importorskip("transformers")


@pytest.mark.slow  # about 40 s on 2 shared cores (CLAP mel features, two indexing runs)
def test_clap_embeddings_are_indexed_reused_and_ranked(music_dir: Path, tmp_path: Path) -> None:
    from bgm_batch.library.clap import ClapEncoder

    music = tmp_path / "music"
    music.mkdir()
    for name in ("iron_charge.flac", "quiet_stream.ogg"):
        shutil.copy(music_dir / name, music / name)
    model = str(build_tiny_clap(tmp_path / "clap"))
    settings = LibrarySettings(clap_model=model)
    index_library(music, tmp_path / "index", settings)
    index = load_index(tmp_path / "index")
    assert index.clap_model == model
    assert json.loads((tmp_path / "index" / "index.json").read_text())["clap_model"] == model
    assert index.clap_audio.shape == (2, 16)
    assert np.allclose(np.linalg.norm(index.clap_audio, axis=1), 1.0, atol=1e-5)

    again = index_library(music, tmp_path / "index", settings)
    assert again.analysed == 0
    assert np.array_equal(load_index(tmp_path / "index").clap_audio, index.clap_audio)

    clap = ClapEncoder(model)
    audio = clap.encode_audio([music / "iron_charge.flac"])
    assert np.allclose(
        audio[0],
        index.clap_audio[index.tracks["file"].to_list().index("iron_charge.flac")],
        atol=1e-5,
    )
    item = rank.Stretch("r:0", "r", [0], 0.0, 10.0, "", ["epic battle drums"], [])
    text_only = rank.Ranker(index, load_embedder().encode).scores([item])
    joint = rank.Ranker(index, load_embedder().encode, encode_clap=clap.encode_text)
    expected = text_only + 0.5 * clap.encode_text(["epic battle drums"]) @ index.clap_audio.T
    assert np.allclose(joint.scores([item]), expected, atol=1e-5)

    index_library(music, tmp_path / "index", LibrarySettings())  # no CLAP: no audio vectors
    assert load_index(tmp_path / "index").clap_audio is None
