import pytest
import torch

from core.sequence import IGNORE, Sample, SequenceBuilder, UserInput, collate
from tests.core.conftest import fake_mels, make_model

MODES_SAMPLES = {
    "S2M": dict(user=UserInput(mels=fake_mels(1.0)), reply_speech=list(range(12))),
    "S2T": dict(user=UserInput(mels=fake_mels(0.7))),
    "T2M": dict(user=UserInput(text="hello"), reply_speech=list(range(7))),
    "T2T": dict(user=UserInput(text="hello")),
    "STC": dict(user=UserInput(mels=fake_mels(1.0)), reply_speech=list(range(9)), transcript="hi there"),
    "SAC": dict(user=UserInput(mels=fake_mels(1.0)), reply_speech=list(range(9))),
    "SUC": dict(user=UserInput(mels=fake_mels(1.0)), reply_speech=list(range(9)), transcript="hi"),
}


def _batch(model, tokenizer, modes=MODES_SAMPLES):
    b = SequenceBuilder(model.config, tokenizer)
    exs = [
        b.example(Sample(mode, reply_text="three plus four is seven.", **kw)) for mode, kw in modes.items()
    ]
    return collate(exs, tokenizer.pad_token_id, model.config.speech_pad)


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"grouping": "mean", "combine": "mean"},
        {"speech_delay": 2, "srh_text_condition": True},
        {"speech_delay": 1, "srh_text_embedding": True},
        {"group_size": 1},
    ],
)
def test_forward_all_modes_and_options(tokenizer, overrides):
    model = make_model(tokenizer, **overrides).train()
    out = model(_batch(model, tokenizer))
    assert torch.isfinite(out.loss) and out.text_tokens > 0 and out.speech_tokens > 0
    torch.testing.assert_close(out.loss, out.text_loss + out.speech_loss)
    out.loss.backward()
    assert model.srh.head.weight.grad.abs().sum() > 0
    assert model.speech_grouping.proj.weight.grad.abs().sum() > 0
    assert model.encoder.adapter[0].weight.grad.abs().sum() > 0
    assert model.encoder.whisper.conv1.weight.grad.abs().sum() > 0


def test_loss_weights_lambda_mu(tokenizer):
    model = make_model(tokenizer, text_loss_weight=0.3, speech_loss_weight=2.0)
    out = model(_batch(model, tokenizer))
    torch.testing.assert_close(out.loss, 0.3 * out.text_loss + 2.0 * out.speech_loss)


def test_loss_is_on_assistant_positions_only(tokenizer):
    """Changing the prompt's text targets region (which carries IGNORE) cannot change the loss, and the
    loss equals a hand-assembled cross-entropy over the assistant targets."""
    model = make_model(tokenizer)
    batch = _batch(model, tokenizer, {"T2T": MODES_SAMPLES["T2T"]})
    out = model(batch)
    targets = batch.text_targets[0]
    first = int((targets != IGNORE).nonzero()[0])
    assert (targets[:first] == IGNORE).all()
    emb = model.embed_inputs(batch.input_ids, batch.speech_inputs, batch.speech_input_mask, batch.mels)
    logits = model.llm(inputs_embeds=emb).logits[0]
    mask = targets != IGNORE
    ref = torch.nn.functional.cross_entropy(logits[mask], targets[mask])
    torch.testing.assert_close(out.text_loss, ref, atol=1e-5, rtol=1e-5)
    assert out.speech_tokens == 0


def test_sequence_logprobs_match_losses(tokenizer):
    model = make_model(tokenizer)
    batch = _batch(model, tokenizer, {"T2M": MODES_SAMPLES["T2M"]})
    out, lp = model(batch), model.sequence_logprobs(batch)
    torch.testing.assert_close(-lp.text[0] / lp.text_count[0], out.text_loss, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(-lp.speech[0] / lp.speech_count[0], out.speech_loss, atol=1e-5, rtol=1e-5)
    assert int(lp.speech_count[0]) == 8  # 7 codes + eos (pad is not scored)


def test_batch_padding_does_not_change_per_sample_logprobs(tokenizer):
    model = make_model(tokenizer)
    full = model.sequence_logprobs(_batch(model, tokenizer))
    for i, mode in enumerate(MODES_SAMPLES):
        alone = model.sequence_logprobs(_batch(model, tokenizer, {mode: MODES_SAMPLES[mode]}))
        torch.testing.assert_close(full.total[i], alone.total[0], atol=1e-4, rtol=1e-5)


def test_discrete_user_audio(tokenizer):
    model = make_model(tokenizer, user_audio="discrete")
    assert model.encoder is None
    b = SequenceBuilder(model.config, tokenizer)
    ex = b.example(Sample("S2M", UserInput(speech_tokens=list(range(11))), "ok", list(range(6))))
    out = model(collate([ex], tokenizer.pad_token_id, model.config.speech_pad))
    assert torch.isfinite(out.loss)


def test_speech_input_dropout_leaves_whole_groups_out_in_training_only(tokenizer):
    model = make_model(tokenizer, speech_input_dropout=0.5)
    batch = _batch(model, tokenizer, {"T2M": MODES_SAMPLES["T2M"]})
    args = (batch.input_ids, batch.speech_inputs, batch.speech_input_mask, batch.mels)
    text_only = model.text_embed(batch.input_ids)[batch.speech_input_mask]
    with torch.no_grad():
        model.eval()
        served = model.embed_inputs(*args)[batch.speech_input_mask]
        model.train()
        torch.manual_seed(0)
        trained = model.embed_inputs(*args)[batch.speech_input_mask]
    dropped = (trained == text_only).all(-1)
    assert not bool((served == text_only).all(-1).any())  # inference always hears its speech
    assert 0 < int(dropped.sum()) < len(dropped)  # some groups dropped, not all
    torch.testing.assert_close(trained[~dropped], served[~dropped])  # the rest untouched, not rescaled
    with pytest.raises(ValueError, match="speech_input_dropout"):
        make_model(tokenizer, speech_input_dropout=1.0)


def test_srh_text_condition_adds_the_input_token_at_the_hidden_scale(tokenizer):
    plain = make_model(tokenizer, seed=5)
    cond = make_model(tokenizer, seed=5, srh_text_condition=True)
    hidden = torch.randn(3, plain.config.llm_hidden_size) * 4.0
    hidden[2] = hidden[0]
    ids = torch.tensor([7, 8, 7])
    base, with_text = plain.srh_condition(hidden, ids), cond.srh_condition(hidden, ids)
    assert torch.equal(plain.srh_condition(hidden, ids.flip(0)), base)  # off: the token is not read
    torch.testing.assert_close(with_text[0], with_text[2])  # same hidden row + same token
    assert not torch.allclose(with_text[0], cond.srh_condition(hidden[:1], torch.tensor([9]))[0])
    # the added term is the final-normed embedding: rms ~ the norm's weight (1.0 at init), not the
    # embedding's own ~0.02 scale, so W_p can read it next to the hidden state
    added = cond.ungrouping.proj.weight.pinverse() @ (with_text - base).reshape(3, -1)[0]
    rms = added.pow(2).mean().sqrt().item()
    assert 0.5 < rms < 2.0, rms
    # the SRH loss does not train the embedding through this path
    emb = cond.llm.get_input_embeddings().weight
    cond.srh_condition(hidden, ids).sum().backward()
    assert emb.grad is None or emb.grad.abs().sum() == 0


def test_srh_text_embedding_starts_silent_and_learns_from_the_speech_loss(tokenizer):
    """Added at zero, the SRH text embedding leaves every loss as it was; the speech loss then trains
    the rows of the tokens the reply emits with its groups (and <|sil|> after the text), no others."""
    plain = make_model(tokenizer, seed=6).train()
    model = make_model(tokenizer, seed=6, srh_text_embedding=True).train()
    missing, unexpected = model.load_state_dict(plain.state_dict(), strict=False)
    assert missing == ["srh_text.weight"] and not unexpected
    assert torch.count_nonzero(model.srh_text.weight) == 0
    long_speech = dict(user=UserInput(text="hello"), reply_speech=list(range(40)))  # outlasts the text
    batch = _batch(model, tokenizer, {**MODES_SAMPLES, "T2M": long_speech})
    torch.manual_seed(0)
    before = plain(batch)
    torch.manual_seed(0)
    out = model(batch)
    torch.testing.assert_close(out.loss, before.loss)
    out.speech_loss.backward()
    grad_rows = set(model.srh_text.weight.grad.abs().sum(-1).nonzero().squeeze(-1).tolist())
    owns = batch.speech_targets[..., 0] != IGNORE
    emitted = set(batch.text_targets[owns].tolist()) - {IGNORE}
    assert emitted and grad_rows == emitted
    assert model.config.special_token_ids["sil"] in grad_rows  # emitted while the T2M speech goes on
    with torch.no_grad():
        model.srh_text.weight.normal_()
    assert not torch.allclose(model(batch).speech_loss, before.speech_loss)  # now it is read


def test_srh_text_embedding_reads_the_emitted_text_of_a_reply_without_text_targets(tokenizer):
    """A reply whose text is an input only (`Sample.text_target` False) has no text loss; the SRH
    text embedding still reads the tokens it emits (the next inputs), so its speech loss is that
    of the same reply with text targets."""
    model = make_model(tokenizer, seed=3, srh_text_embedding=True).eval()
    with torch.no_grad():
        model.srh_text.weight.normal_()
    b = SequenceBuilder(model.config, tokenizer)
    kw = dict(mode="T2M", user=UserInput(text="hello"), reply_text="three plus four is seven.")
    short, long = list(range(7)), list(range(40))  # the speech ends before / after the text
    for speech in (short, long):
        with_text = b.example(Sample(**kw, reply_speech=speech))
        speech_only = b.example(Sample(**kw, reply_speech=speech, text_target=False))
        padded = b.example(Sample(**kw, reply_speech=long + long[:20]))  # a longer neighbour pads it
        out = model(collate([with_text, padded], tokenizer.pad_token_id, model.config.speech_pad))
        alone = model(collate([speech_only, padded], tokenizer.pad_token_id, model.config.speech_pad))
        assert alone.text_tokens == out.text_tokens - int((with_text.text_targets != IGNORE).sum())
        torch.testing.assert_close(alone.speech_loss, out.speech_loss)


def test_text_input_scale_scales_only_the_reply_text_term(tokenizer):
    """c = s E_text + G (eq. 1 with the text term scaled) at the reply positions; the prompt is as before."""
    plain = make_model(tokenizer, seed=4)
    scaled = make_model(tokenizer, seed=4, text_input_scale=4.0)
    batch = _batch(plain, tokenizer, {"T2M": MODES_SAMPLES["T2M"]})
    args = (batch.input_ids, batch.speech_inputs, batch.speech_input_mask, batch.mels)
    mask = batch.speech_input_mask
    with torch.no_grad():
        a, b = plain.embed_inputs(*args), scaled.embed_inputs(*args)
        text = plain.text_embed(batch.input_ids)
    assert mask.any() and (~mask).any()
    torch.testing.assert_close(b[~mask], a[~mask])
    torch.testing.assert_close(b[mask] - a[mask], 3.0 * text[mask])
    with pytest.raises(ValueError, match="text_input_scale"):
        make_model(tokenizer, text_input_scale=0.0)
