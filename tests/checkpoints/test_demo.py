"""The committed demo checkpoint (`checkpoints/demo`, what `python app.py` serves by default)."""

import json
from pathlib import Path

import numpy as np
import pytest

from core.checkpoint import from_pretrained
from core.engine import ChatRequest, VoiceChatEngine
from core.types import AudioChunk, Done
from training.eval.scoring import contains_answer

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "checkpoints" / "demo"
FIXTURES = Path(__file__).resolve().parent / "fixtures"  # copied from the corpus test split
QUESTIONS = json.loads((FIXTURES / "questions.json").read_text())


@pytest.fixture(scope="module")
def engine():
    return VoiceChatEngine.from_pretrained(DEMO)


def test_demo_checkpoint_is_small_and_complete():
    size = sum(p.stat().st_size for p in DEMO.rglob("*") if p.is_file())
    assert size <= 30 * 2**20, f"checkpoints/demo is {size / 2**20:.1f} MB (limit 30 MB)"
    ckpt = from_pretrained(DEMO)
    assert ckpt.codec is not None and ckpt.codec.codebook_size == ckpt.model.config.speech_vocab_size
    assert ckpt.model.num_parameters() >= 10_000_000
    assert (DEMO / "README.md").is_file()
    # the card's recommendation (generation_config.json): S2T hears each question in 3 views
    assert ckpt.sampling.for_mode("S2T").audio_views == 3 and ckpt.sampling.for_mode("S2M").audio_views == 1


def test_demo_answers_a_typed_question_with_text_and_speech(engine):
    """T2M on a training-domain question: the reply names the capital and comes with speech."""
    events = list(engine.stream(ChatRequest("T2M", text="What is the capital of France?")))
    done = events[-1]
    assert isinstance(done, Done) and done.stop_reason == "end"
    assert "paris" in done.reply_text.lower()
    audio = np.concatenate([e.samples for e in events if isinstance(e, AudioChunk)])
    assert len(audio) == len(done.speech_tokens) * engine.codec.samples_per_token
    assert 0.5 < done.timings.audio_seconds < 10


@pytest.mark.parametrize("question", QUESTIONS, ids=[q["id"] for q in QUESTIONS])
def test_demo_answers_spoken_test_questions_in_s2t(engine, question):
    """S2T on test-split recordings by a voice held out of training: for capital, opposite and weekday,
    the first such item the committed checkpoint answered correctly in its full evaluation
    (`questions.json` names the voice). A regression test of the spoken-input path on an unheard
    voice, with the settings the checkpoint recommends for S2T (3 audio views); its accuracy on the whole test split (60.8% S2T; 90% where only the voice is held out)
    is in the model card."""
    events = list(engine.stream(ChatRequest("S2T", audio=FIXTURES / question["audio"])))
    done = events[-1]
    assert isinstance(done, Done) and done.stop_reason == "end"
    assert not [e for e in events if isinstance(e, AudioChunk)]
    assert contains_answer(done.reply_text, question["answers"]), (question["text"], done.reply_text)


def test_demo_speech_says_the_reply_text_it_is_given(engine):
    """The speech reads its reply text (step 18: the text term of the LLM input at the speech's scale,
    two steps ahead of it): asked for a capital but made to write a small-talk reply, the judge hears
    that reply and not the capital, which step 17's speech said whatever text it was given."""
    from core.types import Waveform
    from training.eval.asr import transcribe

    given = "Goodbye! Have a nice day."
    events = list(engine.stream(ChatRequest("T2M", text="What is the capital of France?", reply_text=given)))
    done = events[-1]
    assert isinstance(done, Done) and done.reply_text == given
    audio = np.concatenate([e.samples for e in events if isinstance(e, AudioChunk)])
    heard = transcribe(Waveform(audio, engine.codec.sample_rate))
    assert "goodbye" in heard and "paris" not in heard, heard
