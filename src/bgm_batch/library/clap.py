"""Joint audio-text embeddings with a CLAP model (transformers ``ClapModel``), optional.

MiniLM only sees a track's description; a CLAP model hears the audio itself, so a library
without metadata still ranks well. The model is a hub id or a local folder holding the
model, its tokenizer and its ``ClapFeatureExtractor``. Each track is embedded from its middle
``feature_extractor.nb_max_samples`` samples (10 s for the published models), cut here so the
extractor never crops at random: the same file always gets the same vector.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


class ClapEncoder:
    """Encodes audio files and texts into one space (L2-normalised vectors)."""

    def __init__(self, model_id: str, *, device: str = "cpu") -> None:
        import torch
        from transformers import AutoFeatureExtractor, AutoTokenizer, ClapModel

        self._torch = torch
        self.model_id = model_id
        self.model = ClapModel.from_pretrained(model_id).to(device).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(model_id)
        self.extractor = AutoFeatureExtractor.from_pretrained(model_id)
        self.device = device
        self._fused = bool(self.model.config.audio_config.enable_fusion)

    def _middle(self, path: str | Path) -> np.ndarray:
        import librosa

        audio, _ = librosa.load(path, sr=self.extractor.sampling_rate, mono=True)
        size = self.extractor.nb_max_samples
        start = max(audio.size - size, 0) // 2
        return audio[start : start + size]

    def _normalised(self, features: object) -> np.ndarray:
        torch = self._torch
        tensor = features if isinstance(features, torch.Tensor) else features.pooler_output
        return torch.nn.functional.normalize(tensor, p=2, dim=-1).float().cpu().numpy()

    def encode_audio(self, paths: Sequence[str | Path]) -> np.ndarray:
        """``(len(paths), dim)`` unit vectors, one per audio file, in order."""
        vectors = []
        for path in paths:
            inputs = self.extractor(
                [self._middle(path)],
                sampling_rate=self.extractor.sampling_rate,
                truncation="fusion" if self._fused else "rand_trunc",  # no crop: cut already
                return_tensors="pt",
            ).to(self.device)
            with self._torch.inference_mode():
                vectors.append(self._normalised(self.model.get_audio_features(**inputs)))
        return np.concatenate(vectors) if vectors else np.zeros((0, 0), np.float32)

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        """``(len(texts), dim)`` unit vectors in the audio embeddings' space."""
        inputs = self.tokenizer(list(texts), padding=True, truncation=True, return_tensors="pt").to(
            self.device
        )
        with self._torch.inference_mode():
            return self._normalised(self.model.get_text_features(**inputs))
