import torch

from core.generate import DrVoiceGenerator
from core.sequence import Sample, SequenceBuilder, UserInput, collate
from tests.core.conftest import fake_mels, make_model


def test_overfit_one_speech_to_speech_sample_reproduces_it_in_s2m():
    """A few hundred steps on one S2M sample; greedy decoding then gives back exactly its reply text and
    speech tokens and stops cleanly on end of text and end of speech. This also checks that training and
    generation agree on every position of the layout (core/sequence.py)."""
    from core.text_tokenizer import train_bpe_tokenizer
    from tests.core.conftest import CORPUS

    tokenizer = train_bpe_tokenizer(CORPUS, vocab_size=400)
    model = make_model(tokenizer, seed=0, speech_delay=1, llm_hidden=48, srh_hidden=48)
    g = torch.Generator().manual_seed(1)
    reply_speech = torch.randint(0, 40, (23,), generator=g).tolist()
    sample = Sample("S2M", UserInput(mels=fake_mels(1.5, seed=4)), "three plus four is seven.", reply_speech)
    builder = SequenceBuilder(model.config, tokenizer)
    batch = collate([builder.example(sample)], tokenizer.pad_token_id, model.config.speech_pad)

    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    for _ in range(300):
        loss = model(batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    assert loss.item() < 0.05

    prompt = builder.prompt("S2M", UserInput(mels=sample.user.mels))
    steps = list(DrVoiceGenerator(model).stream(prompt, "S2M"))
    text = [s.text_token for s in steps if s.text_token is not None]
    speech = [c for s in steps for c in s.speech_tokens]
    ids = model.config.special_token_ids
    assert text == tokenizer.encode(sample.reply_text, add_special_tokens=False) + [ids["im_end"]]
    assert speech == reply_speech
    assert steps[-1].text_done and steps[-1].speech_done
