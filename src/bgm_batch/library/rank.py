"""Rank library tracks for each stretch of a recording, refine with feedback, assign picks.

A **stretch** is a scene run of the planned frame (a ``start`` or ``restart`` row and the
``continue`` rows after it): one track plays through it, so the music does not switch every
window. Its **query** is the mean MiniLM embedding of its distinct captions, plus its
narratives and its scene (``Biome=Plains|Time=Day|combat`` read as words) at lower weight.

A track's score for a stretch is

    text_weight * cos(query, description) + lexical_weight * bm25
        + feature_weight * fit + clap_weight * cos_clap

where ``bm25`` is the Okapi BM25 score of the stretch's words in the track description,
divided by the best track's (0..1): the exact descriptor words (an instrument, a genre tag)
that a sentence embedding blurs; ``fit`` (0..1) compares the track's measured energy, tempo
and mode with what the captions ask for (``parse_caption``, the synth backend's reading of a
caption), and ``cos_clap`` compares the CLAP text embedding of the captions with the track's
CLAP audio embedding (only when the index has one).

**Feedback** turns are MuseChat's second turn: each turn covering a stretch moves its query
toward the previous pick (keep the style) and the "more ..." phrases, away from the
"less ..." phrases, adds a word-level bonus and malus on the track descriptions (embeddings
are weak at negation: "less vocals" must demote tracks tagged vocals), and demotes the
previous pick itself (the user asked for a change); its "more ..." words join the stretch's
words for BM25. Turns accumulate.

**Assignment**: stretches in time order; each takes its best track not yet used in its
recording among the *fitting* ones (score within ``fit_margin`` of the best); only when every
fitting track is used does a track repeat.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from bgm_batch.audio.synth.compose import parse_caption
from bgm_batch.library.index import LibraryIndex

Encoder = Callable[[list[str]], np.ndarray]
NARRATIVE_WEIGHT = 0.5
SCENE_WEIGHT = 0.5
PREVIOUS_PICK_WEIGHT = 0.5  # pull toward the previous pick's style
FEEDBACK_WEIGHT = 1.0  # pull toward "more ...", push from "less ..."
WORD_WEIGHT = 0.3  # description words that match a feedback phrase
PREVIOUS_PICK_PENALTY = 0.2
NEGATIVE_CUES = ("less", "fewer", "no", "without", "not", "avoid", "drop", "remove")
POSITIVE_CUES = ("more", "with", "add", "some", "extra")
STOPWORDS = frozenset(
    re.findall(
        r"\w+",
        "a an the and or of to in on with for by at as is are it its this that music song track "
        "sound sounds some more less very into from like",
    )
)


@dataclass(frozen=True)
class Feedback:
    """One refinement turn: the words, the stretches it covers (None: the whole recording;
    else a scene substring or a time range ``START-END`` in seconds or ``M:SS``), and the
    picks it was given on (stretch id -> track file) to move away from."""

    text: str
    scope: str | None = None
    previous: dict[str, str] = field(default_factory=dict)

    def phrases(self) -> tuple[list[str], list[str]]:
        """(wanted, unwanted) phrases: "less vocals, more epic strings" -> (["epic strings"],
        ["vocals"])."""
        wanted, unwanted = [], []
        for part in re.split(r"[,;.]|\band\b|\bbut\b", self.text.lower()):
            words = part.split()
            if not words:
                continue
            if words[0] in NEGATIVE_CUES:
                unwanted.append(" ".join(words[1:]) or words[0])
            else:
                wanted.append(" ".join(words[1:] if words[0] in POSITIVE_CUES else words))
        return [w for w in wanted if w], [u for u in unwanted if u]


@dataclass(frozen=True)
class Stretch:
    """A scene run of one recording: its rows (by index) and what it asks for."""

    id: str  # "<recording>:<first index>"
    recording: str
    indexes: list[int]
    start_s: float
    end_s: float
    scene: str
    captions: list[str]
    narratives: list[str]


def _time(text: str) -> float:
    """Seconds from ``SS``, ``M:SS`` or ``H:MM:SS``."""
    value = 0.0
    for part in text.strip().split(":"):
        value = value * 60 + float(part)
    return value


def covers(scope: str | None, stretch: Stretch) -> bool:
    """Whether a feedback scope applies to a stretch (see ``Feedback``)."""
    if scope is None:
        return True
    match = re.fullmatch(r"\s*([\d:.]+)\s*-\s*([\d:.]+)\s*", scope)
    if match:
        lo, hi = _time(match.group(1)), _time(match.group(2))
        return stretch.start_s < hi and stretch.end_s > lo
    return scope.lower() in stretch.scene.lower()


def stretches(frame: pl.DataFrame) -> list[Stretch]:
    """The scene runs of a planned, narrated frame, in recording and time order."""
    out: list[Stretch] = []
    rows: list[dict] = []
    for row in frame.sort("recording", "index").iter_rows(named=True):
        if rows and (row["transition"] != "continue" or row["recording"] != rows[0]["recording"]):
            out.append(_stretch(rows))
            rows = []
        rows.append(row)
    if rows:
        out.append(_stretch(rows))
    return out


def _stretch(rows: list[dict]) -> Stretch:
    first = rows[0]
    return Stretch(
        id=f"{first['recording']}:{first['index']}",
        recording=first["recording"],
        indexes=[int(r["index"]) for r in rows],
        start_s=float(first["start_s"]),
        end_s=float(rows[-1]["end_s"]),
        scene=first["scene"],
        captions=list(dict.fromkeys(r["caption"] for r in rows)),
        narratives=list(dict.fromkeys(r["narrative"] for r in rows if r.get("narrative"))),
    )


def scene_words(scene: str) -> str:
    """``Biome=Plains|Time=Day|combat`` -> ``Plains, Day, combat, battle``."""
    words = [part.split("=")[-1] for part in scene.split("|") if part and part != "?"]
    words = [w for w in words if w != "?"]
    return ", ".join(words + (["battle"] if "combat" in words else []))


def _unit(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.maximum(norms, 1e-9)


def _mean(encoded: dict[str, np.ndarray], texts: Sequence[str], dim: int) -> np.ndarray:
    return np.mean([encoded[t] for t in texts], axis=0) if texts else np.zeros(dim, np.float32)


def queries(items: Sequence[Stretch], encode: Encoder) -> np.ndarray:
    """One unit query vector per stretch (see the module docstring)."""
    scenes = [[scene_words(s.scene)] if scene_words(s.scene) else [] for s in items]
    texts = {t for s, scene in zip(items, scenes, strict=True) for t in (*s.captions, *scene)}
    ordered = sorted(texts | {t for s in items for t in s.narratives})
    encoded = dict(zip(ordered, encode(ordered), strict=True)) if ordered else {}
    dim = len(next(iter(encoded.values()))) if encoded else 1
    rows = [
        _mean(encoded, s.captions, dim)
        + NARRATIVE_WEIGHT * _mean(encoded, s.narratives, dim)
        + SCENE_WEIGHT * _mean(encoded, scene, dim)
        for s, scene in zip(items, scenes, strict=True)
    ]
    return _unit(np.array(rows, dtype=np.float32)) if rows else np.zeros((0, dim), np.float32)


def feature_fit(tracks: pl.DataFrame, captions: Sequence[str]) -> np.ndarray:
    """0..1 per track: energy, tempo (octave errors half-forgiven) and mode against what the
    captions ask for."""
    wanted = parse_caption(" ".join(captions))
    energy = tracks["energy"].to_numpy()
    ratio = np.log2(np.maximum(tracks["tempo_bpm"].to_numpy(), 1.0) / wanted.tempo)
    octave = 0.6 * np.exp(-((np.abs(ratio) - 1) ** 2) / 0.125)
    tempo = np.maximum(np.exp(-(ratio**2) / 0.125), octave)
    mode = (tracks["mode"].to_numpy() == ("minor" if wanted.minor else "major")).astype(float)
    return 0.5 * (1.0 - np.abs(energy - wanted.intensity)) + 0.3 * tempo + 0.2 * mode


def _tokens(text: str) -> list[str]:
    """Lower-case content words, a plural ``s`` dropped (strings -> string)."""
    return [w.rstrip("s") for w in re.findall(r"[a-z]+", text.lower()) if w not in STOPWORDS]


def _words(text: str) -> set[str]:
    return set(_tokens(text))


def _word_match(phrases: Sequence[str], texts: Sequence[str]) -> np.ndarray:
    """Per text: the share of the phrases' content words it contains (0..1)."""
    wanted = set().union(*(_words(p) for p in phrases)) if phrases else set()
    if not wanted:
        return np.zeros(len(texts))
    return np.array([len(wanted & _words(t)) / len(wanted) for t in texts])


def bm25(
    queries: Sequence[str], documents: Sequence[str], k1: float = 1.2, b: float = 0.75
) -> np.ndarray:
    """``(queries, documents)`` Okapi BM25 scores, each row divided by its maximum (0..1)."""
    docs = [Counter(_tokens(d)) for d in documents]
    vocab = {w: i for i, w in enumerate(sorted(set().union(*docs)))} if docs else {}
    tf = np.zeros((len(docs), len(vocab)))
    for row, counts in enumerate(docs):
        for word, count in counts.items():
            tf[row, vocab[word]] = count
    lengths = tf.sum(axis=1, keepdims=True)
    df = (tf > 0).sum(axis=0)
    idf = np.log(1 + (len(docs) - df + 0.5) / (df + 0.5))
    weights = idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * lengths / max(lengths.mean(), 1)))
    asked = np.zeros((len(queries), len(vocab)))
    for row, query in enumerate(queries):
        asked[row, [vocab[w] for w in set(_tokens(query)) if w in vocab]] = 1.0
    scores = asked @ weights.T
    return scores / np.maximum(scores.max(axis=1, keepdims=True), 1e-9)


def _query_words(stretch: Stretch, feedback: Sequence[Feedback]) -> str:
    """The words BM25 looks for: the stretch's texts and the "more ..." phrases of the
    feedback turns that cover it."""
    wanted = [p for turn in feedback if covers(turn.scope, stretch) for p in turn.phrases()[0]]
    return " ".join([*stretch.captions, *stretch.narratives, scene_words(stretch.scene), *wanted])


@dataclass
class Ranker:
    """Scores tracks for stretches; one per index and settings."""

    index: LibraryIndex
    encode: Encoder
    text_weight: float = 1.0
    lexical_weight: float = 0.3
    feature_weight: float = 0.5
    clap_weight: float = 0.5
    encode_clap: Encoder | None = None

    def scores(self, items: Sequence[Stretch], feedback: Sequence[Feedback] = ()) -> np.ndarray:
        """``(len(items), tracks)`` scores, higher is better."""
        tracks = self.index.tracks
        files = tracks["file"].to_list()
        query = queries(items, self.encode)
        bonus = np.zeros((len(items), tracks.height))
        for turn in feedback:
            query, bonus = self._refine(items, turn, query, bonus, files)
        total = self.text_weight * (query @ self.index.text_embeddings.T) + bonus
        if self.lexical_weight and items:
            words = [_query_words(s, feedback) for s in items]
            total = total + self.lexical_weight * bm25(words, tracks["text"].to_list())
        if self.feature_weight and items:
            fit = np.stack([feature_fit(tracks, s.captions) for s in items])
            total = total + self.feature_weight * fit
        if self.encode_clap is not None and self.index.clap_audio is not None and items:
            clap_query = _unit(self.encode_clap([" ".join(s.captions) for s in items]))
            total = total + self.clap_weight * (clap_query @ self.index.clap_audio.T)
        return total

    def _refine(
        self,
        items: Sequence[Stretch],
        turn: Feedback,
        query: np.ndarray,
        bonus: np.ndarray,
        files: list[str],
    ) -> tuple[np.ndarray, np.ndarray]:
        """Apply one feedback turn to the stretches it covers."""
        wanted, unwanted = turn.phrases()
        phrase_vectors = self.encode(wanted + unwanted) if wanted or unwanted else None
        texts = self.index.tracks["text"].to_list()
        words = WORD_WEIGHT * (_word_match(wanted, texts) - _word_match(unwanted, texts))
        query, bonus = query.copy(), bonus.copy()
        for i, stretch in enumerate(items):
            if not covers(turn.scope, stretch):
                continue
            shift = np.zeros_like(query[i])
            if phrase_vectors is not None:
                shift += FEEDBACK_WEIGHT * phrase_vectors[: len(wanted)].sum(axis=0)
                shift -= FEEDBACK_WEIGHT * phrase_vectors[len(wanted) :].sum(axis=0)
            previous = turn.previous.get(stretch.id)
            if previous in files:
                shift += PREVIOUS_PICK_WEIGHT * self.index.text_embeddings[files.index(previous)]
                bonus[i, files.index(previous)] -= PREVIOUS_PICK_PENALTY
            query[i] = _unit(query[i] + shift)
            bonus[i] += words
        return query, bonus


def assign(items: Sequence[Stretch], scores: np.ndarray, fit_margin: float) -> list[int]:
    """The track row for each stretch (see "Assignment" in the module docstring)."""
    used: dict[str, set[int]] = {}
    picks = []
    for stretch, row in zip(items, scores, strict=True):
        taken = used.setdefault(stretch.recording, set())
        order = np.argsort(-row, kind="stable")
        fitting = [int(t) for t in order if row[t] >= row[order[0]] - fit_margin]
        fresh = [t for t in fitting if t not in taken]
        pick = fresh[0] if fresh else int(order[0])
        taken.add(pick)
        picks.append(pick)
    return picks
