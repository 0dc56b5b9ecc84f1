"""Compare the spectra of tracks: what a lower render rate (``--track-rate``) leaves out.

Reads the first ``--minutes`` of each track (mono sum), takes its Welch spectrum and prints,
per track, the share of its energy above each band edge (dB of the whole); with ``--plot``
it draws the spectra on one chart. Two renders of the same recording at different rates are
not sample-aligned (FluidSynth's envelopes, the reverb's seeded noise and the limiter all
depend on the rate), so the spectra, not a sample difference, are the comparison.

Run: ``python bench/spectra.py A/track.flac B/track.flac --plot docs/track-rate-spectra.png``
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import welch

EDGES_HZ = (8000, 12000, 14000, 16000, 18000, 20000)


def spectrum(path: Path, minutes: float) -> tuple[np.ndarray, np.ndarray, int]:
    """Frequencies, power spectral density of the mono sum, and the track's rate."""
    rate = sf.info(path).samplerate
    audio, _ = sf.read(path, frames=round(minutes * 60 * rate), dtype="float32")
    freqs, power = welch(audio.mean(axis=1), fs=rate, nperseg=8192)
    return freqs, power, rate


def band_shares(freqs: np.ndarray, power: np.ndarray) -> dict[int, float]:
    """dB of the whole energy above each edge below Nyquist."""
    total = power.sum()
    return {
        edge: 10 * np.log10(max(power[freqs >= edge].sum(), 1e-30) / total)
        for edge in EDGES_HZ
        if edge < freqs[-1]
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tracks", type=Path, nargs="+")
    parser.add_argument("--minutes", type=float, default=10.0, help="read from the start")
    parser.add_argument("--plot", type=Path, help="write the chart here (PNG)")
    args = parser.parse_args()
    print("| track | rate | " + " | ".join(f"> {e // 1000} kHz" for e in EDGES_HZ) + " |")
    print("|---|---:|" + "---:|" * len(EDGES_HZ))
    curves = []
    for path in args.tracks:
        freqs, power, rate = spectrum(path, args.minutes)
        shares = band_shares(freqs, power)
        cells = [f"{shares[e]:.1f} dB" if e in shares else "-" for e in EDGES_HZ]
        print(f"| {path} | {rate} | " + " | ".join(cells) + " |")
        curves.append((f"{path.parent.name} ({rate / 1000:g} kHz)", freqs, power))
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        plt.figure(figsize=(9, 4))
        for label, freqs, power in curves:
            plt.semilogx(freqs[1:], 10 * np.log10(power[1:]), label=label, alpha=0.85)
        plt.xlim(30, 24000)
        plt.ylim(-140, -40)
        plt.xlabel("Hz")
        plt.ylabel("dB/Hz")
        plt.grid(True, which="both", alpha=0.3)
        plt.legend()
        plt.title(f"first {args.minutes:g} min of each track, Welch spectrum of the mono sum")
        plt.tight_layout()
        plt.savefig(args.plot, dpi=90)


if __name__ == "__main__":
    main()
