"""MusicGen checkpoints built from configs, with random weights and no download.

Tests, the benchmark and the CLI demo need a MusicGen folder that loads through the real
``from_pretrained`` path of the ``musicgen`` backend, and no model hub is reachable here. Two
architectures: ``tiny`` (1.3 M parameters, seconds on a CPU) and ``musicgen-small`` (the
published facebook/musicgen-small shapes: 24-layer decoder, T5-base text encoder, 32 kHz
EnCodec at 50 Hz), the latter for GPU throughput measurements.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

ARCHITECTURES = ("tiny", "musicgen-small")

# A few words so that captions tokenize into real pieces rather than single letters.
_WORDS = [
    *("calm", "epic", "battle", "night", "day", "forest", "cave", "ocean", "desert", "snow"),
    *("ambient", "piano", "strings", "drums", "soft", "loud", "slow", "fast", "tense"),
    *("peaceful", "dark", "bright", "mysterious", "adventure", "synth", "flute", "choir"),
    *("bass", "guitar", "music", "with", "and", "of", "a", "the", "in"),
]

_ARCH_CONFIGS: dict[str, dict[str, dict[str, Any]]] = {
    "tiny": {
        "text_encoder": {"d_model": 32, "d_kv": 8, "d_ff": 64, "num_layers": 2, "num_heads": 4},
        "audio_encoder": {"hidden_size": 16, "num_filters": 4, "num_lstm_layers": 1},
        "decoder": {
            "hidden_size": 64,
            "num_hidden_layers": 2,
            "ffn_dim": 128,
            "num_attention_heads": 4,
        },
    },
    "musicgen-small": {
        "text_encoder": {
            "d_model": 768,
            "d_kv": 64,
            "d_ff": 3072,
            "num_layers": 12,
            "num_heads": 12,
            "vocab_size": 32128,
        },
        "audio_encoder": {"hidden_size": 128, "num_filters": 64, "num_lstm_layers": 2},
        "decoder": {
            "hidden_size": 1024,
            "num_hidden_layers": 24,
            "ffn_dim": 4096,
            "num_attention_heads": 16,
        },
    },
}


def _tokenizer() -> Any:
    """A T5 Unigram tokenizer from an in-code vocabulary (no sentencepiece training)."""
    from transformers import T5Tokenizer

    letters = [(c, -8.0) for c in "abcdefghijklmnopqrstuvwxyz0123456789,.-'"]
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -4.0)]
    vocab += [(f"\u2581{word}", -2.0) for word in _WORDS] + letters
    return T5Tokenizer(vocab=vocab, extra_ids=0)


def _randomize_codebooks(model: Any) -> None:
    """EnCodec's codebooks start as zeros (k-means learns them), which would map every prompt to
    the same codes and every code to the same audio. Random entries on the scale of the
    encoder's output make both the prompt and the sampled tokens count in the output."""
    import torch

    encodec = model.audio_encoder
    with torch.no_grad():
        noise = 0.1 * torch.randn(4, encodec.config.audio_channels, encodec.config.sampling_rate)
        scale = encodec.encoder(noise).std()
        for layer in encodec.quantizer.layers:
            layer.codebook.embed.normal_(std=float(scale))
            layer.codebook.embed_avg.copy_(layer.codebook.embed)


def build_musicgen(out_dir: Path, *, arch: str = "tiny", seed: int = 0) -> Path:
    """Save a random-weight MusicGen (model, generation config, processor) of ``arch`` to
    ``out_dir``; the folder loads with ``from_pretrained`` and ``AutoProcessor``."""
    import torch
    from transformers import (
        EncodecConfig,
        EncodecFeatureExtractor,
        GenerationConfig,
        MusicgenConfig,
        MusicgenDecoderConfig,
        MusicgenForConditionalGeneration,
        MusicgenProcessor,
        T5Config,
    )

    if arch not in _ARCH_CONFIGS:
        known = ", ".join(ARCHITECTURES)
        raise ValueError(f"unknown MusicGen architecture {arch!r}; known: {known}")
    sizes = _ARCH_CONFIGS[arch]
    tokenizer = _tokenizer()
    text_sizes = {"vocab_size": len(tokenizer), **sizes["text_encoder"]}
    text_encoder = T5Config(**text_sizes, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    audio_encoder = EncodecConfig(
        **sizes["audio_encoder"],
        target_bandwidths=[2.2],
        sampling_rate=32000,
        audio_channels=1,
        upsampling_ratios=[8, 5, 4, 4],
        codebook_size=2048,
        norm_type="weight_norm",
        use_causal_conv=False,
        pad_mode="reflect",
        compress=2,
        num_residual_layers=1,
    )
    decoder = MusicgenDecoderConfig(
        **sizes["decoder"],
        vocab_size=2048,
        num_codebooks=4,
        max_position_embeddings=2048,
        pad_token_id=2048,
        bos_token_id=2048,
        audio_channels=1,
    )
    config = MusicgenConfig(text_encoder=text_encoder, audio_encoder=audio_encoder, decoder=decoder)
    torch.manual_seed(seed)
    model = MusicgenForConditionalGeneration(config).eval()
    _randomize_codebooks(model)
    model.generation_config = GenerationConfig(
        decoder_start_token_id=2048,
        pad_token_id=2048,
        bos_token_id=2048,
        do_sample=True,
        top_k=250,
        guidance_scale=3.0,
        max_length=1500,
    )
    feature_extractor = EncodecFeatureExtractor(
        feature_size=1, sampling_rate=32000, padding_value=0.0
    )
    processor = MusicgenProcessor(feature_extractor=feature_extractor, tokenizer=tokenizer)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    return out_dir


def build_tiny_musicgen(out_dir: Path, *, seed: int = 0) -> Path:
    """Save the tiny random MusicGen (1.3 M parameters, 32 kHz, 50 Hz, 4 codebooks)."""
    return build_musicgen(out_dir, arch="tiny", seed=seed)
