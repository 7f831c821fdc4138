"""The text guide: a speaking mode's parallel text drawn with its text-only twin of the same turn."""

import pytest
import torch

from core.generate import DrVoiceGenerator
from core.mel_views import VIEWS, mel_view
from core.sampling import SamplingConfig
from core.sequence import SequenceBuilder, UserInput
from tests.core.conftest import fake_mels, make_model


@pytest.fixture
def setup(tokenizer):
    model = make_model(tokenizer, seed=5)
    with torch.no_grad():  # at the default init the reply does not depend on the prompt at all
        for w in model.llm.parameters():
            if w.dim() == 2:
                w.normal_(0.0, 0.3, generator=torch.Generator().manual_seed(w.numel()))
    builder = SequenceBuilder(model.config, tokenizer)
    user = UserInput(mels=fake_mels(1.3, seed=2))
    return model, DrVoiceGenerator(model), builder.prompt("S2M", user), builder.prompt("S2T", user)


def _steps(gen, prompt, mode, weight=0.0, guides=(), decode="lean", steps=16):
    sampling = SamplingConfig(max_new_steps=steps, text_guide=weight)
    return [
        (s.kind, s.text_token, tuple(s.speech_tokens))
        for s in gen.stream(prompt, mode, sampling, decode=decode, matmul="fp32", guides=guides)
    ]


def _text(steps):
    return [t for _, t, _ in steps if t is not None]


def test_a_full_guide_writes_the_twins_text_and_the_speech_still_comes(setup):
    _, gen, s2m, s2t = setup
    twin = _text(_steps(gen, s2t, "S2T"))  # one text token per step in both modes
    assert _text(_steps(gen, s2m, "S2M")) != twin  # S2M writes otherwise alone: the guide can be seen
    for decode in ("lean", "cached", "uncached"):
        guided = _steps(gen, s2m, "S2M", 1.0, [s2t], decode=decode)
        assert _text(guided) == twin, decode
        assert sum(len(c) for _, _, c in guided) > 0  # the speaking mode still speaks


def test_a_half_guide_mixes_both_log_probabilities(setup):
    model, gen, s2m, s2t = setup
    with torch.no_grad():
        scores = []
        for prompt, mask in ((s2m, gen.parallel_mask), (s2t, gen.text_only_mask)):
            emb = model.embed_inputs(
                prompt.input_ids[None],
                prompt.speech_inputs[None],
                prompt.speech_input_mask[None],
                prompt.mels,
            )
            logits = model.llm.lm_head(gen._llm_forward(emb)[0, -1]).float() + mask
            scores.append(torch.log_softmax(logits, -1))
    first = int((0.5 * scores[0] + 0.5 * scores[1]).argmax())
    assert first != int(scores[0].argmax())  # the mix differs from S2M alone at its first token
    lean = _steps(gen, s2m, "S2M", 0.5, [s2t])
    assert lean[0][1] == first
    assert lean == _steps(gen, s2m, "S2M", 0.5, [s2t], decode="uncached")
    assert _steps(gen, s2m, "S2M", 0.0, [s2t]) == _steps(gen, s2m, "S2M")  # weight 0: guide ignored


def test_text_modes_ignore_guides(setup):
    _, gen, _, s2t = setup
    assert _steps(gen, s2t, "S2T", 1.0, [s2t]) == _steps(gen, s2t, "S2T")


def test_with_views_the_speech_comes_from_their_mean_hidden_state(setup, tokenizer):
    """The twin fixes the text, so views can change only the speech: through the SRH's condition."""
    model, gen, s2m, s2t = setup
    with torch.no_grad():  # an SRH that speaks for longer than one code before its end
        for w in [*model.srh.parameters(), *model.ungrouping.parameters()]:
            if w.dim() == 2:
                w.normal_(0.0, 0.3, generator=torch.Generator().manual_seed(w.numel() + 1))
    builder = SequenceBuilder(model.config, tokenizer)
    other = builder.prompt("S2M", UserInput(mels=mel_view(fake_mels(1.3, seed=2), *VIEWS[1])))  # slower

    def run(views):
        sampling = SamplingConfig(max_new_steps=16, text_guide=1.0)
        steps = gen.stream(s2m, "S2M", sampling, matmul="fp32", views=views, guides=[s2t])
        return [(s.text_token, tuple(s.speech_tokens)) for s in steps]

    plain = run([])
    assert sum(len(c) for _, c in plain) > 5
    assert run([s2m]) == plain  # a view identical to the prompt leaves the mean where it was
    mixed = run([other])
    assert [t for t, _ in mixed] == [t for t, _ in plain]  # the twin's text either way
    assert [c for _, c in mixed] != [c for _, c in plain]  # the other view moved the speech
