"""Bad input gets a readable message in the page, writes no turn, and the app keeps answering."""

from __future__ import annotations

import io
import wave

import numpy as np
import pytest
import soundfile as sf

from app.config import Limits
from app.handlers import CHAT_OUTPUTS, COMPARE_OUTPUTS, ChatHandlers, CompareHandlers
from tests.app.conftest import QUESTION, REPLY, request_of

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:gradio.helpers")
STATUS = CHAT_OUTPUTS.index("status")


def wav_file(path, samples: np.ndarray, rate: int = 16000) -> str:
    sf.write(str(path), samples, rate, subtype="PCM_16")
    return str(path)


@pytest.fixture
def files(tmp_path):
    """Audio uploads that must be refused, by name."""
    rng = np.random.default_rng(0)
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x10\x00\x00WAVE" + rng.integers(0, 255, 4000, dtype=np.uint8).tobytes())
    truncated_header = tmp_path / "truncated.wav"
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000)
        w.writeframes(b"\x00\x01" * 10)
    truncated_header.write_bytes(buffer.getvalue()[:30])
    text = tmp_path / "notes.wav"
    text.write_text("this is not a recording, just some notes\n" * 20)
    png = tmp_path / "picture.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))
    return {
        "silent": wav_file(tmp_path / "silent.wav", np.zeros(16000, dtype=np.float32)),
        "corrupt": str(corrupt),
        "truncated": str(truncated_header),
        "text": str(text),
        "png": str(png),
        # 3 s at 8 kHz: 48 KB, under the size limit but over the duration limit
        "long": wav_file(
            tmp_path / "long.wav", 0.3 * np.sin(np.arange(8000 * 3) * 0.05).astype(np.float32), 8000
        ),
        # 1.5 s at 48 kHz stereo: 288 KB, over the size limit but under the duration limit
        "large": wav_file(tmp_path / "large.wav", np.full((72000, 2), 0.3, dtype=np.float32), 48000),
        "tiny": wav_file(tmp_path / "tiny.wav", 0.3 * np.ones(160, dtype=np.float32)),
    }


CASES = [
    # (mode, text, audio file key or None, expected words in the message)
    ("S2M", None, None, "Nothing to answer yet"),
    ("T2M", "   ", None, "Nothing to answer yet"),
    ("S2M", QUESTION, None, "answers speech"),
    ("T2T", None, "silent", "answers typed text"),
    ("S2M", None, "silent", "The recording is silent"),
    ("S2T", None, "corrupt", "damaged or incomplete"),
    ("STC", None, "truncated", "damaged or incomplete"),
    ("S2M", None, "text", "not an audio recording"),
    ("SAC", None, "png", "is an image (PNG), not an audio recording"),
    ("SUC", None, "long", "too long (3.0 s; the limit is 2 s)"),
    ("S2M", None, "large", "too large"),
    ("S2M", None, "tiny", "too short"),
    ("T2T", "a" * 301, None, "301 characters long; the limit is 300"),
    ("XYZ", QUESTION, None, "unknown mode"),
]


@pytest.mark.parametrize(("mode", "text", "audio", "expected"), CASES, ids=[c[3][:24] for c in CASES])
def test_bad_chat_input_shows_a_message(make_ctx, files, mode, text, audio, expected):
    limits = Limits(max_audio_seconds=2.0, max_upload_mb=120_000 / 2**20, max_text_chars=300)
    ctx = make_ctx(limits=limits)
    chat = ChatHandlers(ctx)
    (output,) = list(chat.submit(request_of(), None, [], mode, text, files.get(audio), None))
    assert expected in output[STATUS] and output[STATUS].startswith("⚠️")
    assert ctx.repo.stats().turns == 0 and ctx.repo.stats().conversations == 0
    # the same session answers the next (good) message
    final = list(
        chat.submit(request_of(), output[CHAT_OUTPUTS.index("state")], [], "T2M", QUESTION, None, None)
    )[-1]
    assert final[STATUS] == "" and ctx.repo.stats().turns == 1


def test_bad_sampling_settings_show_a_message(ctx):
    chat = ChatHandlers(ctx)
    values = (0.7, 0.0, 0, 0.0, 1.0, 0, 1.0, -1, 100, 1, 0.0)  # top_p = 0 is out of range
    (output,) = list(chat.submit(request_of(), None, [], "T2T", QUESTION, None, None, *values))
    assert "Invalid sampling settings: top_p must be in (0, 1]" in output[STATUS]
    values = (0.7, 1.0, 0, 0.0, 1.0, 0, 1.0, -1, 100, 12, 0.0)  # more audio views than there are
    (output,) = list(chat.submit(request_of(), None, [], "T2T", QUESTION, None, None, *values))
    assert "Invalid sampling settings: audio_views must be in [1, 9]" in output[STATUS]
    values = (0.7, 1.0, 0, 0.0, 1.0, 0, 1.0, -1, 100, 1, 1.5)  # a guide weight beyond 1
    (output,) = list(chat.submit(request_of(), None, [], "T2M", QUESTION, None, None, *values))
    assert "Invalid sampling settings: text_guide must be in [0, 1]" in output[STATUS]


def test_unknown_checkpoint_shows_a_message(ctx):
    (output,) = list(ChatHandlers(ctx).submit(request_of(), None, [], "T2T", QUESTION, None, "nope"))
    assert "Unknown checkpoint 'nope'" in output[STATUS]


def test_bad_compare_input_shows_a_message(ctx, files, question_wav):
    compare = CompareHandlers(ctx)
    status = COMPARE_OUTPUTS.index("status")
    (same,) = list(compare.run(request_of(), None, QUESTION, question_wav, "S2M", "S2M", None, None, True))
    assert "Pick two different modes" in same[status]
    (missing,) = list(compare.run(request_of(), None, None, question_wav, "S2M", "T2M", None, None, True))
    assert "Text-to-Multimodal (T2M) answers typed text" in missing[status]
    (silent,) = list(compare.run(request_of(), None, None, files["silent"], "S2M", "STC", None, None, True))
    assert "silent" in silent[status]
    assert ctx.repo.stats().turns == 0
    final = list(compare.run(request_of(), None, QUESTION, question_wav, "S2M", "T2M", None, None, True))[-1]
    assert (
        REPLY in final[COMPARE_OUTPUTS.index("text_a")]
        and final[COMPARE_OUTPUTS.index("state")].comparison_id
    )
