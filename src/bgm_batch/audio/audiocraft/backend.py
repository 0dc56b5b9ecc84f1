"""MusicGen through Meta's audiocraft package, run as an isolated worker process.

audiocraft 1.3 pins torch 2.1 and numpy<2, which this project's stack cannot share, so it lives
in its own virtual environment (``make audiocraft-env`` builds ``.venv-audiocraft`` from
requirements-audiocraft.txt). This backend starts ``worker.py`` (beside it) with
that environment's interpreter once, and sends it one job folder per batch: ``request.json`` plus
the prompt tails as .npy files in, float32 WAVs and ``reply.json`` out (the protocol is
documented in the worker). Continuation, cutting the prompt off and batching happen in the
worker; determinism holds per batch composition (see the worker's docstring).
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bgm_batch.audio.protocol import AUDIO_BACKENDS, RenderedSegment, SegmentRequest
from bgm_batch.settings import AudioSettings

WORKER = Path(__file__).resolve().parent / "worker.py"
# The checkout's isolated environment (``make audiocraft-env``), wherever the command runs from.
DEFAULT_PYTHON = Path(__file__).resolve().parents[4] / ".venv-audiocraft" / "bin" / "python"


class AudiocraftWorkerError(RuntimeError):
    """The worker could not start or a job failed; the message carries its traceback."""


class AudiocraftBackend:
    """Renders requests through a long-lived audiocraft worker process."""

    name = "audiocraft"

    def __init__(self, settings: AudioSettings, python: Path = DEFAULT_PYTHON) -> None:
        if not Path(python).exists():
            raise AudiocraftWorkerError(
                f"{python} not found: build the isolated environment with `make audiocraft-env`"
            )
        self.settings = settings
        self._process = subprocess.Popen(
            [
                str(python),
                "-I",
                str(WORKER),
                "--model",
                settings.model,
                "--device",
                settings.device,
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self._finalizer = weakref.finalize(self, _stop, self._process)
        self.info = self._read_line()
        if not self.info.get("ready"):
            raise AudiocraftWorkerError(f"unexpected first line from the worker: {self.info}")

    @property
    def sample_rate(self) -> int:
        return int(self.info["sample_rate"])

    def identity(self) -> dict[str, str]:
        return {
            "backend": self.name,
            "model": self.settings.model,
            "revision": f"audiocraft-{self.info['audiocraft']}",
            "guidance_scale": str(self.settings.guidance_scale),
            "top_k": str(self.settings.top_k),
        }

    def render(self, requests: Sequence[SegmentRequest]) -> list[RenderedSegment]:
        if not requests:
            return []
        with tempfile.TemporaryDirectory(prefix="bgm-audiocraft-") as folder:
            job = Path(folder)
            request = {
                "guidance_scale": self.settings.guidance_scale,
                "top_k": self.settings.top_k,
                "items": [_item(job, n, r) for n, r in enumerate(requests)],
            }
            (job / "request.json").write_text(json.dumps(request))
            assert self._process.stdin is not None
            self._process.stdin.write(f"{job}\n")
            self._process.stdin.flush()
            self._read_line()
            reply = json.loads((job / "reply.json").read_text())
            if "error" in reply:
                raise AudiocraftWorkerError(f"audiocraft worker failed:\n{reply['error']}")
            return [_read_segment(job, item) for item in reply["items"]]

    def close(self) -> None:
        """Stop the worker (also done when the backend is garbage-collected)."""
        self._finalizer()

    def _read_line(self) -> dict[str, Any]:
        assert self._process.stdout is not None
        line = self._process.stdout.readline()
        if not line:
            code = self._process.wait()
            raise AudiocraftWorkerError(
                f"the audiocraft worker exited with status {code}; its stderr above says why"
            )
        return json.loads(line)


def _item(job: Path, n: int, request: SegmentRequest) -> dict[str, Any]:
    """One request as the worker reads it; its prompt tail is saved next to request.json."""
    prompt = None
    if request.prompt_audio is not None:
        if request.prompt_sample_rate is None:
            raise ValueError(f"request {request.key}: prompt_audio without prompt_sample_rate")
        prompt = f"prompt_{n}.npy"
        np.save(job / prompt, np.atleast_2d(np.asarray(request.prompt_audio, dtype=np.float32)))
    return {
        "caption": request.caption,
        "duration_s": request.duration_s,
        "seed": request.seed,
        "prompt": prompt,
        "prompt_sample_rate": request.prompt_sample_rate,
    }


def _read_segment(job: Path, item: dict[str, Any]) -> RenderedSegment:
    import soundfile

    audio, rate = soundfile.read(job / item["wav"], dtype="float32", always_2d=True)
    return RenderedSegment(audio=np.ascontiguousarray(audio.T), sample_rate=int(rate))


def _stop(process: subprocess.Popen[str]) -> None:
    """Close the worker's stdin (it exits at end of input) and wait for it."""
    if process.stdin is not None and not process.stdin.closed:
        process.stdin.close()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@AUDIO_BACKENDS.register("audiocraft")
def create_audiocraft(settings: AudioSettings) -> AudiocraftBackend:
    """Factory: ``settings.model`` is an audiocraft name (facebook/musicgen-small...) or a
    local checkpoint folder; the worker runs in .venv-audiocraft."""
    return AudiocraftBackend(settings)
