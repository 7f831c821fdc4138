import threading

import pytest
import torch

from core.generate import DrVoiceGenerator, GenResult, LengthBudgetError
from core.kv_decoder import unsupported_reason
from core.model import DrVoiceModel
from core.modes import MODE_NAMES
from core.sampling import SamplingConfig, apply_repetition_penalty, sample_token
from core.sequence import Sample, SequenceBuilder, UserInput, collate
from tests.core.conftest import fake_mels, make_config, make_model


def _steps(gen, prompt, mode, sampling, decode, matmul="fp32"):
    return [
        (s.kind, s.text_token, tuple(s.speech_tokens))
        for s in gen.stream(prompt, mode, sampling, decode=decode, matmul=matmul)
    ]


@pytest.mark.parametrize(
    "user_audio, text_condition",
    [("continuous", False), ("discrete", False), ("continuous", True), ("continuous", "embedding")],
)
def test_cached_decode_equals_no_cache_reference_in_every_mode(tokenizer, user_audio, text_condition):
    """Greedy tokens with KV caches (LLM + SRH) equal a slow decode that re-runs the whole sequence."""
    model = make_model(
        tokenizer,
        seed=3,
        user_audio=user_audio,
        speech_delay=1,
        srh_text_condition=text_condition is True,
        srh_text_embedding=text_condition == "embedding",
    )
    if model.srh_text is not None:
        with torch.no_grad():
            model.srh_text.weight.normal_()
    gen = DrVoiceGenerator(model)
    b = SequenceBuilder(model.config, tokenizer)
    user = UserInput(text="what is three plus four?", mels=fake_mels(1.3), speech_tokens=list(range(13)))
    sampling = SamplingConfig(max_new_steps=24)
    for mode in MODE_NAMES:
        prompt = b.prompt(mode, user)
        fast = _steps(gen, prompt, mode, sampling, "cached")
        slow = _steps(gen, prompt, mode, sampling, "uncached")
        lean = _steps(gen, prompt, mode, sampling, "lean")
        assert fast == slow, mode
        assert lean == slow, mode
        # float16 copies of the weights ("auto" on a CPU) round the products only: same greedy tokens
        # (on the first two models; the third's random logits hold a near tie that rounding flips)
        if not text_condition:
            assert _steps(gen, prompt, mode, sampling, "lean", "fp16") == slow, mode
        assert len(fast) >= 1
        if mode in ("S2M", "T2M"):
            assert all(kind == "parallel" for kind, _, _ in fast)
            assert sum(len(c) for _, _, c in fast) > 0  # speech was produced
        if mode in ("S2T", "T2T"):
            assert all(kind == "text" and not c for kind, _, c in fast)


def test_generated_speech_is_what_teacher_forcing_predicts_with_the_srh_text_embedding(tokenizer):
    """The generator gives the SRH the text token emitted at each step, as training does: greedy speech
    codes equal the argmax of the teacher-forced SRH logits on the generated reply."""
    model = make_model(tokenizer, seed=8, user_audio="discrete", speech_delay=1, srh_text_embedding=True)
    with torch.no_grad():
        model.srh_text.weight.normal_(std=3.0)  # loud enough to decide the argmax
    b = SequenceBuilder(model.config, tokenizer)
    user = UserInput(text="what is three plus four?")
    gen = DrVoiceGenerator(model)
    steps = list(gen.stream(b.prompt("T2M", user), "T2M", SamplingConfig(max_new_steps=20)))
    im_end = model.config.special_token_ids["im_end"]
    text = [s.text_token for s in steps if s.text_token is not None]
    reply_ids = text[: text.index(im_end)] if im_end in text else text
    codes = [c for s in steps for c in s.speech_tokens]
    assert reply_ids and len(codes) >= 10
    batch = collate(
        [b.example(Sample("T2M", user, "", reply_speech=codes, reply_ids=reply_ids))],
        tokenizer.pad_token_id,
        model.config.speech_pad,
    )

    def greedy() -> list[int]:
        return (model._heads(batch).speech_logits[: len(codes)] + gen.speech_mask).argmax(-1).tolist()

    with torch.no_grad():
        forced = greedy()
        model.srh_text.weight.zero_()
        blind = greedy()
    assert forced == codes
    assert blind != codes  # the embedding decided them


def test_chain_mode_switches_to_parallel_at_audio_bos(tokenizer):
    """With the final norm zeroed every text logit is 0, so greedy decoding takes the lowest allowed id:
    <|audio_bos|> in the chain text phase (im_end is banned there), <|im_end|> in the parallel phase.
    Text then stays silent (<|sil|>, reported as None) while the SRH speaks until eos or the step limit."""
    model = make_model(tokenizer, seed=5, user_audio="discrete")
    ids = model.config.special_token_ids
    assert ids["im_end"] < ids["audio_bos"] < min(ids["audio"], ids["audio_eos"])
    with torch.no_grad():
        model.llm.model.norm.weight.zero_()
    gen = DrVoiceGenerator(model)
    prompt = SequenceBuilder(model.config, tokenizer).prompt("SUC", UserInput(speech_tokens=list(range(10))))
    steps = list(gen.stream(prompt, "SUC", SamplingConfig(max_new_steps=8)))
    assert steps[0].kind == "text" and steps[0].text_token == ids["audio_bos"]
    assert [s.kind for s in steps[1:]] == ["parallel"] * (len(steps) - 1)
    assert steps[1].text_token == ids["im_end"] and steps[1].text_done
    assert all(s.text_token is None for s in steps[2:])
    assert sum(len(s.speech_tokens) for s in steps) > 0
    assert steps[-1].speech_done or len(steps) == 8


def test_sampling_is_reproducible_with_a_seed(tokenizer):
    model = make_model(tokenizer, seed=2, user_audio="discrete")
    gen = DrVoiceGenerator(model)
    prompt = SequenceBuilder(model.config, tokenizer).prompt("T2M", UserInput(text="hello"))
    s = SamplingConfig(
        temperature=1.0,
        speech_temperature=1.0,
        top_p=0.9,
        top_k=50,
        repetition_penalty=1.3,
        seed=7,
        max_new_steps=12,
    )
    a = _steps(gen, prompt, "T2M", s, "lean")
    b = _steps(gen, prompt, "T2M", s, "lean")
    c = _steps(gen, prompt, "T2M", SamplingConfig(**{**s.to_dict(), "seed": 8}), "lean")
    assert a == b
    assert a != c
    assert _steps(gen, prompt, "T2M", s, "cached") == a  # the lean path samples the same tokens


def test_lean_decode_falls_back_to_transformers_where_it_cannot_run(tokenizer):
    """An LLM with scaled rope is outside core.kv_decoder: "lean" decodes it with transformers."""
    config = make_config(tokenizer, user_audio="discrete")
    config.llm["rope_parameters"] = {"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0}
    torch.manual_seed(4)
    model = DrVoiceModel(config).eval()
    assert "rope type" in unsupported_reason(model.llm.model)
    assert unsupported_reason(model.srh.decoder) is None
    gen = DrVoiceGenerator(model)
    prompt = SequenceBuilder(config, tokenizer).prompt("T2M", UserInput(text="hello"))
    sampling = SamplingConfig(max_new_steps=10)
    lean = _steps(gen, prompt, "T2M", sampling, "lean")
    assert lean == _steps(gen, prompt, "T2M", sampling, "uncached")
    assert sum(len(c) for _, _, c in lean) > 0
    with pytest.raises(ValueError, match="decode must be"):
        list(gen.stream(prompt, "T2M", decode="fast"))


def test_length_budget_is_enforced(tokenizer):
    model = make_model(tokenizer, user_audio="discrete", max_positions=300)
    gen = DrVoiceGenerator(model)
    b = SequenceBuilder(model.config, tokenizer)
    prompt = b.prompt("T2M", UserInput(text="hello"))
    assert len(prompt) < 300
    with pytest.raises(LengthBudgetError, match="budget of 300 positions"):
        list(gen.stream(prompt, "T2M", SamplingConfig(max_new_steps=1000)))
    long_prompt = b.prompt("T2T", UserInput(text="hello " * 400))
    with pytest.raises(LengthBudgetError, match="start a new conversation"):
        list(gen.stream(long_prompt, "T2T"))


def test_cancel_and_max_steps(tokenizer):
    model = make_model(tokenizer, user_audio="discrete")
    gen = DrVoiceGenerator(model)
    prompt = SequenceBuilder(model.config, tokenizer).prompt("T2M", UserInput(text="hello"))
    res = GenResult()
    assert len(list(gen.stream(prompt, "T2M", SamplingConfig(max_new_steps=5), result=res))) <= 5
    assert res.stop_reason in ("max_steps", "end")
    cancel = threading.Event()
    cancel.set()
    res = GenResult()
    assert list(gen.stream(prompt, "T2M", cancel=cancel, result=res)) == []
    assert res.stop_reason == "cancelled"


def test_sampler_helpers():
    logits = torch.tensor([1.0, 3.0, 2.0, float("-inf")])
    assert sample_token(logits, 0.0) == 1
    g = torch.Generator().manual_seed(0)
    draws = {sample_token(logits, 1.0, top_k=2, generator=g) for _ in range(50)}
    assert draws == {1, 2}
    draws = {sample_token(logits, 1.0, top_p=0.5, generator=g) for _ in range(50)}
    assert draws == {1}
    pen = apply_repetition_penalty(torch.tensor([2.0, -2.0, 1.0]), [0, 1, 1], 2.0)
    assert pen.tolist() == [1.0, -4.0, 1.0]
    with pytest.raises(ValueError, match="top_p"):
        SamplingConfig(top_p=0.0)
