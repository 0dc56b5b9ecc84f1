"""Evaluation metrics against hand-computed values and the reference libraries' own outputs."""

from __future__ import annotations

import json
import math
from importlib import resources
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from bgm_batch.evaluation import metrics as ev
from bgm_batch.evaluation.wordnet import LEXNAMES, WordNetMissingError, build_wordnet, lexnames_text


@pytest.fixture(scope="module")
def nltk_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("nltk_data")


@pytest.fixture(scope="module")
def captions() -> list[str]:
    path = resources.files("bgm_batch") / "resources" / "musiccaps_captions_sample.parquet"
    return pl.read_parquet(Path(str(path)))["caption"].to_list()


HYPS = ["a calm piano melody plays softly", "Fast drums and a loud electric guitar!"]
REFS = [
    ["a soft piano melody, calm and slow", "gentle piano"],
    ["loud drums with electric guitar riffs"],
]


def test_tokenize_lowercases_and_drops_punctuation() -> None:
    assert ev.tokenize("Slow, DREAMY synth-pad (in C#)!") == [
        "slow",
        "dreamy",
        "synth",
        "pad",
        "in",
        "c",
    ]


def test_bleu_matches_hand_computation() -> None:
    tokens = [ev.tokenize(h) for h in HYPS]
    refs = [[ev.tokenize(r) for r in rs] for rs in REFS]
    b1, b2, b3, b4 = ev.corpus_bleu(tokens, refs)
    # 8 of 13 unigrams match; closest reference lengths 7 + 6 = 13 = hypothesis length: BP = 1.
    assert b1 == pytest.approx(100 * 8 / 13)
    # bigram matches: "piano melody", "electric guitar" -> 2 of 5 + 6.
    assert b2 == pytest.approx(100 * math.sqrt(8 / 13 * 2 / 11))
    assert b3 == 0.0 and b4 == 0.0  # no trigram matches, no smoothing


def test_bleu_brevity_penalty() -> None:
    (b1, *_) = ev.corpus_bleu([["piano", "melody"]], [[["a", "calm", "piano", "melody"]]])
    assert b1 == pytest.approx(100 * math.exp(1 - 4 / 2))


def test_bleu_agrees_with_nltk_on_real_captions(captions: list[str]) -> None:
    from nltk.translate.bleu_score import corpus_bleu

    hyps = [ev.tokenize(c) for c in captions[:40]]
    # variable numbers of references: 1, 2 or 3 other captions per hypothesis
    refs = [[ev.tokenize(c) for c in captions[40 + i : 41 + i + i % 3]] for i in range(40)]
    weights = [(1.0,), (1 / 2,) * 2, (1 / 3,) * 3, (1 / 4,) * 4]
    expected = [100 * s for s in corpus_bleu(refs, hyps, weights=weights)]
    assert ev.corpus_bleu(hyps, refs) == pytest.approx(expected, rel=1e-9)


def test_rouge_l_matches_hand_computation() -> None:
    scores = ev.rouge_l_scores(HYPS, REFS)
    # window 1: LCS "a piano melody" = 3; P 3/6, R 3/7 (beats "gentle piano": LCS 1)
    p, r = 3 / 6, 3 / 7
    # window 2: LCS "loud electric guitar" = 3; P 3/7, R 3/6
    assert scores == pytest.approx([2 * p * r / (p + r), 2 * p * r / (p + r)])


def test_meteor_matches_hand_computation(nltk_data: Path) -> None:
    hyps = [["the", "cat", "sat"], ["a", "calm", "piano", "tune"], ["music", "is", "tranquil"]]
    refs = [
        [["the", "cat", "sat", "on", "a", "mat"]],
        [["a", "calm", "piano", "tune"]],
        [["music", "is", "calm"]],
    ]
    scores = ev.meteor_scores(hyps, refs, nltk_data)
    # 3 matches in one chunk: P 1, R 1/2, Fmean = PR / (0.9 P + 0.1 R), penalty 0.5 (1/3)^3
    fmean = 0.5 / (0.9 + 0.05)
    assert scores[0] == pytest.approx(fmean * (1 - 0.5 * (1 / 3) ** 3))
    assert scores[1] == pytest.approx(1 - 0.5 * (1 / 4) ** 3)
    # "tranquil" matches "calm" only through a WordNet synonym: the offline WordNet works
    assert scores[2] == pytest.approx(1 - 0.5 * (1 / 3) ** 3)


def test_lexnames_table() -> None:
    lines = lexnames_text().splitlines()
    assert len(lines) == len(LEXNAMES) == 45
    assert lines[0] == "00\tadj.all\t3" and lines[3] == "03\tnoun.Tops\t1"
    assert lines[29] == "29\tverb.body\t2" and lines[44] == "44\tadj.ppl\t3"


def test_missing_wordnet_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(WordNetMissingError, match="wordnet-base"):
        build_wordnet(tmp_path / "data", source=tmp_path / "nowhere")


def test_wordnet_folder_holds_copies(nltk_data: Path) -> None:
    corpus = build_wordnet(nltk_data)
    assert (corpus / "lexnames").read_text() == lexnames_text()
    assert not (corpus / "data.noun").is_symlink()


def test_embedding_cosine_ranks_paraphrase_above_unrelated() -> None:
    hyps = ["soft piano music, calm and slow", "soft piano music, calm and slow", "x"]
    refs = [
        ["a gentle, quiet piano piece at a relaxed tempo"],
        ["aggressive heavy metal with screaming vocals"],
        ["x"],
    ]
    cos = ev.embedding_scores(hyps, refs)
    assert cos[0] > cos[1] + 0.2
    assert cos[2] == pytest.approx(1.0, abs=1e-5)


def _write(frame: pl.DataFrame, path: Path) -> Path:
    if path.suffix == ".csv":
        frame.write_csv(path)
    else:
        frame.write_parquet(path)
    return path


def test_evaluate_files_pairs_by_window_and_reports_unmatched(
    tmp_path: Path, nltk_data: Path
) -> None:
    preds = pl.DataFrame(
        {
            "recording": ["r1", "r1", "r2"],
            "index": [0, 1, 0],
            "caption": [HYPS[0], HYPS[1], "orphan"],
            "scene": ["a", "b", "c"],
        }
    )
    refs = pl.DataFrame(
        {
            "recording": ["r1", "r1", "r1", "r3"],
            "index": [0, 0, 1, 5],
            "caption": [*REFS[0], *REFS[1], "lonely"],
        }
    )
    report = ev.evaluate_files(
        _write(preds, tmp_path / "segments.parquet"),
        _write(refs, tmp_path / "refs.csv"),
        nltk_data=nltk_data,
    )
    doc = report.to_json_dict()
    assert set(ev.METRICS) <= set(doc)
    assert doc["bleu1"] == pytest.approx(100 * 8 / 13, abs=1e-3)
    assert (doc["n_pairs"], doc["n_references"]) == (2, 3)
    assert (doc["n_unmatched_predictions"], doc["n_unmatched_references"]) == (1, 1)
    assert report.unmatched.rows() == [("r2", 0, "prediction"), ("r3", 5, "reference")]
    assert report.per_window["rouge_l"].to_numpy() == pytest.approx(ev.rouge_l_scores(HYPS, REFS))
    json.dumps(doc)


def test_evaluate_without_embedding(tmp_path: Path, nltk_data: Path) -> None:
    frame = pl.DataFrame({"recording": ["r"], "index": [0], "caption": ["a slow piano"]})
    report = ev.evaluate_frames(frame, frame, embed=False, nltk_data=nltk_data)
    assert report.scores["embed_cos"] is None
    assert report.scores["bleu1"] == pytest.approx(100.0)
    assert report.scores["rouge_l"] == pytest.approx(100.0)
    assert "Embed-cos:      -" in report.to_text()


def test_duplicate_predictions_and_no_overlap_are_errors(tmp_path: Path) -> None:
    dup = pl.DataFrame({"recording": ["r", "r"], "index": [0, 0], "caption": ["a", "b"]})
    with pytest.raises(ev.EvaluationError, match="share a window"):
        ev.read_predictions(_write(dup, tmp_path / "dup.parquet"))
    other = dup.with_columns(index=pl.Series([7, 8]))
    with pytest.raises(ev.EvaluationError, match="no prediction shares"):
        ev.evaluate_frames(dup.head(1), other, embed=False)
    with pytest.raises(ev.EvaluationError, match="lack column"):
        ev.read_references(_write(dup.drop("caption"), tmp_path / "bad.csv"))


def test_scores_are_scaled_like_the_paper(captions: list[str], nltk_data: Path) -> None:
    scores = ev.score_captions(
        captions[:10], [[c] for c in captions[10:20]], embed=False, nltk_data=nltk_data
    ).corpus
    assert all(0 <= scores[k] <= 100 for k in ev.METRICS[:6])
    assert scores["bleu1"] > scores["bleu2"] > scores["bleu3"] >= scores["bleu4"]
    assert np.isfinite(scores["meteor"]) and scores["meteor"] > 1  # 0-100, not 0-1
