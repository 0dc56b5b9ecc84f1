"""A persistent cache of text generations, so a rerun never generates the same thing twice.

One SQLite file (``generations.sqlite`` under ``settings.text.cache_dir``) maps a key to the raw
completion. The key is a sha256 over everything that determines the output: the backend's
identity (model id, revision, adapter hash, dtype, decoding settings), the prompt text, the
new-token limit and the seed. Raw completions are stored, so a change in post-processing
applies to cached results too. WAL mode lets several processes share one cache.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterable, Mapping
from pathlib import Path

_SCHEMA = "CREATE TABLE IF NOT EXISTS generations (key TEXT PRIMARY KEY, completion TEXT NOT NULL)"
_CHUNK = 500  # keys per SELECT, below SQLite's parameter limit


def generation_key(
    identity: Mapping[str, str], prompt: str, *, max_new_tokens: int, seed: int
) -> str:
    """The cache key of one generation."""
    payload = {
        "identity": dict(identity),
        "prompt": prompt,
        "max_new_tokens": max_new_tokens,
        "seed": seed,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


class TextCache:
    """Key -> completion, in ``folder/generations.sqlite``."""

    def __init__(self, folder: Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / "generations.sqlite"
        self._db = sqlite3.connect(self.path, timeout=60)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(_SCHEMA)

    def get_many(self, keys: Iterable[str]) -> dict[str, str]:
        """The cached completions among ``keys``."""
        keys = list(keys)
        found: dict[str, str] = {}
        for start in range(0, len(keys), _CHUNK):
            chunk = keys[start : start + _CHUNK]
            marks = ",".join("?" * len(chunk))
            query = f"SELECT key, completion FROM generations WHERE key IN ({marks})"
            found.update(self._db.execute(query, chunk).fetchall())
        return found

    def put_many(self, items: Mapping[str, str]) -> None:
        """Store completions (one transaction: all or none)."""
        with self._db:
            self._db.executemany(
                "INSERT OR REPLACE INTO generations (key, completion) VALUES (?, ?)", items.items()
            )

    def __len__(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM generations").fetchone()[0]

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> TextCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
