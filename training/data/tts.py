"""Text-to-speech voices of the synthetic corpus: Debian's flite, espeak-ng and festival, called as
programs.

User questions are spoken by several voices (flite's diphone and clustergen voices, espeak-ng
variants; for extra training renderings only, more espeak-ng variants, festival's `ked` diphone
voice and its HTS `slt` voice with a warped vocal tract, or flite and festival voices resynthesised
by the WORLD vocoder with another pitch and vocal tract), each with a per-utterance speaking-rate
and pitch perturbation; the assistant always
speaks with one fixed voice, flite `slt` with its default settings (the embedded units codec is
fitted to that one voice, DESIGN.md §5). Every rendering is returned as 16 kHz mono float32.

Text goes through `spoken_form` first, so names are said the way the evaluation's recogniser
transcribes them ("DrVoice" -> "Doctor Voice"); numbers are already words in the corpus.
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.types import Waveform

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000  # Hz of every corpus file (the model's audio rate)
SPOKEN_ALIASES = {"DrVoice": "Doctor Voice"}  # written form -> what the voice says


@dataclass(frozen=True)
class Voice:
    """One TTS voice and the range of its per-utterance perturbation."""

    name: str  # corpus name, e.g. "flite-kal16" or "espeak-en+m3"
    engine: str  # "flite", "espeak-ng" or "festival"
    voice: str  # the engine's voice id ("kal16", "en+m3", festival's "ked_diphone")
    base_pitch: float | None = None  # flite: the voice's mean F0 in Hz (None: pitch cannot be moved)
    vary: bool = True  # False: always the engine's defaults (the assistant voice)
    # every frequency (F0 and formants: a smaller or larger speaker) scaled by this factor, by
    # resampling the rendering (its duration is kept: the engine speaks faster or slower first)
    warp: float | None = None
    # WORLD vocoder resynthesis of the rendering (F0 factor, spectral-envelope frequency factor):
    # another speaker's pitch and vocal tract, heard through a vocoder as statistical-parametric
    # voices are (see `vocode`)
    vocoder: tuple[float, float] | None = None


@dataclass(frozen=True)
class Prosody:
    """Perturbation of one utterance: 1.0 / 1.0 is the voice's default."""

    rate: float = 1.0  # speaking-rate factor (> 1 = faster)
    pitch: float = 1.0  # pitch factor (> 1 = higher)


USER_VOICES: tuple[Voice, ...] = (
    # flite: diphone kal (8 kHz and 16 kHz) and clustergen awb, rms; mean F0 measured on a question
    Voice("flite-kal", "flite", "kal", base_pitch=92.0),
    Voice("flite-kal16", "flite", "kal16", base_pitch=92.0),
    Voice("flite-awb", "flite", "awb", base_pitch=128.0),
    Voice("flite-rms", "flite", "rms", base_pitch=None),  # rms ignores int_f0_target_mean
    # espeak-ng: accents and variant voices (+m = male, +f = female variants)
    Voice("espeak-en-us", "espeak-ng", "en-us"),
    Voice("espeak-en+m3", "espeak-ng", "en+m3"),
    Voice("espeak-en+f2", "espeak-ng", "en+f2"),
    Voice("espeak-en-gb-scotland", "espeak-ng", "en-gb-scotland"),
    Voice("espeak-en-029", "espeak-ng", "en-029"),
    Voice("espeak-en-us+f4", "espeak-ng", "en-us+f4"),
)
# more espeak-ng variants and accents, only for extra training renderings (`--extra-voice-copies`):
# they widen the range of training speakers without touching the splits planned from USER_VOICES
EXTRA_TRAIN_VOICES: tuple[Voice, ...] = tuple(
    Voice(f"espeak-{v}", "espeak-ng", v)
    for v in (
        "en+m1",
        "en+m2",
        "en+m5",
        "en+m7",
        "en+f1",
        "en+f3",
        "en+f5",
        "en-gb-x-rp+m4",
        "en-us-nyc+f3",
        "en-us+m6",
    )
)
# festival (Debian festival, festvox-kdlpc16k, festvox-us-slt-hts), also only for extra training
# renderings (`--extra-voices festival`): the diphone voice ked and three speakers made from the HTS
# voice slt by scaling all its frequencies (0.78 and 0.86: larger, deeper speakers; 1.1: smaller),
# so that the ear hears statistical-parametric voices other than flite awb (the held-out flite rms
# is one, and the one it hears worst). Festival's HTS engine ignores its own all-pass and F0 options.
FESTIVAL_TRAIN_VOICES: tuple[Voice, ...] = (
    Voice("festival-ked", "festival", "ked_diphone"),
    Voice("festival-hts-w78", "festival", "cmu_us_slt_arctic_hts", warp=0.78),
    Voice("festival-hts-w86", "festival", "cmu_us_slt_arctic_hts", warp=0.86),
    Voice("festival-hts-w110", "festival", "cmu_us_slt_arctic_hts", warp=1.10),
)
# vocoded (`--extra-voices vocoded`, training only): flite and festival renderings resynthesised by
# the WORLD vocoder (`pyworld`) with another F0 and vocal tract: male voices made from HTS slt
# (median F0 ~173 Hz -> ~95, ~110 and ~135 Hz; the held-out rms speaks at ~95 Hz) and training
# voices with a shifted pitch and formants, all with a vocoder's sound (espeak-ng's formant
# synthesis through WORLD is not understood by the judge, so it has none)
VOCODED_TRAIN_VOICES: tuple[Voice, ...] = (
    Voice("vocoded-hts-m1", "festival", "cmu_us_slt_arctic_hts", warp=1.0, vocoder=(0.58, 0.90)),
    Voice("vocoded-hts-m2", "festival", "cmu_us_slt_arctic_hts", warp=1.0, vocoder=(0.68, 0.84)),
    Voice("vocoded-flite-kal", "flite", "kal16", base_pitch=92.0, vocoder=(1.15, 1.0)),
    Voice("vocoded-flite-awb", "flite", "awb", base_pitch=128.0, vocoder=(0.8, 0.95)),
    Voice("vocoded-festival-ked", "festival", "ked_diphone", vocoder=(1.0, 1.06)),
    Voice("vocoded-hts-m3", "festival", "cmu_us_slt_arctic_hts", warp=1.0, vocoder=(0.78, 1.0)),
)
EXTRA_VOICE_SETS = {  # --extra-voices
    "espeak": EXTRA_TRAIN_VOICES,
    "festival": FESTIVAL_TRAIN_VOICES,
    "vocoded": VOCODED_TRAIN_VOICES,
}
ASSISTANT_VOICE = Voice("flite-slt", "flite", "slt", vary=False)
VOICES = {
    v.name: v for voices in (USER_VOICES, *EXTRA_VOICE_SETS.values(), (ASSISTANT_VOICE,)) for v in voices
}
PROGRAMS = {"flite": "flite", "espeak-ng": "espeak-ng", "festival": "text2wave"}  # engine -> program
PACKAGES = {
    "flite": "flite",
    "espeak-ng": "espeak-ng",
    "festival": "festival festvox-kdlpc16k festvox-us-slt-hts",
}

ESPEAK_DEFAULT_WPM = 175  # espeak-ng's default speaking rate (words per minute)
ESPEAK_DEFAULT_PITCH = 50  # espeak-ng's default pitch (0..99)


class TTSError(RuntimeError):
    """A TTS program is missing or failed; the message names the program and how to install it."""


def spoken_form(text: str) -> str:
    """The text as the voices should say it (names spelled the way they are pronounced)."""
    for written, spoken in SPOKEN_ALIASES.items():
        text = re.sub(rf"\b{re.escape(written)}\b", spoken, text)
    return text


def engine_command(voice: Voice, text: str, out_path: str, prosody: Prosody) -> list[str]:
    """The command line that renders `text` to the WAV file `out_path` (festival's text2wave reads
    `text` from its standard input instead)."""
    if voice.engine == "flite":
        cmd = ["flite", "-voice", voice.voice]
        if voice.vary:
            cmd += ["--setf", f"duration_stretch={1.0 / prosody.rate:.3f}"]
            if voice.base_pitch is not None:
                cmd += ["--setf", f"int_f0_target_mean={voice.base_pitch * prosody.pitch:.1f}"]
        return [*cmd, "-t", text, "-o", out_path]
    if voice.engine == "espeak-ng":
        cmd = ["espeak-ng", "-v", voice.voice]
        if voice.vary:
            pitch = int(round(min(99, max(0, ESPEAK_DEFAULT_PITCH * prosody.pitch))))
            cmd += ["-s", str(int(round(ESPEAK_DEFAULT_WPM * prosody.rate))), "-p", str(pitch)]
        return [*cmd, "-w", out_path, text]
    if voice.engine == "festival":
        cmd = ["text2wave", "-eval", f"(voice_{voice.voice})"]
        if voice.warp is not None:  # HTS: its speed option, so that the warp keeps the duration
            speed = prosody.rate / _warp(voice, prosody)
            cmd += ["-eval", f'(set! hts_engine_params (append hts_engine_params \'(("-r" {speed:.3f}))))']
        elif voice.vary:
            cmd += ["-eval", f"(Parameter.set 'Duration_Stretch {1.0 / prosody.rate:.3f})"]
        return [*cmd, "-o", out_path]
    raise ValueError(f"unknown TTS engine {voice.engine!r}")


def _warp(voice: Voice, prosody: Prosody) -> float:
    """The frequency factor of a warped voice's utterance: its own times the pitch perturbation."""
    return voice.warp * (prosody.pitch if voice.vary else 1.0)


def available_engines() -> dict[str, bool]:
    """Which TTS programs are on PATH."""
    return {name: shutil.which(program) is not None for name, program in PROGRAMS.items()}


def synthesize(text: str, voice: Voice | str, prosody: Prosody = Prosody()) -> Waveform:
    """Renders `text` with a voice; returns 16 kHz mono float32.

    Args:
        text: the written text (passed through `spoken_form`).
        voice: a `Voice` or its name (see `VOICES`).
        prosody: rate/pitch perturbation (ignored by voices with `vary=False`).

    Raises:
        TTSError: the program is not installed or failed.
    """
    import soundfile as sf

    from core.audio import resample

    voice = VOICES[voice] if isinstance(voice, str) else voice
    if shutil.which(PROGRAMS[voice.engine]) is None:
        raise TTSError(f"{voice.engine} is not installed (apt-get install {PACKAGES[voice.engine]})")
    with tempfile.TemporaryDirectory(prefix="drvoice-tts-") as tmp:
        out = str(Path(tmp) / "out.wav")
        spoken = spoken_form(text)
        cmd = engine_command(voice, spoken, out, prosody)
        stdin = spoken if voice.engine == "festival" else None
        proc = subprocess.run(cmd, capture_output=True, text=True, input=stdin)
        if proc.returncode != 0 or not Path(out).exists():
            raise TTSError(f"{' '.join(cmd[:3])} failed ({proc.returncode}): {proc.stderr.strip()[:300]}")
        samples, sample_rate = sf.read(out, dtype="float32", always_2d=True)
    samples = samples.mean(axis=1)  # (num_samples,) mono
    if voice.warp is not None:  # played as if recorded at a rate `warp` times higher (or lower)
        sample_rate = int(round(sample_rate * _warp(voice, prosody)))
    if sample_rate != SAMPLE_RATE:
        samples = resample(samples, sample_rate, SAMPLE_RATE)
    if voice.vocoder is not None:
        samples = vocode(samples, SAMPLE_RATE, *voice.vocoder)
    return Waveform(np.ascontiguousarray(samples, dtype=np.float32), SAMPLE_RATE)


def vocode(samples: np.ndarray, sample_rate: int, f0_factor: float, envelope_factor: float) -> np.ndarray:
    """`samples` analysed and resynthesised by the WORLD vocoder (pyworld: DIO + StoneMask F0,
    CheapTrick envelope, D4C aperiodicity, 5 ms frames) with the F0 times `f0_factor` and the
    spectral envelope stretched along frequency by `envelope_factor` (> 1: formants move up, a
    smaller vocal tract); the output has the input's length and peak level."""
    import pyworld

    if f0_factor <= 0 or envelope_factor <= 0:
        raise ValueError(f"vocoder factors must be > 0, got {f0_factor}, {envelope_factor}")
    x, frame_ms = np.asarray(samples, dtype=np.float64), 5.0
    f0, times = pyworld.dio(x, sample_rate, frame_period=frame_ms)
    f0 = pyworld.stonemask(x, f0, times, sample_rate)
    envelope = pyworld.cheaptrick(x, f0, times, sample_rate)
    aperiodicity = pyworld.d4c(x, f0, times, sample_rate)
    if envelope_factor != 1.0:  # bin k takes the envelope at k / factor
        source = np.clip(np.arange(envelope.shape[1]) / envelope_factor, 0, envelope.shape[1] - 1)
        low = np.minimum(source.astype(int), envelope.shape[1] - 2)
        frac = source - low
        envelope = envelope[:, low] * (1 - frac) + envelope[:, low + 1] * frac
    y = pyworld.synthesize(
        f0 * f0_factor, np.ascontiguousarray(envelope), aperiodicity, sample_rate, frame_ms
    )
    y = np.pad(y, (0, max(0, len(x) - len(y))))[: len(x)]
    peak_in, peak_out = np.abs(x).max(), np.abs(y).max()
    return (y * (peak_in / peak_out) if peak_out > 0 else y).astype(np.float32)


def speak_assistant(text: str) -> Waveform:
    """`text` in the assistant's one fixed voice (flite `slt`, default settings), 16 kHz mono.

    The corpus's reply audio and the evaluation's reference renderings both come from here.
    """
    return synthesize(text, ASSISTANT_VOICE)
