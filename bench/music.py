"""Benchmark: is the music worth publishing? Measured from a ``score`` output folder.

From ``DIR/track.mid`` (built from the segment MIDI files under ``DIR/segments/`` for output
of older versions that wrote none), ``DIR/segments.parquet`` and the stitch's seam metrics in
``DIR/manifest.json`` it reports:

- phrases: 4-bar (16-beat) phrases of the score, the longest run of identical ones and the
  share of distinct phrases;
- ensemble: windows inside a scene (``continue``) whose instruments differ from the window
  before; windows with drums, and with drums under a quiet caption (ambient, drone, eerie...);
- truth: windows whose rendered tempo (median over the window) is within 3% of the caption's
  "N BPM", and whose rendered key (mid-window) is the caption's key;
- scene changes: the circle-of-fifths distance between the keys before and after each scene
  change, the share that move to a related key (at most two steps, or relative or parallel),
  how many keep the anchor (``change``) rather than start a new piece;
- seams: the stitch's RMS jump and spectral-flux ratio at scene changes and inside scenes.

Run: ``python bench/music.py DIR [--json OUT]``.
"""

from __future__ import annotations

import argparse
import io
import json
import re
from pathlib import Path

import mido
import numpy as np
import polars as pl

from bgm_batch.audio.synth.compose import QUIET_WORDS, parse_caption
from bgm_batch.stages.score_midi import score_midi

PHRASE_BEATS = 16
GRID_TICKS = 60  # onsets compared on an eighth-of-a-beat grid (the synth humanises by ms)
ROLE_CHANNELS = (0, 1, 2, 3)
DRUMS = 9
CAPTION_BPM = re.compile(r"\b(\d{2,3})\s*bpm\b", re.IGNORECASE)
CAPTION_KEY = re.compile(r"\bin ([A-G][b#]?) (major|minor)\b")
SIGNATURE = {0: 0, 7: 1, 2: 2, 9: 3, 4: 4, 11: 5, 6: 6, 1: -5, 8: -4, 3: -3, 10: -2, 5: -1}


def load_score(out_dir: Path, rows: pl.DataFrame) -> tuple[mido.MidiFile, bool]:
    """``track.mid``, or the score assembled from the segment files of an older output;
    and whether it is the latter."""
    if (out_dir / "track.mid").is_file():
        return mido.MidiFile(out_dir / "track.mid"), False
    folder = next(p for p in (out_dir / "segments").iterdir() if p.is_dir())
    paths = [str(folder / f"{i:06d}.mid") for i in rows["index"]]
    data = score_midi(rows.with_columns(pl.Series("midi_path", paths)), 10.0)
    return mido.MidiFile(file=io.BytesIO(data)), True


class Score:
    """The score's notes, programs, tempo and keys against track time (seconds)."""

    def __init__(self, song: mido.MidiFile):
        self.tpb = song.ticks_per_beat
        tempo_ticks, tempos, keys = [0], [500000], []
        tick = 0
        for message in song.tracks[0]:
            tick += message.time
            if message.type == "set_tempo":
                tempo_ticks.append(tick)
                tempos.append(message.tempo)
            elif message.type == "key_signature":
                keys.append((tick, message.key))
        self.tempo_ticks, self.tempos = np.array(tempo_ticks), np.array(tempos)
        spans = np.diff(self.tempo_ticks) * self.tempos[:-1] / 1e6 / self.tpb
        self.tempo_seconds = np.concatenate([[0.0], np.cumsum(spans)])
        self.keys = [(self.seconds(t), k) for t, k in keys]
        self.notes: list[tuple[int, float, int, int]] = []  # tick, seconds, channel, pitch
        self.programs: dict[int, list[tuple[float, int]]] = {}
        for track in song.tracks[1:]:
            tick = 0
            for message in track:
                tick += message.time
                if message.type == "note_on" and message.velocity:
                    self.notes.append((tick, self.seconds(tick), message.channel, message.note))
                elif message.type == "program_change":
                    self.programs.setdefault(message.channel, []).append(
                        (self.seconds(tick), message.program)
                    )

    def seconds(self, tick: int) -> float:
        i = int(np.searchsorted(self.tempo_ticks, tick, side="right")) - 1
        return float(
            self.tempo_seconds[i] + (tick - self.tempo_ticks[i]) * self.tempos[i] / 1e6 / self.tpb
        )

    def bpm(self, seconds: float) -> float:
        i = int(np.searchsorted(self.tempo_seconds, seconds, side="right")) - 1
        return float(mido.tempo2bpm(self.tempos[i]))

    def key(self, seconds: float) -> str | None:
        held = [k for t, k in self.keys if t <= seconds]
        return held[-1] if held else None

    def program(self, channel: int, seconds: float) -> int | None:
        held = [p for t, p in self.programs.get(channel, []) if t <= seconds]
        return held[-1] if held else None


def phrase_metrics(score: Score, window_starts: list[float] | None) -> dict:
    """Longest run of identical 4-bar phrases and the share of distinct ones. Older segment
    files restate the notes held over from the previous segment at their start: with
    ``window_starts`` such onsets (within 10 ms of a window start) are left out."""
    size = PHRASE_BEATS * score.tpb
    phrases: dict[int, set] = {}
    starts = np.array(window_starts or [-1.0])
    for tick, seconds, channel, pitch in score.notes:
        if window_starts and np.abs(starts - seconds).min() < 0.01:
            continue
        phrases.setdefault(tick // size, set()).add(
            (round(tick % size / GRID_TICKS), channel, pitch)
        )
    ordered = [frozenset(phrases[i]) for i in sorted(phrases)]
    longest = run = 1
    for before, after in zip(ordered, ordered[1:], strict=False):
        run = run + 1 if before == after else 1
        longest = max(longest, run)
    return {
        "phrases": len(ordered),
        "longest_identical_run": longest,
        "distinct_share": round(len(set(ordered)) / len(ordered), 3),
    }


def _parse_key(name: str | None) -> tuple[int, bool] | None:
    if name is None:
        return None
    minor = name.endswith("m")
    params = parse_caption(f"in {name.rstrip('m')} {'minor' if minor else 'major'}")
    return params.tonic, minor


def fifths(a: tuple[int, bool], b: tuple[int, bool]) -> int:
    """Steps between two keys' signatures on the circle of fifths (relative keys: 0)."""
    sa = SIGNATURE[(a[0] + 3 * a[1]) % 12]
    sb = SIGNATURE[(b[0] + 3 * b[1]) % 12]
    return min(abs(sa - sb), 12 - abs(sa - sb))


def related(a: tuple[int, bool], b: tuple[int, bool]) -> bool:
    """At most two steps apart, or relative (0 steps), or parallel (same tonic)."""
    return fifths(a, b) <= 2 or a[0] == b[0]


def window_metrics(score: Score, rows: pl.DataFrame, states: list[dict] | None) -> dict:
    """Ensemble, drums, caption truth and scene-change keys per window."""
    out = {"windows": rows.height, "ensemble_changes_in_scene": 0, "drum_windows": 0}
    out |= {"quiet_windows_with_drums": 0, "tempo_agrees": 0, "key_agrees": 0, "captions": 0}
    keys, ensembles, distances, related_changes = [], [], [], 0
    onsets = np.array([s for _, s, _, _ in score.notes])
    channels = np.array([c for _, _, c, _ in score.notes])
    for n, row in enumerate(rows.iter_rows(named=True)):
        t0, t1 = row["start_s"], row["end_s"]
        inside = (onsets >= t0) & (onsets < t1)
        drums = bool((channels[inside] == DRUMS).any())
        out["drum_windows"] += drums
        words = set(re.findall(r"[a-z]+", row["caption"].lower()))
        out["quiet_windows_with_drums"] += drums and bool(words & QUIET_WORDS)
        present = set(channels[inside].tolist())
        ensembles.append({c: score.program(c, t1 - 0.01) for c in ROLE_CHANNELS if c in present})
        if states is not None:
            state = states[n]
            key = (state["tonic"], state["minor"])
        else:
            key = _parse_key(score.key((t0 + t1) / 2))
        keys.append(key)
        bpm = float(np.median([score.bpm(t) for t in np.linspace(t0, t1, 21)[:-1]]))
        caption_bpm, caption_key = (
            CAPTION_BPM.search(row["caption"]),
            CAPTION_KEY.search(row["caption"]),
        )
        if caption_bpm and caption_key:
            out["captions"] += 1
            out["tempo_agrees"] += abs(bpm / float(caption_bpm.group(1)) - 1) <= 0.03
            wanted = _parse_key(
                caption_key.group(1) + ("m" if caption_key.group(2) == "minor" else "")
            )
            out["key_agrees"] += wanted == key
        if n and row["transition"] == "continue":
            before, now = ensembles[-2], ensembles[-1]
            shared = before.keys() & now.keys()
            out["ensemble_changes_in_scene"] += any(before[c] != now[c] for c in shared)
        if n and row["transition"] in ("change", "restart") and keys[-2] and key:
            distances.append(fifths(keys[-2], key))
            related_changes += related(keys[-2], key)
    transitions = rows["transition"].value_counts().sort("transition")
    out |= {
        "transitions": dict(transitions.iter_rows()),
        "scene_changes": len(distances),
        "scene_changes_to_related_keys": related_changes,
        "max_fifths_at_scene_change": max(distances, default=0),
    }
    return out


def seam_metrics(manifest: dict, rows: pl.DataFrame) -> dict:
    """The stitch's seam metrics, at scene changes and inside scenes."""
    seams = pl.DataFrame([s for r in manifest["stitch"].values() for s in r["seams"]])
    starts = rows.select(pl.col("start_s").alias("time_s"), "transition")
    joined = seams.join(starts, on="time_s", how="left")
    out = {}
    for name, part in (
        ("scene", joined.filter(pl.col("transition").is_in(["change", "restart"]))),
        ("inside", joined.filter(pl.col("transition") == "continue")),
    ):
        out[f"{name}_seams"] = part.height
        out[f"{name}_rms_jump_db_p95"] = round(float(part["rms_jump_db"].quantile(0.95)), 2)
        out[f"{name}_crossfade_s_mean"] = round(float(part["crossfade_s"].mean()), 2)
    return out


def measure(out_dir: Path) -> dict:
    """Every figure of the module docstring for one single-recording output folder."""
    rows = pl.read_parquet(out_dir / "segments.parquet").sort("index")
    song, legacy = load_score(out_dir, rows)
    score = Score(song)
    states = None
    if not score.keys:  # older outputs wrote no key signatures: read the synth's states
        folder = next(p for p in (out_dir / "segments").iterdir() if p.is_dir())
        states = [
            json.loads((folder / f"{i:06d}.json").read_text())["state"] for i in rows["index"]
        ]
    manifest = json.loads((out_dir / "manifest.json").read_text())
    return {
        **phrase_metrics(score, rows["start_s"].to_list() if legacy else None),
        **window_metrics(score, rows, states),
        **seam_metrics(manifest, rows),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    figures = measure(args.out_dir)
    text = json.dumps(figures, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text)


if __name__ == "__main__":
    main()
