"""A tiny DrVoice checkpoint that answers one question in all seven modes (for app tests and benchmarks).

    path, question_wav = build_tiny_checkpoint(out_dir)

The model (LLM 2x48, SRH 1x48) is overfitted in ~15 s on one CPU thread on a single spoken
question (flite voice "kal") and its reply (flite voice "slt" through a 40-unit codec), in every
mode, then saved with ``core.checkpoint.save_pretrained`` exactly like a real checkpoint.
"""

from __future__ import annotations

from pathlib import Path

QUESTION = "what is three plus four?"
REPLY = "three plus four is seven."
STEPS = 250  # Adam steps; the loss ends below 0.05, so every mode answers REPLY greedily


def build_tiny_checkpoint(out_dir: str | Path, steps: int = STEPS) -> tuple[Path, Path]:
    """Trains and saves the checkpoint under ``out_dir/tiny``; returns (checkpoint dir, question wav)."""
    import torch

    from core.audio import load_audio, save_wav
    from core.checkpoint import save_pretrained
    from core.codec.units import UnitsCodec
    from core.encoder import log_mel
    from core.modes import MODE_NAMES
    from core.sequence import Sample, SequenceBuilder, UserInput, collate
    from core.text_tokenizer import train_bpe_tokenizer
    from tests.core.conftest import CORPUS, SPEECH_VOCAB, flite_speech, make_model

    out_dir = Path(out_dir)
    tokenizer = train_bpe_tokenizer(CORPUS, vocab_size=400)
    codec = UnitsCodec.fit([flite_speech(s) for s in CORPUS[:5]], SPEECH_VOCAB, kmeans_iters=10)
    question = flite_speech(QUESTION, voice="kal")
    question_wav = save_wav(out_dir / "question.wav", question)

    model = make_model(tokenizer, seed=7, llm_hidden=48, srh_hidden=48)
    reply_tokens = codec.encode(flite_speech(REPLY)).tolist()
    user = UserInput(text=QUESTION, mels=log_mel(load_audio(question), 80))
    builder = SequenceBuilder(model.config, tokenizer)
    examples = [
        builder.example(Sample(m, user, REPLY, reply_tokens, transcript=QUESTION)) for m in MODE_NAMES
    ]
    batch = collate(examples, tokenizer.pad_token_id, model.config.speech_pad)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    model.train()
    for _ in range(steps):
        loss = model(batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    if loss.item() > 0.05:
        raise RuntimeError(f"the tiny checkpoint did not fit its one example (loss {loss.item():.3f})")
    path = save_pretrained(out_dir / "tiny", model.eval(), tokenizer, codec=codec)
    return Path(path), Path(question_wav)
