"""The tokenization step with a real SpeechTokenizer: a tiny units codec fitted on flite speech.

Skipped, with the reason shown, when the `flite` binary is missing (CI installs it).
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess

import pytest
import soundfile as sf
import torch

from core.codec.base import SpeechTokenizer
from core.codec.units import UnitsCodec
from core.types import Waveform
from tests.training.data.audio_files import write_lines
from training.data.manifest import read_manifest
from training.data.mel_cache import MelCache
from training.data.tokenize import default_output, load_speech_tokenizer, main, tokenize_manifest

SENTENCES = [
    "Three plus four is seven.",
    "The capital of France is Paris.",
    "Hello, how can I help you today?",
]


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    if shutil.which("flite") is None:
        pytest.skip("flite is not installed (apt-get install flite); CI installs it")
    folder = tmp_path_factory.mktemp("flite")
    for i, text in enumerate(SENTENCES):
        subprocess.run(["flite", "-voice", "slt", "-t", text, "-o", str(folder / f"r{i}.wav")], check=True)
    return folder


@pytest.fixture(scope="module")
def codec_dir(speech, tmp_path_factory):
    waveforms = [Waveform(*sf.read(str(speech / f"r{i}.wav"), dtype="float32")) for i in range(3)]
    codec = UnitsCodec.fit(waveforms, num_units=32, seed=0, kmeans_iters=5)
    directory = tmp_path_factory.mktemp("codec")
    codec.save(directory)
    return directory


def test_cli_tokenizes_replies_once_and_caches_user_mels(speech, codec_dir, tmp_path):
    manifest = write_lines(
        tmp_path / "train.jsonl",
        [
            {
                "id": "a",
                "audio": str(speech / "r1.wav"),
                "reply_text": SENTENCES[0],
                "reply_audio": str(speech / "r0.wav"),
            },
            {
                "id": "b",
                "text": "hi",
                "reply_text": SENTENCES[2],
                "reply_audio": str(speech / "r2.wav"),
                "reply_tokens": [1, 2],
            },
            {"id": "c", "text": "hi", "reply_text": "no audio"},
        ],
    )
    assert (
        main(["--manifest", str(manifest), "--codec", str(codec_dir), "--mels-cache", str(tmp_path / "mels")])
        == 0
    )
    out = tmp_path / "train.tokens.jsonl"
    a, b, c = read_manifest(out)
    codec = UnitsCodec.load(codec_dir)
    duration = sf.info(str(speech / "r0.wav")).duration
    expected = codec.encode(Waveform(*sf.read(str(speech / "r0.wav"), dtype="float32"))).tolist()
    assert a.reply_tokens == expected and len(expected) == math.ceil(duration * 25 - 1e-9)
    assert all(0 <= t < 32 for t in a.reply_tokens)
    assert b.reply_tokens == [1, 2]  # already tokenised: kept
    assert c.reply_tokens is None
    cache = MelCache(tmp_path / "mels", n_mels=80)
    assert cache.contains(speech / "r1.wav") and cache.frames(speech / "r1.wav") > 0

    # re-running on the output updates it in place and changes nothing
    before = out.read_text()
    assert (
        main(["--manifest", str(out), "--codec", str(codec_dir), "--mels-cache", str(tmp_path / "mels")]) == 0
    )
    assert out.read_text() == before


def test_function_api_and_codec_lookup(speech, codec_dir, tmp_path):
    tokenizer = load_speech_tokenizer(codec_dir)
    assert isinstance(tokenizer, SpeechTokenizer)
    checkpoint = tmp_path / "ckpt"
    shutil.copytree(codec_dir, checkpoint / "codec")
    (checkpoint / "config.json").write_text(json.dumps({"codec": {"type": "units", "path": "codec"}}))
    assert isinstance(load_speech_tokenizer(checkpoint), UnitsCodec)

    manifest = write_lines(
        tmp_path / "m.jsonl",
        [
            {
                "id": "a",
                "text": "hi",
                "reply_text": "x",
                "reply_audio": str(speech / "r0.wav"),
                "reply_tokens": [3],
            }
        ],
    )
    items = read_manifest(manifest)
    assert tokenize_manifest(items, tokenizer)[0] is items[0]  # skipped: same object
    (redone,) = tokenize_manifest(items, tokenizer, overwrite=True)
    assert torch.equal(
        torch.tensor(redone.reply_tokens),
        tokenizer.encode(Waveform(*sf.read(str(speech / "r0.wav"), dtype="float32"))),
    )
    assert items[0].reply_tokens == [3]  # inputs are not modified


def test_default_output_and_usage_errors(tmp_path, capsys):
    assert default_output(tmp_path / "train.jsonl") == tmp_path / "train.tokens.jsonl"
    assert default_output(tmp_path / "train.tokens.jsonl") == tmp_path / "train.tokens.jsonl"
    with pytest.raises(SystemExit):
        main(["--manifest", str(tmp_path / "m.jsonl")])
    assert "nothing to do" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="neither"):
        load_speech_tokenizer(tmp_path)


def test_module_runs_with_help():
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "training.data.tokenize", "--help"], capture_output=True, text=True, check=True
    )
    assert "--mels-cache" in result.stdout and "RuntimeWarning" not in result.stderr
