"""The editor's music folder: which files are audio, and what the editor says about them.

Metadata is optional and comes from either ``MUSIC_DIR/library.csv`` (column ``file``, a path
relative to MUSIC_DIR, plus any of ``title, artist, tags, description``) or a JSON sidecar
next to the file (``song.flac`` -> ``song.json`` or ``song.flac.json``, an object with the
same keys; ``tags`` may be a list). The CSV wins where both name a file. Anything missing is
an empty string: the text description then rests on the audio features alone.
"""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg")
METADATA_FIELDS = ("title", "artist", "tags", "description")
CSV_NAME = "library.csv"


def audio_files(music_dir: Path) -> list[Path]:
    """Every audio file under ``music_dir`` (recursively), sorted, hidden files skipped."""
    return sorted(
        p
        for p in Path(music_dir).rglob("*")
        if p.is_file()
        and p.suffix.lower() in AUDIO_SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(music_dir).parts)
    )


def _clean(record: dict) -> dict[str, str]:
    """The metadata fields of a record as plain strings (a tag list is joined by commas)."""
    out = {}
    for name in METADATA_FIELDS:
        value = record.get(name)
        if isinstance(value, list):
            value = ", ".join(str(v) for v in value)
        out[name] = "" if value is None else str(value).strip()
    return out


def read_csv_metadata(music_dir: Path) -> dict[str, dict[str, str]]:
    """``library.csv`` as {relative file: metadata}; empty when there is no CSV."""
    path = Path(music_dir) / CSV_NAME
    if not path.is_file():
        return {}
    table = pl.read_csv(path, infer_schema=False)
    if "file" not in table.columns:
        raise ValueError(f"{path}: needs a 'file' column (and any of {', '.join(METADATA_FIELDS)})")
    return {str(Path(row["file"])): _clean(row) for row in table.iter_rows(named=True)}


def read_sidecar(audio: Path) -> dict[str, str] | None:
    """The JSON sidecar of ``audio`` as metadata, or None when it has none (or it is broken)."""
    for sidecar in (audio.with_suffix(".json"), audio.with_name(audio.name + ".json")):
        if sidecar.is_file():
            try:
                data = json.loads(sidecar.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError):
                return None
            return _clean(data) if isinstance(data, dict) else None
    return None


def metadata_for(audio: Path, music_dir: Path, csv: dict[str, dict[str, str]]) -> dict[str, str]:
    """The file's metadata: its CSV row, else its sidecar, else empty fields."""
    relative = str(audio.relative_to(music_dir))
    return csv.get(relative) or read_sidecar(audio) or _clean({})
