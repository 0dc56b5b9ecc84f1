"""The ablation of the paper's Table I: direct vs two-stage generation, for several text backends.

Every backend runs both modes over one set of characterized windows; each run's captions are
scored against the reference captions with ``evaluation.metrics``. The result is one row per
(backend, mode) with the paper's columns (B-1..B-4, METEOR, R-L, plus the embedding cosine),
written as Parquet and printed as a markdown table in the paper's layout, best value of each
column in bold. The rule-based ``template`` backend is always a row: the floor any model must
beat.

Backends are named ``NAME[:MODEL][@ADAPTER]``: ``template``, ``hf`` (the configured model),
``hf:/models/llama-2-7b-chat``, ``hf:/models/llama-2-7b-chat@out/adapter``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from bgm_batch.evaluation.metrics import METRICS, evaluate_frames

MODES = ("direct", "two-stage")
MODE_LABELS = {"direct": "Direct Generation", "two-stage": "Two-Stage Generation"}
COLUMN_LABELS = dict(
    zip(METRICS, ("B-1↑", "B-2↑", "B-3↑", "B-4↑", "METEOR↑", "R-L↑", "Embed-cos↑"), strict=True)
)


@dataclass(frozen=True)
class BackendSpec:
    """A text backend to compare: registry name, optional model and LoRA adapter."""

    name: str
    model: str | None = None
    adapter: str | None = None

    @classmethod
    def parse(cls, text: str) -> BackendSpec:
        """``NAME[:MODEL][@ADAPTER]``."""
        head, _, adapter = text.partition("@")
        name, _, model = head.partition(":")
        if not name:
            raise ValueError(f"bad backend spec {text!r}; expected NAME[:MODEL][@ADAPTER]")
        return cls(name, model or None, adapter or None)

    def label(self, default_model: str) -> str:
        """Row label: the backend, the model's last path part, ``+ LoRA`` with an adapter."""
        if self.name == "template":
            return "template"
        model = Path(self.model or default_model).name
        return f"{self.name}:{model}" + (" + LoRA" if self.adapter else "")

    def text_settings(self, base: Any) -> Any:
        """``base`` (TextSettings) with this backend, model and adapter."""
        update: dict[str, Any] = {"backend": self.name}
        if self.model:
            update["model"] = self.model
        if self.adapter:
            update["adapter"] = Path(self.adapter)
        return base.model_copy(update=update)


def with_template(backends: Sequence[str]) -> list[BackendSpec]:
    """Parsed specs, ``template`` first unless already present."""
    specs = [BackendSpec.parse(b) for b in backends]
    if not any(s.name == "template" for s in specs):
        specs.insert(0, BackendSpec("template"))
    return specs


def compare_table(
    frame: pl.DataFrame,
    backends: Sequence[str],
    settings: Any,
    references: pl.DataFrame,
    *,
    modes: Sequence[str] = MODES,
    embed: bool = True,
    nltk_data: Path | None = None,
    progress: bool = False,
) -> pl.DataFrame:
    """One row per (backend, mode): label, backend, model, adapter, mode, the metrics, counts.

    ``frame`` is characterized (recording, index, info_str, ...); ``settings`` the pipeline
    Settings (its ``text`` part is the base of every backend, its ``seed`` the seed).
    """
    from bgm_batch.stages.narrate import narrate
    from bgm_batch.text.protocol import TEXT_BACKENDS

    rows = []
    for spec in with_template(backends):
        text_settings = spec.text_settings(settings.text)
        backend = TEXT_BACKENDS.create(spec.name, text_settings)
        for mode in modes:
            run_settings = text_settings.model_copy(update={"mode": mode})
            narrated, _ = narrate(
                frame, backend, run_settings, seed=settings.seed, progress=progress
            )
            report = evaluate_frames(
                narrated.select("recording", "index", "caption"),
                references,
                embed=embed,
                nltk_data=nltk_data,
            )
            counts = report.to_json_dict()
            rows.append(
                {
                    "model": f"{spec.label(settings.text.model)} + {MODE_LABELS[mode]}",
                    "backend": spec.name,
                    "model_id": backend.identity().get("model", ""),
                    "adapter": spec.adapter,
                    "mode": mode,
                    **report.scores,
                    "n_pairs": report.n_pairs,
                    "n_unmatched": counts["n_unmatched_predictions"]
                    + counts["n_unmatched_references"],
                }
            )
    schema = {name: pl.Float64 for name in METRICS} | {"adapter": pl.String}
    return pl.DataFrame(rows, schema_overrides=schema)


def to_markdown(table: pl.DataFrame) -> str:
    """The paper's layout: ``Model | B-1↑ | ... | R-L↑ | Embed-cos↑``, best of a column bold."""
    metrics = [m for m in METRICS if table[m].null_count() < table.height]
    best = {m: table[m].max() for m in metrics}
    lines = [
        "| Model | " + " | ".join(COLUMN_LABELS[m] for m in metrics) + " |",
        "|---" * (len(metrics) + 1) + "|",
    ]
    for row in table.iter_rows(named=True):
        cells = []
        for m in metrics:
            value = row[m]
            text = "-" if value is None else f"{value:.2f}"
            cells.append(f"**{text}**" if value is not None and value == best[m] else text)
        lines.append(f"| {row['model']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def characterized_frame(recordings: Sequence[Path], profile: Any) -> pl.DataFrame:
    """Read and characterize recordings (capture folders or recording Parquet files) with a
    loaded game profile (``settings.profile_model``)."""
    from bgm_batch.data.ingest import read_recording
    from bgm_batch.stages.characterize import characterize

    frames = [characterize(read_recording(Path(p), profile).frame, profile) for p in recordings]
    return pl.concat(frames, how="diagonal_relaxed")


def write_table(table: pl.DataFrame, parquet: Path, markdown: Path | None = None) -> str:
    """Write the table as Parquet (and markdown); returns the markdown text."""
    from bgm_batch.atomic import atomic_path, write_text

    with atomic_path(Path(parquet)) as tmp:
        table.write_parquet(tmp)
    text = to_markdown(table)
    if markdown is not None:
        write_text(Path(markdown), text)
    return text
