import dataclasses
import threading

import numpy as np
import pytest
import torch

from core.audio import AudioInputError, load_audio
from core.checkpoint import save_pretrained
from core.engine import ChatRequest, Exchange, InputError, VoiceChatEngine
from core.generate import LengthBudgetError
from core.modes import MODE_NAMES
from core.sampling import ModeSampling, SamplingConfig
from core.types import AudioChunk, Done, PhaseStart, TextDelta
from tests.core.conftest import flite_speech, make_model

QUESTION = "what is three plus four"
REPLY = "three plus four is seven."


@pytest.fixture(scope="module")
def question():
    return flite_speech(QUESTION + "?", voice="kal")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tokenizer, tiny_codec, question):
    """A tiny checkpoint overfitted on one spoken question in all seven modes, saved and reloaded.

    Returns (engine, reply speech tokens)."""
    import torch

    from core.encoder import log_mel
    from core.sequence import Sample, SequenceBuilder, UserInput, collate

    model = make_model(tokenizer, seed=7, llm_hidden=48, srh_hidden=48)
    reply_tokens = tiny_codec.encode(flite_speech(REPLY)).tolist()
    user = UserInput(text=QUESTION + "?", mels=log_mel(load_audio(question), 80))
    b = SequenceBuilder(model.config, tokenizer)
    examples = [
        b.example(Sample(m, user, REPLY, reply_tokens, transcript=QUESTION + "?")) for m in MODE_NAMES
    ]
    batch = collate(examples, tokenizer.pad_token_id, model.config.speech_pad)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    model.train()
    for _ in range(250):
        loss = model(batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.05
    out = save_pretrained(tmp_path_factory.mktemp("ckpt") / "tiny", model.eval(), tokenizer, codec=tiny_codec)
    return VoiceChatEngine.from_pretrained(out), reply_tokens


@pytest.fixture
def engine(trained):
    return trained[0]


def _run(engine, request):
    events = list(engine.stream(request))
    assert isinstance(events[-1], Done)
    assert sum(isinstance(e, Done) for e in events) == 1
    return events, events[-1]


def test_audio_views_hear_the_question_in_several_tempos(engine, question):
    """Extra prompts only for speech input; the slower view is longer; the answer survives them."""
    several = SamplingConfig(audio_views=3)
    plain, (slower, faster), guides = engine.prompts(ChatRequest("S2T", audio=question, sampling=several))
    assert guides == []  # S2T is a text mode: nothing to guide
    assert torch.equal(plain.mels[0], engine.build_prompt(ChatRequest("S2T", audio=question)).mels[0])
    frames = [p.mels[0].shape[-1] for p in (slower, plain, faster)]
    assert frames[0] > frames[1] > frames[2]
    assert engine.prompts(ChatRequest("S2T", audio=question))[1] == []
    assert engine.prompts(ChatRequest("T2T", text=QUESTION, sampling=several))[1] == []
    _, done = _run(engine, ChatRequest("S2T", audio=question, sampling=several))
    assert done.reply_text == REPLY


def test_a_request_without_sampling_gets_the_checkpoints_recommended_settings(engine, question, monkeypatch):
    """The settings the checkpoint recommends for the mode (generation_config.json) fill a request
    that sets none; a request's own settings win."""
    assert engine.sampling == ModeSampling()  # the tiny checkpoint recommends nothing
    monkeypatch.setattr(engine, "sampling", ModeSampling(modes={"S2T": SamplingConfig(audio_views=3)}))
    assert len(engine.prompts(ChatRequest("S2T", audio=question))[1]) == 2
    assert engine.prompts(ChatRequest("SUC", audio=question))[1] == []  # only S2T's differ
    assert engine.prompts(ChatRequest("S2T", audio=question, sampling=SamplingConfig()))[1] == []
    views = []  # the extra views each streamed request was answered with
    real = engine.prompts
    monkeypatch.setattr(
        engine, "prompts", lambda request: (out := real(request), views.append(len(out[1])))[0]
    )
    _, done = _run(engine, ChatRequest("S2T", audio=question))
    _run(engine, ChatRequest("S2T", audio=question, sampling=SamplingConfig()))
    assert done.reply_text == REPLY and views == [2, 0]


def test_a_requests_audio_is_decoded_once_for_all_its_prompts(engine, question, monkeypatch):
    """Views and twins hear one decoding of the recording (and each view of it is made once)."""
    import core.audio

    calls = []
    real = core.audio.load_audio
    monkeypatch.setattr(core.audio, "load_audio", lambda audio: (calls.append(audio), real(audio))[1])
    sampling = SamplingConfig(audio_views=3, text_guide=0.5)
    prompt, views, guides = engine.prompts(ChatRequest("S2M", audio=question, sampling=sampling))
    assert len(calls) == 1 and len(views) == 2 and len(guides) == 3
    assert guides[0].mels[0] is prompt.mels[0] and guides[2].mels[0] is views[1].mels[0]


def test_a_text_guide_is_the_same_turn_in_the_text_twin_mode(engine, question):
    """S2M with a guide: an S2T prompt per view (the default S2T system prompt even when the request
    overrides its own) beside S2M's own views; the overfitted answer survives the guide."""
    guided = SamplingConfig(audio_views=2, text_guide=0.5)
    request = ChatRequest("S2M", audio=question, sampling=guided, system_prompt="Speak.")
    _, views, guides = engine.prompts(request)
    s2t = ChatRequest("S2T", audio=question)
    assert [p.input_ids.tolist() for p in guides[:1]] == [engine.build_prompt(s2t).input_ids.tolist()]
    assert len(views) == 1 and len(guides) == 2
    # each hearing is made once for all the prompts: a twin holds its view's very log-mels
    assert guides[1].mels[0] is views[0].mels[0] and guides[0].mels[0] is not views[0].mels[0]
    assert engine.prompts(ChatRequest("SAC", audio=question, sampling=guided))[2] == []  # not a twin mode
    (typed,) = engine.prompts(ChatRequest("T2M", text=QUESTION, sampling=guided))[2]  # no views of text
    assert (
        typed.input_ids.tolist() == engine.build_prompt(ChatRequest("T2T", text=QUESTION)).input_ids.tolist()
    )
    _, done = _run(engine, dataclasses.replace(request, system_prompt=None))
    assert done.reply_text == REPLY and done.stop_reason == "end"


@pytest.mark.parametrize("mode", MODE_NAMES)
def test_every_mode_streams_typed_events(trained, question, mode):
    """The overfitted checkpoint answers in every mode; text, phases, audio and tokens all line up."""
    engine, reply_tokens = trained
    events, done = _run(engine, ChatRequest(mode, text=QUESTION + "?", audio=question))
    assert done.reply_text == REPLY and done.stop_reason == "end"
    reply = "".join(e.text for e in events if isinstance(e, TextDelta) and e.phase == "reply")
    assert reply.strip() == done.reply_text
    chunks = [e for e in events if isinstance(e, AudioChunk)]
    speaks = mode not in ("S2T", "T2T")
    if speaks:
        assert done.speech_tokens == reply_tokens
        audio = np.concatenate([c.samples for c in chunks])
        # every generated 25 Hz token becomes 40 ms of audio
        assert len(audio) == len(done.speech_tokens) * engine.codec.samples_per_token
        assert [c.index for c in chunks] == list(range(len(chunks)))
        assert done.timings.time_to_first_audio is not None and done.timings.real_time_factor > 0
    else:
        assert not chunks and not done.speech_tokens and done.sample_rate == 0
    phases = [e.phase for e in events if isinstance(e, PhaseStart)]
    expected = {
        "STC": ["transcript", "draft", "reply"],
        "SAC": ["draft", "reply"],
        "SUC": ["transcript", "reply"],
    }
    assert phases == expected.get(mode, ["reply"])
    assert done.transcript == (QUESTION + "?" if mode in ("STC", "SUC") else "")
    assert done.draft == (REPLY if mode in ("STC", "SAC") else "")
    assert done.timings.time_to_first_text is not None


@pytest.mark.parametrize("mode", ["S2M", "STC"])
def test_decode_path_and_background_audio_change_no_sample(engine, question, mode):
    """The lean decode path (fp32 or fp16 products) and audio decoded on a worker thread give the
    same reply, tokens and samples as transformers' cached forward with audio decoded in line."""
    replies = {}
    try:
        for decode, matmul in (("lean", "fp32"), ("lean", "fp16"), ("cached", "auto")):
            for background in (True, False):
                engine.decode, engine.matmul, engine.background_audio = decode, matmul, background
                events, done = _run(engine, ChatRequest(mode, audio=question))
                chunks = [e for e in events if isinstance(e, AudioChunk)]
                assert [c.index for c in chunks] == list(range(len(chunks)))
                replies[decode, matmul, background] = (
                    done.reply_text,
                    done.speech_tokens,
                    np.concatenate([c.samples for c in chunks]),
                )
    finally:
        engine.decode, engine.matmul, engine.background_audio = "lean", "auto", None
    text, tokens, audio = replies["cached", "auto", False]
    assert text == REPLY and len(audio) == len(tokens) * engine.codec.samples_per_token
    for reply_text, speech_tokens, samples in replies.values():
        assert reply_text == text and speech_tokens == tokens
        np.testing.assert_array_equal(samples, audio)


def test_chain_phase_deltas_add_up(engine, question):
    events, done = _run(engine, ChatRequest("STC", audio=question))
    transcript = "".join(e.text for e in events if isinstance(e, TextDelta) and e.phase == "transcript")
    draft = "".join(e.text for e in events if isinstance(e, TextDelta) and e.phase == "draft")
    assert transcript.strip() == done.transcript and draft.strip() == done.draft


def test_draft_ids_are_the_reply_encoding_of_the_draft(engine):
    chain = engine.builder.encode_text(f"{QUESTION}?\n{REPLY}")
    assert engine._draft_ids("STC", chain) == engine.builder.encode_text(REPLY)
    assert engine._draft_ids("SAC", engine.builder.encode_text(REPLY)) == engine.builder.encode_text(REPLY)


@pytest.mark.parametrize("mode", ["STC", "SAC"])
def test_parallel_text_follows_the_draft(engine, question, mode, monkeypatch):
    """With follow_draft the parallel phase repeats the draft token for token, even one the text head
    would not write (here a draft swapped for another); without it the head writes its own text."""
    other = "three plus four is eight."
    monkeypatch.setattr(engine.generator, "draft_ids", lambda m, ids: engine.builder.encode_text(other))
    _, followed = _run(engine, ChatRequest(mode, audio=question))
    assert followed.reply_text == other and followed.draft == REPLY
    free = SamplingConfig(follow_draft=False)
    _, own = _run(engine, ChatRequest(mode, audio=question, sampling=free))
    assert own.reply_text == REPLY


@pytest.mark.parametrize("mode", ["T2M", "S2M"])
def test_a_given_reply_text_is_written_as_given_and_spoken(engine, question, mode):
    """`reply_text` takes the place of the text head's reply (this model writes REPLY to the
    question) and the speech is generated beside it; modes that cannot take one refuse it."""
    other = "the capital of france is paris."
    typed = mode == "T2M"
    request = ChatRequest(mode, text=QUESTION if typed else None, audio=None if typed else question)
    _, own = _run(engine, request)
    assert own.reply_text == REPLY
    events, given = _run(engine, dataclasses.replace(request, reply_text=other))
    assert given.reply_text == other == "".join(e.text for e in events if isinstance(e, TextDelta))
    assert sum(len(e.samples) for e in events if isinstance(e, AudioChunk)) > 0
    with pytest.raises(InputError, match="S2M, T2M"):
        list(engine.stream(ChatRequest("T2T", text="hi", reply_text=other)))
    with pytest.raises(InputError, match="empty"):
        list(engine.stream(dataclasses.replace(request, reply_text="  ")))
    with pytest.raises(InputError, match="characters long"):
        list(engine.stream(dataclasses.replace(request, reply_text="a" * 3000)))


def test_history_is_part_of_the_prompt(engine, question):
    plain = engine.build_prompt(ChatRequest("T2T", text="and five?"))
    history = [
        Exchange(user_text="what is three plus four?", assistant_text="seven."),
        Exchange(user_audio=question, assistant_text="ok"),
    ]
    with_history = engine.build_prompt(ChatRequest("T2T", text="and five?", history=history))
    seven = engine.tokenizer.encode("seven.", add_special_tokens=False)
    ids = with_history.input_ids.tolist()
    assert len(with_history) > len(plain) + len(seven)
    assert any(ids[i : i + len(seven)] == seven for i in range(len(ids)))
    assert (with_history.input_ids == engine.config.special_token_ids["audio"]).sum() > 0  # the spoken turn
    assert len(with_history.mels) == 1


def test_cancel_stops_generation(engine):
    cancel = threading.Event()
    events = []
    for e in engine.stream(
        ChatRequest("T2M", text="hello", sampling=SamplingConfig(max_new_steps=200)), cancel=cancel
    ):
        events.append(e)
        if isinstance(e, (TextDelta, AudioChunk)):
            cancel.set()
    assert events[-1].stop_reason == "cancelled"
    assert events[-1].timings.llm_steps <= 3
    # the audio worker of the cancelled reply has stopped
    workers = [t for t in threading.enumerate() if t.name == "detokenizer"]
    for t in workers:
        t.join(timeout=2)
    assert not any(t.is_alive() for t in workers)


def test_bad_requests_have_readable_errors(engine, tmp_path):
    with pytest.raises(InputError, match="record or upload"):
        list(engine.stream(ChatRequest("S2M")))
    with pytest.raises(InputError, match="type a message"):
        list(engine.stream(ChatRequest("T2T", text="   ")))
    with pytest.raises(InputError, match="characters long"):
        list(engine.stream(ChatRequest("T2T", text="a" * 5000)))
    with pytest.raises(AudioInputError):
        list(engine.stream(ChatRequest("S2T", audio=(16000, np.zeros(16000, dtype=np.int16)))))
    with pytest.raises(ValueError, match="unknown mode"):
        list(engine.stream(ChatRequest("XYZ", text="hi")))
    with pytest.raises(LengthBudgetError):
        list(engine.stream(ChatRequest("T2T", text="hello " * 1900, max_text_chars=20000)))
    # the engine keeps working after errors
    _, done = _run(engine, ChatRequest("T2T", text="hello", sampling=SamplingConfig(max_new_steps=3)))
    assert done.timings is not None


def test_warm_up_runs_a_reply_through_every_part(engine):
    """What a first reply sets up (the lean decoder's stacked weights of the LLM and the SRH) is
    there after `warm_up`, on a model no request has used yet."""
    import copy

    import core.kv_decoder as kv

    fresh = VoiceChatEngine(copy.deepcopy(engine.model), engine.tokenizer, engine.codec)
    parts = (fresh.model.llm.model, fresh.model.srh.decoder)
    assert not any(part in kv._PACKS for part in parts)
    done = fresh.warm_up()
    assert isinstance(done, Done) and len(done.speech_tokens) > 0  # S2M: the ear, LLM, SRH and codec ran
    assert all(part in kv._PACKS for part in parts)
