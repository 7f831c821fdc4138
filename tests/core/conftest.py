"""Tiny seeded DrVoice models for the core tests (dims 32, 1-2 layers: milliseconds per step)."""

from __future__ import annotations

import pytest
import torch

from core.config import small_config
from core.model import DrVoiceModel
from core.sequence import SequenceBuilder
from core.text_tokenizer import SpecialTokenIds, train_bpe_tokenizer

CORPUS = [
    "hello there, how can I help you today?",
    "what is three plus four? three plus four is seven.",
    "the capital of france is paris.",
    "the day after monday is tuesday.",
    "thank you, goodbye!",
] * 4
SPEECH_VOCAB = 40


@pytest.fixture(scope="session")
def tokenizer():
    return train_bpe_tokenizer(CORPUS, vocab_size=400)


def make_config(tokenizer, speech_vocab: int = SPEECH_VOCAB, **overrides):
    ids = SpecialTokenIds.from_tokenizer(tokenizer).to_dict()
    kwargs = dict(
        llm_hidden=32,
        llm_layers=2,
        llm_heads=2,
        srh_hidden=32,
        srh_layers=1,
        srh_heads=2,
        encoder_state=32,
        encoder_layers=1,
    )
    kwargs.update(overrides)
    return small_config(ids, len(tokenizer), speech_vocab, **kwargs)


def make_model(tokenizer, seed: int = 0, speech_vocab: int = SPEECH_VOCAB, **overrides) -> DrVoiceModel:
    torch.manual_seed(seed)
    return DrVoiceModel(make_config(tokenizer, speech_vocab, **overrides)).eval()


@pytest.fixture
def tiny_model(tokenizer):
    return make_model(tokenizer)


@pytest.fixture
def builder(tiny_model, tokenizer):
    return SequenceBuilder(tiny_model.config, tokenizer)


def fake_mels(seconds: float, n_mels: int = 80, seed: int = 0) -> torch.Tensor:
    """Log-mel-like features (n_mels, 100 fps) for tests that do not need real speech."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n_mels, int(seconds * 100), generator=g) * 0.5


def flite_speech(text: str, voice: str = "slt"):
    """flite rendering as a Waveform; skips the test with a reason when flite is not installed."""
    import shutil
    import subprocess
    import tempfile
    from pathlib import Path

    import soundfile as sf

    from core.types import Waveform

    if not shutil.which("flite"):
        pytest.skip("Debian flite is not installed (.ci/run installs it)")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "speech.wav"
        subprocess.run(["flite", "-voice", voice, "-t", text, "-o", str(path)], check=True)
        samples, rate = sf.read(path, dtype="float32")
    return Waveform(samples, rate)


@pytest.fixture(scope="session")
def tiny_codec():
    """A units codec with 40 units fitted on a few seconds of flite speech (lookup decoding only)."""
    from core.codec.units import UnitsCodec

    waves = [flite_speech(s) for s in CORPUS[:5]]
    return UnitsCodec.fit(waves, SPEECH_VOCAB, kmeans_iters=10)
