"""MusicGen through transformers: text-to-music with audio-prompted continuation.

Each request renders ``duration_s`` seconds of new audio from its caption; when it carries the
previous segment's tail (``prompt_audio``), that tail is encoded by MusicGen's EnCodec and the
decoder continues from those codes, so the new segment follows on musically. The returned
audio holds only the new part (the re-decoded prompt is cut off), float32 (channels, samples)
at the model's own rate.

Batching: requests are grouped by prompt length in frames (no prompt is length 0) so that no
group needs padding (padded prompts would make the model continue from silence), and each
group is cut into chunks of ``settings.batch_size``. Requests of different durations share a
group: the group generates the longest and each request keeps its own length, which is exact
because generation is causal.

Determinism: every request samples from its own ``torch.Generator`` seeded with
``request.seed`` (one draw per codebook per step), through a logits processor that applies
classifier-free guidance and top-k itself and then lets greedy decoding pick the drawn token.
The same request with the same seed, settings and model therefore gives the same audio
whatever else is in its batch, up to floating-point differences between batch shapes (on CPU
in float32 these stay far below audibility; a changed sample can in principle flip one draw).
For a fixed batch composition on one machine the output is bit-identical from run to run on
CPU; on GPU, as far as its kernels are deterministic.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from bgm_batch.audio.protocol import AUDIO_BACKENDS, RenderedSegment, SegmentRequest
from bgm_batch.devices import resolve_device
from bgm_batch.settings import AudioSettings

# Stands for "impossible" in the token mask; finite so that guidance arithmetic stays finite.
_MASKED = -1.0e9


@dataclass(frozen=True)
class _Codec:
    """The audio encoder's geometry: samples per frame and rates."""

    sample_rate: int
    hop: int
    channels: int
    num_codebooks: int  # per channel: the delay pattern's depth (stereo interleaves two sets)
    max_positions: int

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop


class SeededSampler:
    """Logits processor drawing each request's tokens from that request's own generator.

    ``generate`` is run greedily with this processor: it applies classifier-free guidance
    (when the scores carry the unconditional half) and top-k, draws one token per row with
    inverse-CDF sampling from the row's request generator, and returns a mask that is 0 at the
    drawn token and very negative elsewhere. Generate's own guidance processor, which runs
    afterwards, maps such a mask onto itself, and greedy argmax then picks the drawn token.
    """

    def __init__(
        self, generators: Sequence[Any], num_codebooks: int, guidance_scale: float, top_k: int
    ) -> None:
        self.generators = list(generators)
        self.num_codebooks = num_codebooks
        self.guidance_scale = guidance_scale
        self.top_k = top_k

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        rows = len(self.generators) * self.num_codebooks
        logits = scores
        if scores.shape[0] == 2 * rows:
            conditional, unconditional = scores.split(rows)
            logits = unconditional + (conditional - unconditional) * self.guidance_scale
        k = logits.shape[-1] if self.top_k <= 0 else min(self.top_k, logits.shape[-1])
        top_values, top_indices = logits.topk(k, dim=-1)
        cdf = top_values.softmax(dim=-1).cumsum(dim=-1)
        draws = torch.cat(
            [torch.rand(self.num_codebooks, generator=g, device=g.device) for g in self.generators]
        ).to(cdf.device)
        picks = torch.searchsorted(cdf, (draws * cdf[:, -1]).unsqueeze(-1)).clamp_(max=k - 1)
        tokens = top_indices.gather(-1, picks).repeat(scores.shape[0] // rows, 1)
        return torch.full_like(scores, _MASKED).scatter_(-1, tokens, 0.0)


def _model_dtype(device: str) -> Any:
    """float32 on CPU; bf16 on GPUs that support it (T5 overflows less than in fp16), else fp16."""
    import torch

    if not device.startswith("cuda"):
        return torch.float32
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def _as_model_audio(audio: np.ndarray, rate: int, codec: _Codec) -> np.ndarray:
    """Resample a (channels, samples) clip to the model rate and match its channel count."""
    from scipy.signal import resample_poly

    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 1:
        audio = audio[None, :]
    if rate != codec.sample_rate:
        gcd = math.gcd(rate, codec.sample_rate)
        audio = resample_poly(audio, codec.sample_rate // gcd, rate // gcd, axis=-1)
    if audio.shape[0] != codec.channels:
        mono = audio.mean(axis=0, keepdims=True)
        audio = np.repeat(mono, codec.channels, axis=0)
    return audio.astype(np.float32)


class MusicgenBackend:
    """MusicGen (transformers) rendering batches of caption (+ prompt tail) requests."""

    name = "musicgen"

    def __init__(self, settings: AudioSettings) -> None:
        from transformers import AutoProcessor, MusicgenForConditionalGeneration

        self.settings = settings
        self.device = resolve_device(settings.device)
        self.dtype = _model_dtype(self.device)
        self.model = MusicgenForConditionalGeneration.from_pretrained(
            settings.model, dtype=self.dtype
        ).to(self.device)
        # EnCodec runs once per call (prompt in, codes out) and its LSTM has no half-precision
        # kernels everywhere: keep it in float32; only the text encoder and decoder go half.
        self.model.audio_encoder.float()
        self.model.eval()
        self.processor = AutoProcessor.from_pretrained(settings.model)
        audio_config = self.model.config.audio_encoder
        decoder_config = self.model.config.decoder
        self.codec = _Codec(
            sample_rate=int(audio_config.sampling_rate),
            hop=int(np.prod(audio_config.upsampling_ratios)),
            channels=int(decoder_config.audio_channels),
            num_codebooks=int(decoder_config.num_codebooks) // int(decoder_config.audio_channels),
            max_positions=int(decoder_config.max_position_embeddings),
        )

    @property
    def sample_rate(self) -> int:
        return self.codec.sample_rate

    def identity(self) -> dict[str, str]:
        return {
            "backend": self.name,
            "model": self.settings.model,
            "revision": getattr(self.model.config, "_commit_hash", None) or "local",
            "dtype": str(self.dtype).removeprefix("torch."),
            "guidance_scale": str(self.settings.guidance_scale),
            "top_k": str(self.settings.top_k),
        }

    def render(self, requests: Sequence[SegmentRequest]) -> list[RenderedSegment]:
        prompts = [self._prompt(request) for request in requests]
        groups: dict[int, list[int]] = {}
        for i, prompt in enumerate(prompts):
            groups.setdefault(0 if prompt is None else prompt.shape[-1], []).append(i)
        rendered: dict[int, np.ndarray] = {}
        size = max(1, self.settings.batch_size)
        for indices in groups.values():
            for start in range(0, len(indices), size):
                chunk = indices[start : start + size]
                audio = self._generate([requests[i] for i in chunk], [prompts[i] for i in chunk])
                rendered.update(zip(chunk, audio, strict=True))
        return [
            RenderedSegment(audio=rendered[i], sample_rate=self.codec.sample_rate)
            for i in range(len(requests))
        ]

    def _new_frames(self, duration_s: float) -> int:
        if duration_s <= 0:
            raise ValueError(f"duration_s must be positive, got {duration_s}")
        # At least one frame per codebook: shorter delay-pattern generations come out garbled.
        return max(math.ceil(duration_s * self.codec.frame_rate), self.codec.num_codebooks)

    def _prompt(self, request: SegmentRequest) -> np.ndarray | None:
        """The request's prompt at the model rate, cut to whole frames (the most recent ones)
        and short enough to leave room for the new frames in the decoder's positions."""
        if request.prompt_audio is None:
            return None
        if request.prompt_sample_rate is None:
            raise ValueError(f"request {request.key}: prompt_audio without prompt_sample_rate")
        audio = _as_model_audio(request.prompt_audio, request.prompt_sample_rate, self.codec)
        room = self.codec.max_positions - self._new_frames(request.duration_s)
        frames = min(audio.shape[-1] // self.codec.hop, room - self.codec.num_codebooks - 1)
        if frames < 1:
            return None
        return audio[:, audio.shape[-1] - frames * self.codec.hop :]

    def _generate(
        self, requests: Sequence[SegmentRequest], prompts: Sequence[np.ndarray | None]
    ) -> list[np.ndarray]:
        """One ``generate`` call for requests whose prompts all have the same length."""
        import torch
        from transformers import LogitsProcessorList

        codec = self.codec
        new_frames = max(self._new_frames(r.duration_s) for r in requests)
        prompt_frames = 0 if prompts[0] is None else prompts[0].shape[-1] // codec.hop
        if prompt_frames + new_frames + codec.num_codebooks > codec.max_positions:
            raise ValueError(
                f"{new_frames} frames exceed the decoder's {codec.max_positions} positions; "
                "render shorter segments"
            )
        inputs = dict(
            self.processor.tokenizer(
                [r.caption for r in requests], padding=True, return_tensors="pt"
            )
        )
        if prompts[0] is not None:
            # (samples,) for mono, (samples, channels) for stereo: the extractor's layout.
            clips = [p[0] if codec.channels == 1 else p.T for p in prompts]
            inputs.update(
                self.processor.feature_extractor(
                    clips, sampling_rate=codec.sample_rate, return_tensors="pt"
                )
            )
        inputs = {key: value.to(self.device) for key, value in inputs.items()}
        generators = [
            torch.Generator(device=self.device).manual_seed(int(r.seed)) for r in requests
        ]
        sampler = SeededSampler(
            generators,
            codec.num_codebooks * codec.channels,
            self.settings.guidance_scale,
            self.settings.top_k,
        )
        with torch.inference_mode():
            audio = self.model.generate(
                **inputs,
                max_new_tokens=new_frames + codec.num_codebooks - 1,
                do_sample=False,
                top_k=None,
                guidance_scale=self.settings.guidance_scale,
                logits_processor=LogitsProcessorList([sampler]),
            )
        audio = audio[..., prompt_frames * codec.hop :].float().cpu().numpy()
        return [
            np.ascontiguousarray(audio[i, :, : round(r.duration_s * codec.sample_rate)])
            for i, r in enumerate(requests)
        ]


@AUDIO_BACKENDS.register("musicgen")
def create_musicgen(settings: AudioSettings) -> MusicgenBackend:
    """Factory: ``settings.model`` is a hub id or a local folder saved with save_pretrained."""
    return MusicgenBackend(settings)
