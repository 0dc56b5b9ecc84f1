"""Library mode in the scoring pipeline: pick a track per stretch, then play it as the audio.

``pick_tracks`` runs after the transition plan. It adds ``source_track`` (the library file),
``source_offset_s`` (where in that file the window starts), ``reason``, and the playback
columns the ``LibraryBackend`` reads, to every row; outside library mode the three
deliverable columns are null. ``audio_backend`` then hands ``stages.render`` either the
library backend or the configured generator, so render, stitch, mux, the timeline and the
archive run unchanged.

Refinement state lives in ``DIR/library/``: ``picks.parquet`` (the last run's pick per
stretch) and ``feedback.json`` (every feedback turn so far, each with the picks it was given
on). A run with ``feedback`` appends a turn (unless the last turn is the same words and scope:
a rerun of the same command resumes, it does not refine twice); every run replays all turns,
so feedback accumulates across runs.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import polars as pl

from bgm_batch.atomic import atomic_path, write_text
from bgm_batch.audio.protocol import AUDIO_BACKENDS, AudioBackend
from bgm_batch.library import arrange, rank, reasons
from bgm_batch.library.index import LibraryIndex, load_index
from bgm_batch.settings import Settings
from bgm_batch.text.protocol import TEXT_BACKENDS

PREFIX = "library:"
STATE_DIR = "library"
PICK_COLUMNS = {
    "source_track": pl.String,
    "source_offset_s": pl.Float64,
    "reason": pl.String,
    "play_position_s": pl.Float64,
    "loop_start_s": pl.Float64,
    "loop_end_s": pl.Float64,
}
PICKS_SCHEMA = pl.Schema({"stretch": pl.String, "file": pl.String})


def index_dir_of(backend: str) -> Path | None:
    """The index folder of an audio backend spelled ``library:INDEX_DIR``; None otherwise."""
    return Path(backend[len(PREFIX) :]) if backend.startswith(PREFIX) else None


def index_identity(backend: str) -> dict[str, str] | None:
    """What identifies a library run before any pick (an archive's fingerprint): the index
    folder and a hash of its track table; None for a generating backend."""
    index_dir = index_dir_of(backend)
    if index_dir is None:
        return None
    tracks = index_dir / "tracks.parquet"
    digest = hashlib.sha256(tracks.read_bytes()).hexdigest() if tracks.is_file() else "missing"
    return {"backend": "library", "model": str(index_dir), "revision": digest[:16]}


def load_feedback(state_dir: Path) -> list[rank.Feedback]:
    """The feedback turns kept in ``state_dir`` (oldest first)."""
    path = state_dir / "feedback.json"
    turns = json.loads(path.read_text()) if path.is_file() else []
    return [rank.Feedback(t["text"], t.get("scope"), t.get("previous", {})) for t in turns]


def _previous_picks(state_dir: Path) -> dict[str, str]:
    path = state_dir / "picks.parquet"
    if not path.is_file():
        return {}
    return dict(pl.read_parquet(path).iter_rows())


def _turns(settings: Settings, state_dir: Path) -> list[rank.Feedback]:
    """Earlier turns plus this run's feedback (saved), given on the last run's picks."""
    turns = load_feedback(state_dir)
    text, scope = settings.library.feedback, settings.library.feedback_for
    repeated = bool(turns) and (turns[-1].text, turns[-1].scope) == (text, scope)
    if text and not repeated:  # a rerun of the same command (a resume) adds no second turn
        turns.append(rank.Feedback(text, scope, _previous_picks(state_dir)))
        payload = [t.__dict__ for t in turns]
        write_text(state_dir / "feedback.json", json.dumps(payload, indent=2) + "\n")
    return turns


def _ranker(index: LibraryIndex, settings: Settings) -> rank.Ranker:
    from bgm_batch.evaluation.embeddings import load_embedder

    embedder = load_embedder(device=settings.library.device)
    clap = None
    if index.clap_audio is not None and index.clap_model:
        from bgm_batch.library.clap import ClapEncoder

        clap = ClapEncoder(index.clap_model, device=settings.library.device).encode_text
    weights = settings.library
    return rank.Ranker(
        index,
        lambda texts: embedder.encode(texts),
        text_weight=weights.text_weight,
        lexical_weight=weights.lexical_weight,
        feature_weight=weights.feature_weight,
        clap_weight=weights.clap_weight,
        encode_clap=clap,
    )


def _reason_backend(settings: Settings):
    if settings.text.backend == "template" or not settings.library.llm_reasons:
        return None
    return TEXT_BACKENDS.create(settings.text.backend, settings.text)


def _placement_rows(
    stretch: rank.Stretch, frame_rows: dict[tuple[str, int], dict], track: dict, reason: str
) -> list[dict]:
    """Per window: the track, where it plays (unwrapped and in the file), the loop region."""
    loop_start, loop_end = arrange.loop_points(track["bars_s"], track["duration_s"])
    rows = []
    for index in stretch.indexes:
        row = frame_rows[(stretch.recording, index)]
        position = loop_start + float(row["start_s"]) - stretch.start_s
        rows.append(
            {
                "recording": stretch.recording,
                "index": index,
                "source_track": track["path"],
                "source_offset_s": arrange.wrap(position, loop_start, loop_end),
                "reason": reason,
                "play_position_s": position,
                "loop_start_s": loop_start,
                "loop_end_s": loop_end,
            }
        )
    return rows


def _save_picks(state_dir: Path, items: list[rank.Stretch], tracks: list[dict]) -> None:
    picks = pl.DataFrame(
        {"stretch": [s.id for s in items], "file": [t["file"] for t in tracks]},
        schema=PICKS_SCHEMA,
    )
    with atomic_path(state_dir / "picks.parquet") as tmp:
        picks.write_parquet(tmp)


def pick_tracks(frame: pl.DataFrame, settings: Settings, out_dir: Path) -> pl.DataFrame:
    """The planned frame with the pick columns (see the module docstring)."""
    index_dir = index_dir_of(settings.audio.backend)
    if index_dir is None:
        return frame.with_columns(
            pl.lit(None, dtype=dtype).alias(name) for name, dtype in PICK_COLUMNS.items()
        )
    index = load_index(index_dir)
    if index.tracks.is_empty():
        raise ValueError(f"the library index {index_dir} holds no usable tracks")
    state_dir = Path(out_dir) / STATE_DIR
    items = rank.stretches(frame)
    turns = _turns(settings, state_dir)
    scores = _ranker(index, settings).scores(items, turns)
    rows = index.tracks.to_dicts()
    tracks = [rows[i] for i in rank.assign(items, scores, settings.library.fit_margin)]
    why = reasons.reasons(items, tracks, turns, _reason_backend(settings), settings.seed)
    by_key = {(r["recording"], r["index"]): r for r in frame.iter_rows(named=True)}
    placed = [
        row
        for stretch, track, reason in zip(items, tracks, why, strict=True)
        for row in _placement_rows(stretch, by_key, track, reason)
    ]
    _save_picks(state_dir, items, tracks)
    schema = {"recording": pl.String, "index": pl.Int64, **PICK_COLUMNS}
    return frame.join(pl.DataFrame(placed, schema=schema), on=["recording", "index"], how="left")


def audio_backend(frame: pl.DataFrame, settings: Settings) -> AudioBackend:
    """The library backend for a picked frame in library mode, else the configured one."""
    index_dir = index_dir_of(settings.audio.backend)
    if index_dir is None:
        return AUDIO_BACKENDS.create(settings.audio.backend, settings.audio)
    if "play_position_s" not in frame.columns:
        raise ValueError("library mode needs the picks of pick_tracks (bgm-batch score)")
    return arrange.LibraryBackend.from_frame(frame, str(index_dir))
