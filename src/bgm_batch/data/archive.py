"""Find every recording of an archive and the video that goes with it.

An archive is a folder tree holding capture folders (``<recording>-<index>.json`` files; one
folder may hold several recordings) and/or recording Parquet files (from ``import-capture``,
one or more recordings each, told apart by their ``recording`` column). Videos are matched by
name, ``<recording>.mp4|.mkv|.mov`` anywhere under the root, or listed in an optional
``videos.csv`` at the root (``recording,video[,offset_s]``, paths relative to the root), which
wins over a match by name.

Discovery never raises on one bad input: an unreadable Parquet file or a recording id found in
two places becomes a row with a ``problem``, which the archive flow reports as failed while
the rest of the archive goes on. Hidden folders (``.cache``, ``.prefect``) and the output
folder are skipped, so an output folder inside the archive is never read back as input.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Iterable, Iterator
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

from bgm_batch.data.ingest import CAPTURE_NAME

VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov")
VIDEOS_CSV = "videos.csv"

ARCHIVE_SCHEMA = pl.Schema(
    {
        "recording": pl.String,
        "kind": pl.String,  # capture | parquet
        "source": pl.String,  # the capture folder or the Parquet file
        "inputs": pl.List(pl.String),  # the files whose content defines the recording
        "video": pl.String,  # null: no video, the recording gets the track and the rest
        "video_offset_s": pl.Float64,  # where the recording starts in the video
        "problem": pl.String,  # null, or why the recording cannot be scored at all
    }
)


def _walk(root: Path, exclude: Path | None) -> Iterator[Path]:
    """Every file under ``root`` in sorted order, minus hidden folders and ``exclude``."""
    for path in sorted(root.iterdir()):
        if path.name.startswith(".") or (exclude is not None and path == exclude):
            continue
        if path.is_dir():
            yield from _walk(path, exclude)
        elif path.is_file():
            yield path


def _capture_rows(files: Iterable[Path]) -> list[dict]:
    """One row per (folder, recording prefix) of capture files."""
    groups: dict[tuple[Path, str], list[str]] = {}
    for file in files:
        match = CAPTURE_NAME.match(file.name)
        if match:
            groups.setdefault((file.parent, match["recording"]), []).append(str(file))
    return [
        {"recording": rec, "kind": "capture", "source": str(folder), "inputs": sorted(inputs)}
        for (folder, rec), inputs in groups.items()
    ]


def _parquet_rows(file: Path) -> list[dict]:
    """One row per recording id in a Parquet file; one problem row if it cannot be read."""
    base = {"kind": "parquet", "source": str(file), "inputs": [str(file)]}
    try:
        ids = pq.read_table(file, columns=["recording"]).column("recording").unique()
        return [{**base, "recording": rec} for rec in sorted(i for i in ids.to_pylist() if i)]
    except Exception as exc:  # noqa: BLE001 - any unreadable file is one failed recording
        return [{**base, "recording": file.stem, "problem": f"unreadable Parquet: {exc}"}]


def _flag_duplicates(rows: list[dict]) -> list[dict]:
    """A recording id found in several sources: the first keeps it, the others fail."""
    seen: dict[str, str] = {}
    for row in rows:
        first = seen.setdefault(row["recording"], row["source"])
        if first != row["source"] and not row.get("problem"):
            row["problem"] = f"recording id also found in {first}"
    return rows


def read_videos_csv(path: Path, root: Path) -> dict[str, tuple[str, float]]:
    """``videos.csv``: recording -> (video path, offset in seconds)."""
    videos = {}
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            video = Path(row["video"].strip())
            offset = float(row.get("offset_s") or 0.0)
            videos[row["recording"].strip()] = (
                str(video if video.is_absolute() else root / video),
                offset,
            )
    return videos


def _videos(files: list[Path], root: Path) -> dict[str, tuple[str, float]]:
    """Videos by name, then ``videos.csv`` on top."""
    found = {f.stem: (str(f), 0.0) for f in files if f.suffix.lower() in VIDEO_SUFFIXES}
    listing = root / VIDEOS_CSV
    return {**found, **(read_videos_csv(listing, root) if listing.is_file() else {})}


def discover_archive(root: Path, exclude: Path | None = None) -> pl.DataFrame:
    """Every recording under ``root`` (schema ``ARCHIVE_SCHEMA``), sorted by recording id."""
    root = Path(root).resolve()
    files = list(_walk(root, Path(exclude).resolve() if exclude else None))
    rows = _capture_rows(files)
    for file in files:
        if file.suffix == ".parquet":
            rows.extend(_parquet_rows(file))
    rows = _flag_duplicates(sorted(rows, key=lambda r: (r["recording"], r["source"])))
    videos = _videos(files, root)
    for row in rows:
        row["video"], row["video_offset_s"] = videos.get(row["recording"], (None, 0.0))
        row.setdefault("problem", None)
    return pl.DataFrame(rows, schema=ARCHIVE_SCHEMA)


def inputs_hash(inputs: Iterable[str]) -> str:
    """sha256 over the names and contents of a recording's input files.

    Names without their folder, so moving the archive does not invalidate it; a Parquet file
    holding several recordings changes all of them when it changes.
    """
    digest = hashlib.sha256()
    for path in sorted(inputs, key=lambda p: Path(p).name):
        digest.update(Path(path).name.encode() + b"\0")
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()
