"""Standalone MusicGen worker for the ``audiocraft`` backend; runs inside .venv-audiocraft.

audiocraft 1.3 pins torch 2.1 and numpy<2 and cannot live in the project's environment, so the
backend starts this script with the isolated interpreter and talks to it over a small file
protocol. It imports only the standard library, numpy, torch and audiocraft (never bgm_batch).

Protocol: ``python -I worker.py --model NAME_OR_DIR [--device cpu|cuda|auto]`` (``-I``
isolates the worker from the user's site-packages and environment) loads the model once and
prints one JSON line on stdout:
``{"ready": true, "audiocraft": version, "sample_rate": ..., "channels": ..., "frame_rate": ...}``.
Then, for each line read from stdin holding a job folder, it reads ``JOB/request.json``::

    {"guidance_scale": 3.0, "top_k": 250,
     "items": [{"caption": str, "duration_s": float, "seed": int,
                "prompt": "prompt_0.npy" | null, "prompt_sample_rate": int | null}, ...]}

(prompts are float32 (channels, samples) .npy files inside JOB), writes ``JOB/out_<i>.wav``
(float32 WAV, the new audio only) and ``JOB/reply.json`` (``{"items": [{"wav": "out_0.wav",
"sample_rate": ...}, ...]}`` or ``{"error": traceback}``), then prints ``{"done": "JOB"}``.
End of stdin ends the worker. Anything else the libraries print goes to stderr.

Determinism: requests are grouped by prompt length in frames and each group is one batched
call seeded with a hash of its requests' seeds, so a batch of the same requests (same order,
seeds, captions, prompts) reproduces its audio; a request's audio depends on its batch-mates
because audiocraft samples a batch from one random stream.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import struct
import sys
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import torch


def write_float_wav(path: Path, audio: np.ndarray, sample_rate: int) -> None:
    """Write (channels, samples) float32 as an IEEE-float WAV (format 3), exactly."""
    channels = audio.shape[0]
    data = np.ascontiguousarray(audio.T, dtype="<f4").tobytes()
    header = b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVE"
    header += b"fmt " + struct.pack(
        "<IHHIIHH", 16, 3, channels, sample_rate, sample_rate * channels * 4, channels * 4, 32
    )
    header += b"data" + struct.pack("<I", len(data))
    path.write_bytes(header + data)


def load_model(name: str, device: str) -> Any:
    """audiocraft's own loader: a pretrained name, a hub id or a local checkpoint folder."""
    from audiocraft.models import MusicGen

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return MusicGen.get_pretrained(name, device=device)


def _hop(model: Any) -> int:
    """Samples per codec frame."""
    return int(model.sample_rate) // int(model.frame_rate)


def _prompt(model: Any, job: Path, item: dict[str, Any]) -> torch.Tensor | None:
    """The item's prompt at the model's rate and channel count, cut to whole frames."""
    from audiocraft.data.audio_utils import convert_audio

    if not item.get("prompt"):
        return None
    wav = torch.from_numpy(np.load(job / item["prompt"]).astype(np.float32))
    rate = int(item["prompt_sample_rate"])
    wav = convert_audio(wav, rate, model.sample_rate, model.audio_channels)
    hop = _hop(model)
    frames = wav.shape[-1] // hop
    return wav[:, wav.shape[-1] - frames * hop :] if frames else None


def _group_seed(items: list[dict[str, Any]]) -> int:
    digest = hashlib.sha256(json.dumps([int(i["seed"]) for i in items]).encode()).hexdigest()
    return int(digest[:15], 16)


def render_group(
    model: Any,
    items: list[dict[str, Any]],
    prompts: list[torch.Tensor | None],
    request: dict[str, Any],
) -> list[np.ndarray]:
    """One batched generation for items whose prompts have the same length (or none)."""
    hop = _hop(model)
    prompt_frames = 0 if prompts[0] is None else prompts[0].shape[-1] // hop
    new_frames = max(math.ceil(float(i["duration_s"]) * model.frame_rate) for i in items)
    model.set_generation_params(
        use_sampling=True,
        top_k=int(request.get("top_k", 250)),
        cfg_coef=float(request.get("guidance_scale", 3.0)),
        # audiocraft's duration counts the prompt; the half frame keeps int() from rounding down
        duration=(prompt_frames + new_frames + 0.5) / model.frame_rate,
    )
    torch.manual_seed(_group_seed(items))
    captions = [i["caption"] for i in items]
    with torch.inference_mode():
        if prompts[0] is None:
            wav = model.generate(captions)
        else:
            wav = model.generate_continuation(torch.stack(prompts), model.sample_rate, captions)
    wav = wav[..., prompt_frames * hop :].float().cpu().numpy()
    return [
        wav[n, :, : round(float(i["duration_s"]) * model.sample_rate)] for n, i in enumerate(items)
    ]


def run_job(model: Any, job: Path) -> None:
    """Render every item of ``job/request.json`` and write the WAVs and ``reply.json``."""
    request = json.loads((job / "request.json").read_text())
    items = request["items"]
    prompts = [_prompt(model, job, item) for item in items]
    groups: dict[int, list[int]] = {}
    for n, prompt in enumerate(prompts):
        groups.setdefault(0 if prompt is None else prompt.shape[-1], []).append(n)
    replies: dict[int, dict[str, Any]] = {}
    for indices in groups.values():
        audio = render_group(
            model, [items[n] for n in indices], [prompts[n] for n in indices], request
        )
        for n, clip in zip(indices, audio, strict=True):
            write_float_wav(job / f"out_{n}.wav", clip, model.sample_rate)
            replies[n] = {"wav": f"out_{n}.wav", "sample_rate": int(model.sample_rate)}
    reply = {"items": [replies[n] for n in range(len(items))]}
    (job / "reply.json").write_text(json.dumps(reply))


def serve(model: Any, protocol: Any) -> None:
    """Answer job folders read from stdin until it closes; a failing job gets an error reply."""
    import audiocraft

    ready = {
        "ready": True,
        "audiocraft": audiocraft.__version__,
        "sample_rate": int(model.sample_rate),
        "channels": int(model.audio_channels),
        "frame_rate": float(model.frame_rate),
    }
    print(json.dumps(ready), file=protocol, flush=True)
    for line in sys.stdin:
        job = Path(line.strip())
        if not line.strip():
            continue
        try:
            run_job(model, job)
        except Exception:  # reported to the backend, which raises it there
            (job / "reply.json").write_text(json.dumps({"error": traceback.format_exc()}))
        print(json.dumps({"done": str(job)}), file=protocol, flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="pretrained name, hub id or local folder")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    args = parser.parse_args(argv)
    # Keep stdout for protocol lines only: whatever libraries print lands on stderr.
    protocol = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    serve(load_model(args.model, args.device), protocol)


if __name__ == "__main__":
    main()
