"""Shared set-up of the benchmarks: a demo-size model (>= 10 M parameters) and a fitted units codec."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from core.config import small_config
from core.model import DrVoiceModel
from core.text_tokenizer import SpecialTokenIds, train_bpe_tokenizer
from core.types import Waveform

SENTENCES = [
    "three plus four is seven.",
    "the capital of france is paris.",
    "the day after monday is tuesday.",
    "my name is doctor voice, how can I help you today?",
    "the opposite of hot is cold.",
    "twelve times eleven is one hundred thirty two.",
    "the month after january is february.",
    "thank you for asking, goodbye!",
]


def speech(text: str, voice: str = "slt") -> Waveform:
    """flite rendering of `text` (16 kHz); a harmonic stand-in when flite is not installed."""
    if shutil.which("flite"):
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "x.wav"
            subprocess.run(["flite", "-voice", voice, "-t", text, "-o", str(path)], check=True)
            samples, rate = sf.read(path, dtype="float32")
        return Waveform(samples, rate)
    rate, seconds = 16000, 0.08 * len(text)
    t = np.arange(int(rate * seconds)) / rate
    f0 = 120 + 30 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    samples = sum(np.sin(h * phase) / h for h in range(1, 12)) * 0.2 * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
    return Waveform(samples.astype(np.float32), rate)


def fit_codec(num_units: int, seconds: float):
    """A units codec fitted on about `seconds` of assistant-voice speech (with its residual decoder)."""
    from core.codec.units import UnitsCodec

    waves, total = [], 0.0
    while total < seconds:
        for s in SENTENCES:
            w = speech(s)
            waves.append(w)
            total += w.duration
    return UnitsCodec.fit(waves, num_units, kmeans_iters=5, decoder_steps=5)


def demo_size_model(group_size: int, speech_vocab: int, seed: int = 0, extra_texts: tuple[str, ...] = ()):
    """The demo size class (as `training/recipes/demo.py` builds it): LLM 4x256 over a 1024-row text
    vocabulary, SRH 2x256, 3-layer 192-wide audio encoder; returns (model, tokenizer).

    `extra_texts` join the tokenizer's training text (e.g. the Table 5 system prompts, so that they
    take about one token per word as with a real tokenizer).
    """
    tokenizer = train_bpe_tokenizer(SENTENCES * 20 + list(extra_texts) * 20, vocab_size=1024)
    ids = SpecialTokenIds.from_tokenizer(tokenizer).to_dict()
    config = small_config(
        ids,
        max(len(tokenizer), 1024),
        speech_vocab,
        group_size=group_size,
        encoder_state=192,
        encoder_layers=3,
    )
    torch.manual_seed(seed)
    return DrVoiceModel(config).eval(), tokenizer
