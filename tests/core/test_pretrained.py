"""Loaders of the pretrained parts, on tiny random checkpoints written in the official layouts."""

from __future__ import annotations

import pytest
import torch

from core.config import DrVoiceConfig
from core.encoder import EncoderConfig, SpeechEncoder
from core.hub import MissingFilesError, UnsafeWeightsError
from core.model import DrVoiceModel
from core.pretrained import (
    hf_config_dict,
    load_llm_for_drvoice,
    load_whisper_encoder,
    load_whisper_into,
    srh_config_from_qwen,
    srh_init_from_qwen,
)
from core.text_tokenizer import CHAT_TOKENS, DRVOICE_TOKENS, END_OF_TEXT, IM_END, SpecialTokenIds

WHISPER_DIMS = dict(n_mels=80, n_audio_ctx=1500, n_audio_state=64, n_audio_head=2, n_audio_layer=2)
TEXTS = ["hello there, how are you?", "the capital of france is paris.", "one two three four five"] * 3


class Opaque:  # a class a weights-only unpickler refuses
    pass


def tiny_hf_whisper(directory):
    """A tiny `openai/whisper-large-v3`-layout directory (WhisperForConditionalGeneration, safetensors)."""
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    config = WhisperConfig(
        vocab_size=100,
        num_mel_bins=80,
        d_model=64,
        encoder_layers=2,
        encoder_attention_heads=2,
        encoder_ffn_dim=256,  # openai-whisper's MLP is 4 x width
        decoder_layers=1,
        decoder_attention_heads=2,
        decoder_ffn_dim=256,
        max_source_positions=1500,
        max_target_positions=32,
        decoder_start_token_id=1,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(config).eval()
    model.save_pretrained(directory)
    return model


def test_hf_whisper_layout_gives_the_transformers_encoder_output(tmp_path):
    hf = tiny_hf_whisper(tmp_path / "whisper")
    dims, weights = load_whisper_encoder(tmp_path / "whisper")
    assert dims == WHISPER_DIMS
    encoder = SpeechEncoder(EncoderConfig(llm_hidden_size=32, adapter_hidden=32, **dims)).eval()
    encoder.whisper.load_state_dict(weights, strict=True)  # every parameter mapped, nothing extra
    mel = torch.randn(1, 80, 3000) * 0.5  # one 30 s window
    with torch.no_grad():
        expected = hf.model.encoder(mel).last_hidden_state
        ours = encoder.whisper(mel)
    torch.testing.assert_close(ours, expected, atol=1e-4, rtol=1e-4)


def test_openai_checkpoint_format(tmp_path):
    import whisper.model

    dims = whisper.model.ModelDimensions(
        n_vocab=100, n_text_ctx=32, n_text_state=64, n_text_head=2, n_text_layer=1, **WHISPER_DIMS
    )
    torch.manual_seed(1)
    model = whisper.model.Whisper(dims)
    path = tmp_path / "tiny.pt"
    torch.save({"dims": dims.__dict__, "model_state_dict": model.state_dict()}, path)
    got_dims, weights = load_whisper_encoder(path)
    assert got_dims == WHISPER_DIMS
    expected = model.encoder.state_dict()
    assert sorted(weights) == sorted(expected)
    assert all(torch.equal(weights[k], expected[k]) for k in expected)
    encoder = SpeechEncoder(EncoderConfig(llm_hidden_size=32, adapter_hidden=32, **WHISPER_DIMS))
    load_whisper_into(encoder, path)
    wrong = SpeechEncoder(
        EncoderConfig(llm_hidden_size=32, adapter_hidden=32, **{**WHISPER_DIMS, "n_audio_layer": 1})
    )
    with pytest.raises(ValueError, match="encoder dims"):
        load_whisper_into(wrong, path)
    torch.save({"dims": dims.__dict__, "model_state_dict": model.state_dict(), "extra": Opaque()}, path)
    with pytest.raises(UnsafeWeightsError, match="tiny.pt"):
        load_whisper_encoder(path)


def make_qwen_dir(
    directory, tokenizer_vocab: int = 320, spare_rows: int = 0, hidden: int = 32, tie: bool = True, seed=0
):
    """A tiny Qwen2 causal LM + byte-level BPE tokenizer (ChatML tokens only) saved like a hub repo."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=tokenizer_vocab,
        special_tokens=list(CHAT_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(TEXTS, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token=IM_END, pad_token=END_OF_TEXT)
    config = Qwen2Config(
        vocab_size=len(tokenizer) + spare_rows,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=256,
        tie_word_embeddings=tie,
    )
    torch.manual_seed(seed)
    Qwen2ForCausalLM(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return len(tokenizer)


@pytest.mark.parametrize("spare_rows, tie", [(0, True), (8, False)])
def test_llm_gets_the_drvoice_tokens_with_mean_rows(tmp_path, spare_rows, tie):
    from transformers import AutoModelForCausalLM

    old_len = make_qwen_dir(tmp_path / "llm", spare_rows=spare_rows, tie=tie)
    reference = AutoModelForCausalLM.from_pretrained(tmp_path / "llm")
    model, tokenizer = load_llm_for_drvoice(tmp_path / "llm")
    new_ids = [tokenizer.convert_tokens_to_ids(t) for t in DRVOICE_TOKENS]
    assert new_ids == list(range(old_len, old_len + 4))
    rows = model.get_input_embeddings().weight
    assert rows.shape[0] == max(old_len + 4, old_len + spare_rows) == model.config.vocab_size
    old = reference.get_input_embeddings().weight
    torch.testing.assert_close(rows[new_ids], old[:old_len].mean(0).expand(4, -1))
    assert torch.equal(rows[:old_len], old[:old_len])  # every existing row untouched
    if not tie:
        head = model.get_output_embeddings().weight
        torch.testing.assert_close(head[new_ids], reference.lm_head.weight[:old_len].mean(0).expand(4, -1))
    SpecialTokenIds.from_tokenizer(tokenizer)  # every id the model relies on exists


def test_assembled_model_matches_the_reference_llm_on_text(tmp_path):
    """LLM + Whisper + SRH from their checkpoints: text-only logits are the transformers LLM's own."""
    import whisper.model
    from transformers import AutoModelForCausalLM

    old_len = make_qwen_dir(tmp_path / "llm", hidden=32)
    make_qwen_dir(tmp_path / "srh", hidden=48, seed=1)
    dims = whisper.model.ModelDimensions(
        n_vocab=100, n_text_ctx=32, n_text_state=64, n_text_head=2, n_text_layer=1, **WHISPER_DIMS
    )
    torch.manual_seed(2)
    torch.save(
        {"dims": dims.__dict__, "model_state_dict": whisper.model.Whisper(dims).state_dict()},
        tmp_path / "w.pt",
    )

    llm, tokenizer = load_llm_for_drvoice(tmp_path / "llm")
    whisper_dims, whisper_weights = load_whisper_encoder(tmp_path / "w.pt")
    config = DrVoiceConfig(
        llm=hf_config_dict(llm.config),
        srh=srh_config_from_qwen(tmp_path / "srh", speech_vocab_size=40),
        special_token_ids=SpecialTokenIds.from_tokenizer(tokenizer).to_dict(),
        speech_vocab_size=40,
        encoder=EncoderConfig(
            llm_hidden_size=32, adapter_hidden=32, pad_to_window=True, **whisper_dims
        ).to_dict(),
        codec={"type": "none"},
    )
    model = DrVoiceModel(config).eval()
    model.llm.load_state_dict(llm.state_dict())
    model.encoder.whisper.load_state_dict(whisper_weights)
    copied = srh_init_from_qwen(tmp_path / "srh", model.srh)
    assert "layers.0.self_attn.q_proj.weight" in copied and "norm.weight" in copied

    srh_source = AutoModelForCausalLM.from_pretrained(tmp_path / "srh").model.state_dict()
    for name in copied:
        assert torch.equal(model.srh.decoder.state_dict()[name], srh_source[name]), name
    assert model.srh.decoder.embed_tokens.weight.shape == (43, 48)  # speech codes + bos/eos/pad

    reference = AutoModelForCausalLM.from_pretrained(tmp_path / "llm").eval()
    ids = torch.tensor([tokenizer.encode("hello there, the capital of france")])
    with torch.no_grad():
        expected = reference(ids).logits
        emb = model.embed_inputs(ids, torch.zeros(1, ids.shape[1], 5, dtype=torch.long), ids == -1, [])
        ours = model.llm.lm_head(model.llm.model(inputs_embeds=emb).last_hidden_state)
    torch.testing.assert_close(ours[..., :old_len], expected, atol=1e-5, rtol=1e-5)


def test_offline_hub_ids_name_the_missing_files(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty_cache"))
    with pytest.raises(
        MissingFilesError, match=r"Qwen/Qwen2.5-7B-Instruct: missing config.json.*HF_HUB_OFFLINE"
    ):
        load_llm_for_drvoice("Qwen/Qwen2.5-7B-Instruct")
    with pytest.raises(MissingFilesError, match=r"openai/whisper-large-v3: missing config.json"):
        load_whisper_encoder("openai/whisper-large-v3")
    with pytest.raises(MissingFilesError, match="Qwen/Qwen2.5-0.5B"):
        srh_config_from_qwen("Qwen/Qwen2.5-0.5B", 6561)
    with pytest.raises(MissingFilesError, match="no-such-dir"):
        load_whisper_encoder(str(tmp_path / "no-such-dir"))
