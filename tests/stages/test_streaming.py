"""Bounded memory: stitching a long recording costs no more memory than a short one.

Each stitch runs in a fresh Python process whose peak resident memory (``ru_maxrss``) is the
measurement. The segments are real 24-bit FLAC work files as ``render`` writes them (one file
reused for every window, so the test pays for stitching, not for making inputs). A track
held whole would cost 11 MB per minute of stereo float audio: 77 MB more for the longer
recording here, where streaming stays within a few MB.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from bgm_batch.audio.pcm24 import to_pcm24

RATE = 48000
STITCH = """
import json, resource, sys
from pathlib import Path
from bgm_batch.settings import AudioSettings
from bgm_batch.stages.stitch import StitchInput, stitch_track
segment, windows, out = Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
inputs = [StitchInput(segment, 2.0 * i, 0.5) for i in range(windows)]
settings = AudioSettings(segment_seconds=2.0, overlap_seconds=0.5)
result = stitch_track(inputs, settings, out)
print(json.dumps({"rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "frames": result.frames, "lufs": result.loudness_lufs}))
"""


def stitch_in_process(segment: Path, windows: int, out: Path) -> dict:
    """Stitch ``windows`` copies of ``segment`` in a fresh process; its report."""
    done = subprocess.run(
        [sys.executable, "-c", STITCH, str(segment), str(windows), str(out)],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return json.loads(done.stdout)


@pytest.mark.slow  # two stitches in fresh processes: 15 s quiet, minutes on a busy machine
def test_stitch_memory_does_not_grow_with_the_recording(tmp_path: Path) -> None:
    t = np.arange(round(2.5 * RATE)) / RATE
    tone = 0.2 * np.sin(2 * np.pi * 220 * t) * (1 + 0.5 * np.sin(2 * np.pi * 0.7 * t))
    noise = 0.02 * np.random.default_rng(0).standard_normal((2, t.size))
    segment = tmp_path / "000000.flac"
    pcm = to_pcm24((tone + noise).astype(np.float32))
    sf.write(segment, pcm.T, RATE, format="FLAC", subtype="PCM_24")
    short = stitch_in_process(segment, 30, tmp_path / "short.flac")  # 1 minute
    long = stitch_in_process(segment, 240, tmp_path / "long.flac")  # 8 minutes
    assert long["frames"] == round((240 * 2.0 + 0.5) * RATE)
    assert abs(long["lufs"] - short["lufs"]) < 0.1  # both normalised to the target
    assert long["rss_mb"] - short["rss_mb"] < 25, (short, long)
