"""Write a tiny random audiocraft MusicGen checkpoint folder; run with .venv-audiocraft's python.

audiocraft's own ``MusicGen.get_pretrained('debug')`` exists in 1.3 but its text conditioner
loads spaCy's ``en_core_web_sm``, which spaCy downloads from GitHub at first use (not
reachable offline). This checkpoint has the debug model's sizes with a no-download text
conditioner (a lookup table over whole captions) and is saved in audiocraft's checkpoint
layout (``state_dict.bin`` + ``compression_state_dict.bin``, each with ``xp.cfg`` and
``best_state``), so the worker loads it through ``MusicGen.get_pretrained(folder)``, the same
loader as the released models.

Usage: python tests/audio/audiocraft_checkpoint.py OUT_DIR
"""

import sys
from pathlib import Path

import torch
from audiocraft.models import builders
from omegaconf import OmegaConf

N_Q, CARD = 4, 400

COMPRESSION_CFG = {
    "device": "cpu",
    "compression_model": "encodec",
    "encodec": {
        "autoencoder": "seanet",
        "quantizer": "rvq",
        "sample_rate": 32000,
        "channels": 1,
        "causal": False,
        "renormalize": False,
    },
    # 32 kHz / (10 * 8 * 16) = 25 Hz, as audiocraft's debug compression model
    "seanet": {
        "dimension": 32,
        "n_filters": 4,
        "n_residual_layers": 1,
        "ratios": [10, 8, 16],
        "encoder": {},
        "decoder": {},
    },
    "rvq": {"n_q": N_Q, "bins": CARD},
}

LM_CFG = {
    "device": "cpu",
    "dtype": "float32",
    "lm_model": "transformer_lm",
    "dataset": {"segment_duration": 30.0},  # max_duration; must exceed extend_stride (18 s)
    "transformer_lm": {
        "n_q": N_Q,
        "card": CARD,
        "dim": 16,
        "num_heads": 4,
        "num_layers": 2,
        "custom": True,
        "causal": True,
    },
    "codebooks_pattern": {"modeling": "delay", "delay": {"delays": list(range(N_Q))}},
    "attribute_dropout": {},
    "classifier_free_guidance": {"training_dropout": 0.0, "inference_coef": 3.0},
    "fuser": {"cross": ["description"], "prepend": [], "sum": [], "input_interpolate": []},
    "conditioners": {
        "description": {"model": "lut", "lut": {"n_bins": 128, "dim": 16, "tokenizer": "noop"}}
    },
}


def main(out_dir: Path) -> None:
    torch.manual_seed(0)
    out_dir.mkdir(parents=True, exist_ok=True)
    compression = builders.get_compression_model(OmegaConf.create(COMPRESSION_CFG))
    compression.quantizer(torch.randn(8, 32, 128), 1)  # initialise the codebooks (k-means)
    lm = builders.get_lm_model(OmegaConf.create(LM_CFG))
    torch.save(
        {"xp.cfg": COMPRESSION_CFG, "best_state": compression.state_dict()},
        out_dir / "compression_state_dict.bin",
    )
    torch.save({"xp.cfg": LM_CFG, "best_state": lm.state_dict()}, out_dir / "state_dict.bin")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
