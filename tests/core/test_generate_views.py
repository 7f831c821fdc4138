"""The generator's audio views: text drawn from the mean log-probability of several prompts."""

import torch

from core.generate import DrVoiceGenerator
from core.kv_decoder import KVDecoder
from core.mel_views import VIEWS, mel_view
from core.sampling import SamplingConfig
from core.sequence import SequenceBuilder, UserInput
from tests.core.conftest import fake_mels, make_model


def _setup(tokenizer, mode):
    model = make_model(tokenizer, seed=5)
    with torch.no_grad():  # at the default init the reply does not depend on the audio at all
        for w in model.llm.parameters():
            if w.dim() == 2:
                w.normal_(0.0, 0.3, generator=torch.Generator().manual_seed(w.numel()))
    gen = DrVoiceGenerator(model)
    b = SequenceBuilder(model.config, tokenizer)
    mels = fake_mels(1.3, seed=2)
    prompts = [b.prompt(mode, UserInput(mels=mel_view(mels, *view))) for view in VIEWS[:3]]
    return model, gen, prompts


def _tokens(gen, prompt, mode, views=(), decode="lean", steps=10):
    sampling = SamplingConfig(max_new_steps=steps)
    return [
        (s.kind, s.text_token, tuple(s.speech_tokens))
        for s in gen.stream(prompt, mode, sampling, decode=decode, matmul="fp32", views=views)
    ]


@torch.no_grad()
def _reference(model, gen, prompts, steps):
    """Greedy S2T text by re-running every prompt and the reply so far, averaging log-softmaxes."""
    end = model.config.special_token_ids["im_end"]
    reply: list[int] = []
    for _ in range(steps):
        scores = []
        for p in prompts:
            emb = model.embed_inputs(
                p.input_ids[None], p.speech_inputs[None], p.speech_input_mask[None], p.mels
            )
            if reply:
                emb = torch.cat([emb, model.text_embed(torch.tensor([reply]))], dim=1)
            logits = model.llm.lm_head(gen._llm_forward(emb)[0, -1]).float() + gen.text_only_mask
            scores.append(torch.log_softmax(logits, -1))
        tok = int(torch.stack(scores).mean(0).argmax())
        reply.append(tok)
        if tok == end:
            break
    return reply


def test_text_follows_the_mean_log_probability_of_the_views(tokenizer):
    model, gen, prompts = _setup(tokenizer, "S2T")
    assert len({len(p) for p in prompts}) == 3  # the tempo views are shorter and longer
    want = _reference(model, gen, prompts, steps=10)
    for decode in ("lean", "cached", "uncached"):
        got = _tokens(gen, prompts[0], "S2T", views=prompts[1:], decode=decode)
        assert [t for _, t, _ in got] == want, decode
    alone = [t for _, t, _ in _tokens(gen, prompts[0], "S2T")]
    assert alone != want  # the views changed the reply: the test can see whether they are used


def test_views_of_the_same_speech_change_nothing_in_a_speaking_mode(tokenizer):
    """Identical views average to the same distribution: every text and speech token stays."""
    _, gen, prompts = _setup(tokenizer, "S2M")
    plain = _tokens(gen, prompts[0], "S2M", steps=16)
    assert _tokens(gen, prompts[0], "S2M", views=[prompts[0], prompts[0]], steps=16) == plain
    assert sum(len(c) for _, _, c in plain) > 0
    # other views run in the parallel phase too, the lean path as the slow reference does
    lean = _tokens(gen, prompts[0], "S2M", views=prompts[1:], steps=16)
    assert lean == _tokens(gen, prompts[0], "S2M", views=prompts[1:], decode="uncached", steps=16)


def test_a_chain_mode_draws_its_draft_from_the_views(tokenizer):
    """SAC: the text phase is an ensemble like S2T; the lean path agrees with the slow reference."""
    _, gen, prompts = _setup(tokenizer, "SAC")
    with_views = _tokens(gen, prompts[0], "SAC", views=prompts[1:], steps=16)
    assert with_views == _tokens(gen, prompts[0], "SAC", views=prompts[1:], decode="uncached", steps=16)
    assert with_views[0][0] == "text"


def test_the_lean_path_shares_the_leading_text_and_steps_the_views_as_rows(tokenizer, monkeypatch):
    """The views' system prompt is copied from the plain prompt's cache, not computed again; the
    rest of the views is filled in one padded call, and every step advances all the views in one
    call (one row each)."""
    _, gen, prompts = _setup(tokenizer, "S2T")
    calls = []
    real = KVDecoder.__call__

    def spy(self, embeds, row=None, counts=None):
        calls.append((len(self.lengths), row, tuple(embeds.shape[:2]), counts))
        return real(self, embeds, row, counts)

    monkeypatch.setattr(KVDecoder, "__call__", spy)
    got = _tokens(gen, prompts[0], "S2T", views=prompts[1:], steps=6)
    lead = prompts[0].input_ids.tolist().index(gen.ids["audio"])
    assert lead > 5
    fills = [c for c in calls if c[2][1] > 1]
    rest = [len(prompts[1]) - lead, len(prompts[2]) - lead]
    assert fills == [(1, None, (1, len(prompts[0])), None), (2, None, (2, max(rest)), rest)]
    together = [c for c in calls if c[0] == 2 and c[2][1] == 1]
    assert len(together) == len(got) and all(c[1] is None and c[2][0] == 2 for c in together)


def test_a_view_that_reaches_the_budget_is_dropped_and_the_reply_goes_on(tokenizer, monkeypatch):
    """A much slowed view is the longest prompt: when its next position would pass the budget it is
    dropped (no row is left) and the reply goes on from the plain prompt alone."""
    model, gen, prompts = _setup(tokenizer, "S2T")
    slow = SequenceBuilder(model.config, tokenizer).prompt(
        "S2T", UserInput(mels=mel_view(fake_mels(1.3, seed=2), 0.6, 1))
    )
    assert len(slow) > len(prompts[0]) + 3
    model.config.max_positions = len(slow) + 2  # the view has room for 2 reply steps, the prompt for 6
    fed: dict[int, int] = {}  # decoder -> calls, in the order the decoders were made
    real = KVDecoder.__call__

    def spy(self, embeds, row=None, counts=None):
        fed[id(self)] = fed.get(id(self), 0) + 1
        return real(self, embeds, row, counts)

    monkeypatch.setattr(KVDecoder, "__call__", spy)
    got = list(gen.stream(prompts[0], "S2T", SamplingConfig(max_new_steps=6), views=[slow]))
    assert len(got) == 6
    assert list(fed.values()) == [1 + 6, 1 + 2]  # the view: its fill and 2 steps, then dropped
