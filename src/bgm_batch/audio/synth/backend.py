"""The ``synth`` backend: procedural music, offline, no model weights.

``compose`` turns each caption into a General MIDI arrangement that continues the previous
segment; this module plays it with FluidSynth (libfluidsynth through ctypes, in process) and
a General MIDI SoundFont (Debian's ``fluid-soundfont-gm``, FluidR3_GM, by default;
``settings.audio.soundfont`` overrides). FluidR3_GM is MIT-licensed, so the rendered music may
be published; ``identity()`` states the output's licence, and the manifest records it. (It
was chosen over MuseScore General, also MIT: Debian ships that one only as a Vorbis-compressed
SF3 that takes FluidSynth about 30 s to load per thread, and TimGM6mb, the former default, is
a 6 MB GPL SoundFont whose terms for rendered audio nobody could state.)

Speed: FluidSynth costs about 2 ms per voice per second of audio, and a string pad alone
holds 20 voices, so an hour of music played voice by voice takes minutes. Music repeats,
though: within a run the same instrument plays the same pitch, velocity and length again and
again. So every distinct note is played once, alone, from silence, and cached; a segment is
the sum of its cached notes at their onsets, then one convolution reverb (a fixed, seeded,
decaying-noise impulse response). A note played alone from silence sounds the same whatever
came before, which keeps segments deterministic and independent of rendering order. Notes
are rendered dry (FluidSynth's own reverb and chorus would make each note's sound depend on
the synth's history). Requests of one batch render on a small thread pool: ctypes, numpy and
the FFT release the GIL.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import os
import threading
from collections import Counter, OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from bgm_batch.audio.protocol import (
    AUDIO_BACKENDS,
    AudioBackend,
    RenderedSegment,
    SegmentRequest,
)
from bgm_batch.audio.synth.compose import (
    DRUM_CHANNEL,
    Arrangement,
    MusicParams,
    Note,
    arrange,
    parse_caption,
    to_midi,
)
from bgm_batch.settings import AudioSettings

DEFAULT_SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")
# What may be done with audio rendered from a known SoundFont.
OUTPUT_LICENCES = {
    "FluidR3_GM.sf2": "publishable: rendered with FluidR3_GM (MIT, Frank Wen), music generated",
}
UNKNOWN_LICENCE = "unknown: check the licence of the SoundFont {name} before publishing"
COMPOSER_REVISION = "4"  # bump when compose.py or the mix below changes the sound
BLOCK = 64  # FluidSynth renders in 64-sample blocks; notes start on block boundaries
MAX_RELEASE_S = 2.0
RELEASE_BLOCK = 64 * BLOCK  # rendered after the note-off until no voice sounds
OWNER_CHANNELS = 256  # instruments kept loaded (FluidSynth's most channels)
SILENCE = 1e-3  # -60 dB below its peak: where a cached note's release is cut
# The note cache forgets the least recently used notes beyond this (some 370 notes: two
# scenes' worth; one cache, shared by the render threads). Measured on an hour (4,795
# distinct notes; see _NoteCache): 64 MB rendered 7,362 notes, 128 MB 6,727, 256 MB 6,166
# (peak memory of the run 511, 565 and 691 MB).
CACHE_BYTES = 128 * 2**20
ROLE_GAIN = {"lead": 0.8, "harmony": 0.55, "pad": 0.38, "bass": 0.9, "drums": 0.75, "stinger": 0.8}
MASTER_GAIN = 1.2
# Quiet music is played up and intense music down (dB = 6 - 8 * intensity), as a game mix
# would: a calm scene sits about 4 dB under a fight, not 10, so the normalised track keeps
# its fights under the true-peak ceiling without heavy limiting.
LEVEL_DB = (6.0, -8.0)
REVERB_SECONDS = 1.6
REVERB_WET = 0.22


class _FluidSynth:
    """Plays single notes with FluidSynth from one loaded SoundFont (one per thread).

    Each note gets a brand-new synth that borrows the loaded SoundFont: FluidSynth reuses
    voice objects, and a reused voice carries a trace of its last note (differences around
    1e-5), which would make a note's samples depend on what was played before it. A synth
    without reverb and chorus costs a fraction of a millisecond to make.
    """

    _lib: ctypes.CDLL | None = None

    @classmethod
    def library(cls) -> ctypes.CDLL:
        """libfluidsynth, loaded once, with the signatures this module calls."""
        if cls._lib is None:
            name = ctypes.util.find_library("fluidsynth")
            if name is None:
                raise OSError("libfluidsynth not found: apt-get install fluidsynth")
            lib = ctypes.CDLL(name)
            p, i, s = ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p
            signatures = {
                "fluid_set_log_function": (None, [i, p, p]),
                "new_fluid_settings": (p, []),
                "fluid_settings_setnum": (i, [p, s, ctypes.c_double]),
                "fluid_settings_setint": (i, [p, s, i]),
                "new_fluid_synth": (p, [p]),
                "delete_fluid_synth": (None, [p]),
                "fluid_synth_sfload": (i, [p, s, i]),
                "fluid_synth_get_sfont_by_id": (p, [p, i]),
                "fluid_synth_add_sfont": (i, [p, p]),
                "fluid_synth_remove_sfont": (i, [p, p]),
                "fluid_synth_program_select": (i, [p, i, i, i, i]),
                "fluid_synth_noteon": (i, [p, i, i, i]),
                "fluid_synth_noteoff": (i, [p, i, i]),
                "fluid_synth_get_active_voice_count": (i, [p]),
                "fluid_synth_write_float": (i, [p, i, p, i, i, p, i, i]),
                "fluid_version_str": (s, []),
            }
            for fname, (restype, argtypes) in signatures.items():
                func = getattr(lib, fname)
                func.restype, func.argtypes = restype, argtypes
            for level in range(5):  # FluidSynth logs to stderr; errors surface as return codes
                lib.fluid_set_log_function(level, None, None)
            cls._lib = lib
        return cls._lib

    def __init__(self, soundfont: Path, sample_rate: int):
        lib = self.library()
        self._settings = self._new_settings(sample_rate, 16)
        self._owner_settings = self._new_settings(sample_rate, OWNER_CHANNELS)
        self._owner = lib.new_fluid_synth(self._owner_settings)  # holds the loaded SoundFont
        self._sfont_id = lib.fluid_synth_sfload(self._owner, str(soundfont).encode(), 1)
        if self._sfont_id < 0:
            raise OSError(f"FluidSynth could not load the SoundFont {soundfont}")
        self._sfont = lib.fluid_synth_get_sfont_by_id(self._owner, self._sfont_id)
        self._pinned: dict[tuple[int, int], int] = {}  # (bank, program) -> owner channel
        self.sample_rate = sample_rate

    def _new_settings(self, sample_rate: int, channels: int) -> int:
        """Dry, 32 voices; samples loaded from the SoundFont only for the instruments
        played (``dynamic-sample-loading``: ~30 MB instead of FluidR3's 140 MB per process)."""
        lib = self.library()
        settings = lib.new_fluid_settings()
        lib.fluid_settings_setnum(settings, b"synth.sample-rate", float(sample_rate))
        lib.fluid_settings_setnum(settings, b"synth.gain", 1.0)
        for name, value in (
            (b"synth.reverb.active", 0),
            (b"synth.chorus.active", 0),
            (b"synth.polyphony", 32),
            (b"synth.midi-channels", channels),
            (b"synth.dynamic-sample-loading", 1),
        ):
            lib.fluid_settings_setint(settings, name, value)
        return settings

    def _pin(self, bank: int, program: int) -> None:
        """Keep an instrument's samples loaded: selected on a channel of the owner synth, so
        the short-lived synths that play notes do not load and unload them every time (that
        took three times as long as the note)."""
        if (bank, program) not in self._pinned and len(self._pinned) < OWNER_CHANNELS:
            channel = len(self._pinned)
            self.library().fluid_synth_program_select(
                self._owner, channel, self._sfont_id, bank, program
            )
            self._pinned[bank, program] = channel

    @staticmethod
    def _write(synth: int, out: np.ndarray, start: int, frames: int) -> None:
        """Render ``frames`` samples into ``out[:, start:start + frames]``."""
        left, right = out[0, start:], out[1, start:]
        _FluidSynth.library().fluid_synth_write_float(
            synth, frames, left.ctypes.data, 0, 1, right.ctypes.data, 0, 1
        )

    def play(self, note: Note) -> np.ndarray:
        """One note alone, from silence to the end of its release, float32 (2, n)."""
        lib = self.library()
        held = max(BLOCK, -(-round(note.duration * self.sample_rate) // BLOCK) * BLOCK)
        release = int(MAX_RELEASE_S * self.sample_rate) // RELEASE_BLOCK * RELEASE_BLOCK
        out = np.empty((2, held + release), dtype=np.float32)
        synth = lib.new_fluid_synth(self._settings)
        try:
            sfont_id = lib.fluid_synth_add_sfont(synth, self._sfont)
            bank = 128 if note.channel == DRUM_CHANNEL else 0
            self._pin(bank, note.program)
            lib.fluid_synth_program_select(synth, 0, sfont_id, bank, note.program)
            lib.fluid_synth_noteon(synth, 0, note.pitch, note.velocity)
            self._write(synth, out, 0, held)
            lib.fluid_synth_noteoff(synth, 0, note.pitch)
            end = held
            while end < out.shape[1] and lib.fluid_synth_get_active_voice_count(synth):
                self._write(synth, out, end, RELEASE_BLOCK)
                end += RELEASE_BLOCK
        finally:
            lib.fluid_synth_remove_sfont(synth, self._sfont)
            lib.delete_fluid_synth(synth)
        return _cut_release(out[:, :end], self.sample_rate)


def _cut_release(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """``audio`` up to its last sample above ``SILENCE`` of its peak, the last 10 ms faded
    out (a release cut short must not click). The cut lies in the release: searched from
    the end, a block at a time."""
    threshold = SILENCE * np.maximum(audio.max(initial=0.0), -audio.min(initial=0.0))
    end = audio.shape[1]
    while end > 0:
        begin = max(0, end - RELEASE_BLOCK)
        loud = np.flatnonzero((np.abs(audio[:, begin:end]) > threshold).any(axis=0))
        if loud.size:
            end = begin + int(loud[-1]) + 1
            break
        end = begin
    fade = min(end, round(0.01 * sample_rate))
    audio = audio[:, :end]
    audio[:, end - fade :] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)
    return audio


class _NoteCache:
    """Rendered notes by (kit?, program, pitch, velocity, duration, role), least recently
    used forgotten beyond ``CACHE_BYTES``; safe to share between threads.

    A note is kept as 16-bit samples scaled to its own peak (96 dB of range per note, half
    the memory of float32), and every use, the first included, gets those same values back:
    a segment's samples never depend on whether its notes were cached.

    Uses announced ahead (``plan``: the render stage composes a run before rendering it)
    are counted down: a note whose last planned use has come is forgotten at once, and one
    played only once is not kept at all, which leaves the room to notes that come back.
    Measured on an hour at 64 MB: 8,271 notes rendered with plain LRU, 7,362 with the
    counts, and a peak of 511 MB instead of 571. A note never announced is kept as plain LRU
    would keep it."""

    def __init__(self, capacity: int = CACHE_BYTES):
        self._notes: OrderedDict[tuple, tuple[np.ndarray, np.float32]] = OrderedDict()
        self._bytes = 0
        self._capacity = capacity
        self._planned: Counter[tuple] = Counter()  # key -> uses announced and still to come
        self._lock = threading.Lock()

    def plan(self, key: tuple) -> None:
        """Announce a future use of the note."""
        with self._lock:
            self._planned[key] += 1

    def get(self, key: tuple) -> tuple[np.ndarray, np.float32] | None:
        """The note's 16-bit samples and their scale, if kept (a use: counted down)."""
        with self._lock:
            stored = self._notes.get(key)
            if stored is not None:
                self._notes.move_to_end(key)
                if self._used(key):
                    self._bytes -= self._notes.pop(key)[0].nbytes
        return stored

    def put(self, key: tuple, audio: np.ndarray) -> tuple[np.ndarray, np.float32]:
        """Keep ``audio`` (overwritten on the way) if it will be used again, and return it
        as every later ``get`` will: 16-bit samples and the scale that makes them float."""
        peak = max(float(audio.max(initial=0.0)), -float(audio.min(initial=0.0)), 1e-9)
        scale = np.float32(peak / 32767)
        np.rint(np.divide(audio, scale, out=audio), out=audio)
        pcm = audio.astype(np.int16)
        with self._lock:
            if not self._used(key) and key not in self._notes:
                self._notes[key] = (pcm, scale)
                self._bytes += pcm.nbytes
            while self._bytes > self._capacity and len(self._notes) > 1:
                self._bytes -= self._notes.popitem(last=False)[1][0].nbytes
        return pcm, scale

    def _used(self, key: tuple) -> bool:
        """Count one use of ``key`` (lock held); True if it was the last one announced."""
        left = self._planned.get(key)
        if left is None:
            return False
        if left <= 1:
            del self._planned[key]
            return True
        self._planned[key] = left - 1
        return False


def _note_key(note: Note) -> tuple:
    """What makes a note sound different: the cache's key."""
    return (
        note.channel == DRUM_CHANNEL,
        note.program,
        note.pitch,
        note.velocity,
        note.duration,
        note.role,
    )


def _impulse_response(sample_rate: int) -> np.ndarray:
    """A stereo hall: 20 ms pre-delay, then seeded noise decaying by 60 dB over
    ``REVERB_SECONDS``, its lows removed so the bass stays dry; unit energy per channel."""
    from scipy.signal import butter, sosfilt

    n = int(REVERB_SECONDS * sample_rate)
    rng = np.random.default_rng(0)
    t = np.arange(n) / sample_rate
    noise = rng.standard_normal((2, n)) * np.exp(-6.9 * t / REVERB_SECONDS)
    noise[:, : int(0.02 * sample_rate)] = 0.0
    sos = butter(2, [250.0, 6000.0], btype="bandpass", fs=sample_rate, output="sos")
    ir = sosfilt(sos, noise, axis=1)
    return (ir / np.sqrt((ir**2).sum(axis=1, keepdims=True))).astype(np.float32)


class SynthBackend:
    """Compose with ``compose.arrange``, play with FluidSynth; see the module docstring."""

    name = "synth"

    def __init__(self, settings: AudioSettings):
        self.settings = settings
        self.soundfont = Path(settings.soundfont or DEFAULT_SOUNDFONT)
        if not self.soundfont.is_file():
            raise FileNotFoundError(
                f"SoundFont {self.soundfont} not found: apt-get install fluid-soundfont-gm "
                "or set audio.soundfont"
            )
        self.sample_rate = settings.sample_rate
        self._local = threading.local()
        self._notes = _NoteCache()
        self._ir = _impulse_response(self.sample_rate)
        self._ir_spectra: dict[int, np.ndarray] = {}
        self._workers = min(2, os.cpu_count() or 1)

    def identity(self) -> dict[str, str]:
        """The procedural offline synthesiser: composer revision, FluidSynth, SoundFont."""
        digest = hashlib.sha256(self.soundfont.read_bytes()).hexdigest()[:16]
        version = _FluidSynth.library().fluid_version_str().decode()
        return {
            "backend": self.name,
            "model": f"procedural composer + FluidSynth {version}",
            "revision": f"compose-{COMPOSER_REVISION}/{self.soundfont.name}@{digest}",
            "output_licence": OUTPUT_LICENCES.get(
                self.soundfont.name, UNKNOWN_LICENCE.format(name=self.soundfont.name)
            ),
        }

    def render(self, requests: Sequence[SegmentRequest]) -> list[RenderedSegment]:
        """Render each request (threads share the note cache; results keep request order)."""
        if len(requests) <= 1 or self._workers == 1:
            return [self._render_one(r) for r in requests]
        with ThreadPoolExecutor(self._workers) as pool:
            return list(pool.map(self._render_one, requests))

    def next_state(self, request: SegmentRequest) -> dict[str, Any]:
        """The musical state the request leaves: the composition alone, no audio
        (``StateContinued``: a run's segments can then render in parallel). The request will
        be rendered, so its notes' uses are announced to the note cache."""
        arrangement = self._arrange(request)[1]
        for note in arrangement.notes:
            self._notes.plan(_note_key(note))
        return arrangement.state

    def _arrange(self, request: SegmentRequest) -> tuple[MusicParams, Arrangement]:
        params = parse_caption(request.caption)
        hop = request.hop_s or min(self.settings.segment_seconds, request.duration_s)
        anchored = request.transition in ("continue", "change")
        return params, arrange(
            params,
            request.duration_s,
            hop,
            request.seed,
            prev_state=request.prev_state if anchored else None,
            transition=request.transition,
            stinger=request.stinger,
        )

    def _render_one(self, request: SegmentRequest) -> RenderedSegment:
        params, arrangement = self._arrange(request)
        level = 10 ** ((LEVEL_DB[0] + LEVEL_DB[1] * params.intensity) / 20)
        audio, stems = self._mix(arrangement, round(request.duration_s * self.sample_rate), level)
        return RenderedSegment(
            audio=audio,
            sample_rate=self.sample_rate,
            state=arrangement.state,
            midi=to_midi(arrangement),
            stems=stems,
        )

    def _note(self, note: Note) -> tuple[np.ndarray, np.float32]:
        """The note's samples from the cache (rendered on a miss): 16-bit, and their scale."""
        key = _note_key(note)
        stored = self._notes.get(key)
        if stored is None:
            stored = self._notes.put(key, self._new_note(note))
        return stored

    def _new_note(self, note: Note) -> np.ndarray:
        """The note played by this thread's FluidSynth, at its role's gain."""
        synth = getattr(self._local, "synth", None)
        if synth is None:
            synth = self._local.synth = _FluidSynth(self.soundfont, self.sample_rate)
        return synth.play(note) * np.float32(ROLE_GAIN[note.role])

    def _mix(
        self, arrangement: Arrangement, frames: int, level: float
    ) -> tuple[np.ndarray, dict[str, np.ndarray] | None]:
        """Sum the cached notes at their onsets, add the reverb, apply the gain; with
        ``settings.stems`` also the same mix split by role (see ``_split``)."""
        gain = np.float32(MASTER_GAIN * level)
        dry = self._dry(arrangement, frames, by_role=self.settings.stems)
        if not self.settings.stems:
            mix = self._wet(dry[""], gain)
            return np.clip(mix, -1.0, 1.0, out=mix), None
        return self._split({role: self._wet(part, gain) for role, part in dry.items()})

    def _dry(self, arrangement: Arrangement, frames: int, by_role: bool) -> dict[str, np.ndarray]:
        """The notes placed at their onsets: one buffer per role, or all in one (key "")."""
        dry: dict[str, np.ndarray] = {}
        scaled = np.empty((2, frames), dtype=np.float32)  # one note's float samples
        for note in arrangement.notes:
            start = round(note.start * self.sample_rate)
            skip = round(note.skip * self.sample_rate)
            pcm, scale = self._note(note)
            part = pcm[:, skip : skip + frames - start]
            role = note.role if by_role else ""
            if role not in dry:
                dry[role] = np.zeros((2, frames), dtype=np.float32)
            played = np.multiply(part, scale, out=scaled[:, : part.shape[1]])
            dry[role][:, start : start + part.shape[1]] += played
        return dry or {"": np.zeros((2, frames), dtype=np.float32)}

    def _wet(self, dry: np.ndarray, gain: np.float32) -> np.ndarray:
        """The dry signal with its share of the hall, times ``gain``, computed in the
        reverb's buffer (linear: the parts' reverbs sum to the reverb of their sum)."""
        wet = self._reverb(dry.mean(axis=0))
        wet *= np.float32(REVERB_WET)
        wet += dry
        wet *= gain
        return wet

    @staticmethod
    def _split(parts: dict[str, np.ndarray]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The clipped mix of the parts, and the parts scaled sample by sample as the clip
        scaled their sum, so that the stems still add up to exactly what is heard."""
        mix = np.sum(list(parts.values()), axis=0, dtype=np.float32)
        clipped = np.clip(mix, -1.0, 1.0)
        scale = np.divide(clipped, mix, out=np.ones_like(mix), where=mix != clipped)
        stems = {role: part * scale for role, part in parts.items()}
        return np.sum(list(stems.values()), axis=0, dtype=np.float32), stems

    def _reverb(self, send: np.ndarray) -> np.ndarray:
        """Mono send convolved with the stereo impulse response (one FFT each way)."""
        from scipy import fft

        frames = send.shape[0]
        size = fft.next_fast_len(frames + self._ir.shape[1], real=True)
        spectrum = self._ir_spectra.get(size)
        if spectrum is None:
            spectrum = self._ir_spectra[size] = fft.rfft(self._ir, size, axis=1)
        return fft.irfft(fft.rfft(send, size) * spectrum, size, axis=1)[:, :frames]


@AUDIO_BACKENDS.register("synth")
def build_synth(settings: AudioSettings) -> AudioBackend:
    """The offline default: procedural composition rendered with FluidSynth."""
    return SynthBackend(settings)
