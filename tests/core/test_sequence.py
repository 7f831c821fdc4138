import pytest
import torch

from core.modes import MODES, chain_text, get_mode, split_chain_text
from core.sequence import IGNORE, Sample, SequenceBuilder, UserInput, collate
from tests.core.conftest import fake_mels, make_config


def test_table5_prompts_verbatim():
    assert MODES["S2M"].system_prompt == MODES["T2M"].system_prompt
    assert MODES["S2M"].system_prompt == (
        "You are a helpful assistant and asked to generate both text and speech tokens at the same time."
    )
    assert MODES["T2T"].system_prompt == "You are a helpful assistant and asked to generate text tokens."
    assert MODES["SUC"].system_prompt.startswith("You are a helpful assistant. Let’s think step by step.")
    assert get_mode("stc").has_transcript and get_mode("STC").has_draft
    with pytest.raises(ValueError, match="expected one of"):
        get_mode("X2Y")


def test_chain_text_round_trip():
    for name in ("STC", "SAC", "SUC"):
        m = get_mode(name)
        text = chain_text(m, "what is two plus two", "two plus two is four.")
        t, d = split_chain_text(m, text)
        assert t == ("what is two plus two" if m.has_transcript else "")
        assert d == ("two plus two is four." if m.has_draft else "")


def test_parallel_layout_with_delay_hand_checked(tokenizer):
    """k=2, delay=1, reply text of 2 tokens, 3 speech tokens.

    speech + eos = [7, 8, 9, eos] -> groups g0=[7,8], g1=[9,eos]
    text stream x = [r0, r1, im_end]; steps = max(3, 1 + 2) = 3
    step 0 (audio_bos position): text target r0, speech target none (delay)
    step 1: input r0 + pad-group, targets r1, g0
    step 2: input r1 + g0, targets im_end, g1
    """
    cfg = make_config(tokenizer, group_size=2, speech_delay=1, user_audio="discrete")
    b = SequenceBuilder(cfg, tokenizer)
    reply = "hello there"
    r = tokenizer.encode(reply, add_special_tokens=False)
    assert len(r) == 2
    ex = b.example(Sample("T2M", UserInput(text="hello"), reply, [7, 8, 9]))
    ids = cfg.special_token_ids
    pad, eos = cfg.speech_pad, cfg.speech_eos
    p0 = int((ex.input_ids == ids["audio_bos"]).nonzero()[-1])
    assert len(ex) == p0 + 3
    assert ex.text_targets[p0:].tolist() == [r[0], r[1], ids["im_end"]]
    assert (ex.text_targets[:p0] == IGNORE).all()
    assert ex.input_ids[p0 + 1 :].tolist() == [r[0], r[1]]
    assert ex.speech_input_mask[p0 + 1 :].all() and not ex.speech_input_mask[: p0 + 1].any()
    assert ex.speech_inputs[p0 + 1].tolist() == [pad, pad]
    assert ex.speech_inputs[p0 + 2].tolist() == [7, 8]
    assert ex.speech_targets[p0].tolist() == [IGNORE, IGNORE]
    assert ex.speech_targets[p0 + 1].tolist() == [7, 8]
    assert ex.speech_targets[p0 + 2].tolist() == [9, eos]


def test_text_pads_with_sil_when_speech_is_longer(tokenizer):
    cfg = make_config(tokenizer, group_size=5, user_audio="discrete")
    b = SequenceBuilder(cfg, tokenizer)
    ex = b.example(Sample("T2M", UserInput(text="hello"), "ok", list(range(30))))
    ids = cfg.special_token_ids
    targets = ex.text_targets[ex.text_targets != IGNORE].tolist()
    n_groups = 7  # 30 tokens + eos -> 31 -> 7 groups of 5
    assert len(targets) == n_groups
    assert targets[targets.index(ids["im_end"]) + 1 :] == [ids["sil"]] * (
        n_groups - len(targets[: targets.index(ids["im_end"]) + 1])
    )
    assert (ex.speech_targets[..., 0] != IGNORE).sum() == n_groups


def test_chain_modes_put_text_phase_before_audio_bos(tokenizer):
    cfg = make_config(tokenizer, user_audio="discrete")
    b = SequenceBuilder(cfg, tokenizer)
    ids = cfg.special_token_ids
    s = Sample(
        "STC", UserInput(speech_tokens=list(range(12))), "four.", list(range(8)), transcript="two plus two"
    )
    ex = b.example(s)
    targets = ex.text_targets[ex.text_targets != IGNORE].tolist()
    phase = tokenizer.encode("two plus two\nfour.", add_special_tokens=False)
    assert targets[: len(phase) + 1] == phase + [ids["audio_bos"]]
    # the user speech occupies ceil(12 / 5) = 3 <|AUDIO|> positions fed with grouped tokens
    audio = ex.input_ids == ids["audio"]
    assert int(audio.sum()) == 3 and ex.speech_input_mask[audio].all()


def test_text_only_reply_and_continuous_audio_positions(tokenizer):
    cfg = make_config(tokenizer)
    b = SequenceBuilder(cfg, tokenizer)
    ids = cfg.special_token_ids
    mels = fake_mels(2.0)  # 200 frames -> 100 encoder frames -> 10 positions at 5 Hz
    ex = b.example(Sample("S2T", UserInput(mels=mels), "paris."))
    assert int((ex.input_ids == ids["audio"]).sum()) == 10
    assert len(ex.mels) == 1
    targets = ex.text_targets[ex.text_targets != IGNORE].tolist()
    assert targets == tokenizer.encode("paris.", add_special_tokens=False) + [ids["im_end"]]
    assert (ex.speech_targets == IGNORE).all()


def test_missing_inputs_are_clear_errors(tokenizer):
    b = SequenceBuilder(make_config(tokenizer), tokenizer)
    with pytest.raises(ValueError, match="speech input"):
        b.prompt("S2M", UserInput(text="hi"))
    with pytest.raises(ValueError, match="text input"):
        b.prompt("T2T", UserInput(mels=fake_mels(1.0)))
    with pytest.raises(ValueError, match="speech tokens"):
        b.example(Sample("T2M", UserInput(text="hi"), "ok", []))
    with pytest.raises(ValueError, match="transcript_only needs STC or SUC"):
        b.example(Sample("S2T", UserInput(mels=fake_mels(1.0)), "", transcript="hi", transcript_only=True))


def test_collate_pads_right(tokenizer):
    cfg = make_config(tokenizer, user_audio="discrete")
    b = SequenceBuilder(cfg, tokenizer)
    e1 = b.example(Sample("T2T", UserInput(text="hi"), "ok"))
    e2 = b.example(Sample("T2M", UserInput(text="hello there"), "ok then", list(range(9))))
    batch = collate([e1, e2], tokenizer.pad_token_id, cfg.speech_pad)
    assert batch.input_ids.shape == (2, max(len(e1), len(e2)))
    assert batch.attention_mask[0].sum() == len(e1) and batch.attention_mask[1].sum() == len(e2)
    assert (batch.text_targets[0, len(e1) :] == IGNORE).all()
    assert torch.equal(batch.speech_targets[1, : len(e2)], e2.speech_targets)


def test_generated_ids_are_laid_out_verbatim(tokenizer):
    """reply_ids / chain_ids replace re-encoding the texts: a reply generated character by character
    keeps its ids even though encoding its decoded text gives other (merged) tokens. A generated
    speech stream may be empty (eos first): one group [eos, pad, ...]."""
    cfg = make_config(tokenizer, group_size=2, user_audio="discrete")
    b = SequenceBuilder(cfg, tokenizer)
    ids = cfg.special_token_ids
    chars = [tokenizer.convert_tokens_to_ids(c) for c in "paris"]
    assert chars != tokenizer.encode("paris", add_special_tokens=False)
    ex = b.example(Sample("T2T", UserInput(text="hi"), "ignored", reply_ids=chars))
    assert ex.text_targets[ex.text_targets != IGNORE].tolist() == chars + [ids["im_end"]]

    chain = [chars[0], chars[1]]
    s = Sample("SAC", UserInput(speech_tokens=[1, 2]), "ignored", [5, 6, 7], reply_ids=chars, chain_ids=chain)
    targets = b.example(s).text_targets
    targets = targets[targets != IGNORE].tolist()
    assert targets[:3] == chain + [ids["audio_bos"]]
    assert targets[3:9] == chars + [ids["im_end"]]

    ex = b.example(Sample("T2M", UserInput(text="hi"), "", [], reply_ids=chars[:1]))
    groups = ex.speech_targets[ex.speech_targets[:, 0] != IGNORE].tolist()
    assert groups == [[cfg.speech_eos, cfg.speech_pad]]
    assert ex.text_targets[ex.text_targets != IGNORE].tolist() == chars[:1] + [ids["im_end"]]


def test_a_reply_without_text_targets_needs_a_non_chain_speaking_mode(tokenizer):
    cfg = make_config(tokenizer, group_size=2, user_audio="discrete")
    b = SequenceBuilder(cfg, tokenizer)
    speech = UserInput(speech_tokens=[1, 2, 3, 4])
    for mode, user in (("T2T", UserInput(text="hi")), ("STC", speech), ("S2T", speech)):
        with pytest.raises(ValueError, match="needs S2M or T2M"):
            b.example(Sample(mode, user, "hello there", [7, 8], transcript="hi", text_target=False))
    assert len(b.example(Sample("S2M", speech, "hello there", [7, 8], text_target=False)))
