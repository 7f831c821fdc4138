"""`build`: a core checkpoint from a tiny Hugging Face Qwen2, a tiny openai-whisper file and a TTS LM."""

import pytest
import torch
from torch.testing import assert_close
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

from core.checkpoint import from_pretrained
from core.config import qwen2_config_dict
from core.hub import MissingFilesError
from core.text_tokenizer import CHAT_TOKENS, DRVOICE_TOKENS, END_OF_TEXT, IM_END
from training.recipes import build
from training.tts_lm import build_tts_lm

SPEECH_VOCAB = 12
SPARE_ROWS = 2  # like Qwen2.5, the embedding has padded rows beyond the tokenizer


def _hf_llm(directory, tied: bool):
    """A tiny Qwen2 causal LM + a BPE tokenizer with the ChatML tokens but not the DrVoice ones."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=list(CHAT_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(["the capital of france is paris.", "two plus two is four."] * 5, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=IM_END, pad_token=END_OF_TEXT)
    config = Qwen2Config(
        vocab_size=len(tokenizer) + SPARE_ROWS,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=tied,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
    )
    torch.manual_seed(3)
    model = Qwen2ForCausalLM(config)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory, tokenizer


def _whisper_file(path, n_mels=80, n_state=32, n_head=2, n_layer=1):
    """A tiny openai-whisper checkpoint file: {"dims": ..., "model_state_dict": encoder + decoder keys}."""
    import whisper.model

    torch.manual_seed(4)
    encoder = whisper.model.AudioEncoder(n_mels, 1500, n_state, n_head, n_layer)
    state = {f"encoder.{k}": v.half() for k, v in encoder.state_dict().items()}  # released files are fp16
    state["decoder.token_embedding.weight"] = torch.zeros(10, n_state)  # must be ignored
    dims = dict(
        n_mels=n_mels, n_audio_ctx=1500, n_audio_state=n_state, n_audio_head=n_head, n_audio_layer=n_layer
    )
    dims.update(n_vocab=10, n_text_ctx=16, n_text_state=n_state, n_text_head=n_head, n_text_layer=n_layer)
    torch.save({"dims": dims, "model_state_dict": state}, path)
    return encoder


def _small(**kw):
    base = dict(
        speech_vocab_size=SPEECH_VOCAB,
        srh_hidden=16,
        srh_layers=1,
        srh_heads=2,
        srh_kv_heads=1,
        srh_intermediate=32,
        encoder_n_mels=80,
        encoder_state=32,
        encoder_heads=2,
        encoder_layers=1,
        adapter_hidden=32,
    )
    base.update(kw)
    return base


@pytest.mark.parametrize("tied", [True, False])
def test_text_logits_equal_the_reference_llm(tmp_path, tied):
    llm_dir, hf_tok = _hf_llm(tmp_path / "llm", tied)
    out = build.run(build.BuildConfig(llm=str(llm_dir), output_dir=str(tmp_path / "out"), **_small()))
    ckpt = from_pretrained(out)
    model, tokenizer = ckpt.model, ckpt.tokenizer
    old_len = len(hf_tok)
    new_ids = [tokenizer.convert_tokens_to_ids(t) for t in DRVOICE_TOKENS]
    assert sorted(new_ids) == list(range(old_len, old_len + 4))  # 2 spare rows reused, 2 rows added
    assert model.config.llm["vocab_size"] == old_len + 4
    assert ckpt.extra["new_token_ids"] == sorted(new_ids)

    text = "the capital of france is paris."
    ids = torch.tensor([hf_tok.encode(text)])
    assert tokenizer.encode(text) == ids[0].tolist()  # old tokens keep their ids
    ref = AutoModelForCausalLM.from_pretrained(llm_dir).eval()
    with torch.no_grad():
        want = ref(input_ids=ids).logits  # (1, L, old_len + SPARE_ROWS)
        k = model.config.group_size
        emb = model.embed_inputs(
            ids,
            torch.full((1, ids.shape[1], k), model.config.speech_pad),
            torch.zeros_like(ids, dtype=torch.bool),
            [],
        )
        got = model.llm.lm_head(model.llm.model(inputs_embeds=emb).last_hidden_state)  # (1, L, old_len + 4)
    keep = [i for i in range(want.shape[-1]) if i not in new_ids]
    assert_close(got[..., keep], want[..., keep], rtol=1e-5, atol=1e-5)

    # the new rows start at the mean of the old ones (+ small noise), distinct from each other
    matrices = [model.llm.get_input_embeddings().weight] + ([] if tied else [model.llm.lm_head.weight])
    for w in matrices:
        mean, std = w[:old_len].mean(0), w[:old_len].std(0)
        for i in new_ids:
            assert ((w[i] - mean).abs() <= 5 * 0.02 * std + 1e-6).all()
        assert not torch.equal(w[new_ids[0]], w[new_ids[1]])


def test_whisper_weights_and_dims_are_taken_from_the_file(tmp_path):
    llm_dir, _ = _hf_llm(tmp_path / "llm", tied=True)
    encoder = _whisper_file(tmp_path / "tiny.pt", n_state=48, n_head=3)
    cfg = build.BuildConfig(
        llm=str(llm_dir), output_dir=str(tmp_path / "out"), whisper=str(tmp_path / "tiny.pt"), **_small()
    )
    model = from_pretrained(build.run(cfg)).model
    enc_cfg = model.config.encoder
    assert (enc_cfg["n_audio_state"], enc_cfg["n_audio_head"], enc_cfg["n_audio_layer"]) == (48, 3, 1)
    assert enc_cfg["pad_to_window"] is True
    for k, v in encoder.state_dict().items():
        assert_close(model.encoder.whisper.state_dict()[k], v.half().float(), rtol=0, atol=0)
    mels = torch.randn(1, 80, 120)
    feats, lengths = model.encoder(mels, torch.tensor([120]))
    assert torch.isfinite(feats).all() and lengths.tolist() == [6]  # 1.2 s at 5 Hz


def test_srh_from_a_tts_lm_or_a_plain_causal_lm(tmp_path):
    llm_dir, _ = _hf_llm(tmp_path / "llm", tied=True)
    srh_cfg = qwen2_config_dict(SPEECH_VOCAB + 3, 16, 2, 2, tie_word_embeddings=False)
    torch.manual_seed(5)
    tts = build_tts_lm(srh_cfg, text_vocab_size=300, speech_vocab_size=SPEECH_VOCAB)
    tts.save_pretrained(tmp_path / "tts_lm")
    model = from_pretrained(
        build.run(
            build.BuildConfig(
                llm=str(llm_dir),
                output_dir=str(tmp_path / "a"),
                srh_init=str(tmp_path / "tts_lm"),
                **_small(),
            )
        )
    ).model
    assert model.config.srh_hidden_size == 16 and model.config.srh["num_hidden_layers"] == 2
    assert_close(
        model.srh.decoder.layers[1].self_attn.k_proj.weight, tts.model.layers[1].self_attn.k_proj.weight
    )
    assert_close(model.srh.embed.weight, tts.model.embed_tokens.weight[300 : 300 + SPEECH_VOCAB + 3])
    assert_close(model.srh.head.weight, tts.lm_head.weight[300 : 300 + SPEECH_VOCAB + 3])

    plain = Qwen2ForCausalLM(
        Qwen2Config(**{k: v for k, v in srh_cfg.items() if k != "model_type"} | {"vocab_size": 50})
    )
    plain.save_pretrained(tmp_path / "plain")
    model = from_pretrained(
        build.run(
            build.BuildConfig(
                llm=str(llm_dir), output_dir=str(tmp_path / "b"), srh_init=str(tmp_path / "plain"), **_small()
            )
        )
    ).model
    assert_close(model.srh.decoder.layers[0].mlp.up_proj.weight, plain.model.layers[0].mlp.up_proj.weight)
    assert_close(model.srh.decoder.norm.weight, plain.model.norm.weight)
    assert model.srh.embed.weight.shape == (SPEECH_VOCAB + 3, 16)

    wrong = build_tts_lm(srh_cfg | {"vocab_size": 9}, text_vocab_size=300, speech_vocab_size=6)
    wrong.save_pretrained(tmp_path / "wrong")
    with pytest.raises(ValueError, match="speech codes"):
        build.run(
            build.BuildConfig(
                llm=str(llm_dir), output_dir=str(tmp_path / "c"), srh_init=str(tmp_path / "wrong"), **_small()
            )
        )


def test_codec_is_shipped_and_sets_the_speech_vocabulary(tiny_assets, tmp_path):
    llm_dir, _ = _hf_llm(tmp_path / "llm", tied=True)
    kw = _small(speech_vocab_size=0, group_size=1, speech_delay=2, grouping="mean", combine="mean")
    kw |= dict(text_input_scale=30.0)
    ckpt = from_pretrained(
        build.run(
            build.BuildConfig(
                llm=str(llm_dir), output_dir=str(tmp_path / "out"), codec=str(tiny_assets.init), **kw
            )
        )
    )
    assert ckpt.codec is not None and ckpt.model.config.speech_vocab_size == ckpt.codec.codebook_size
    c = ckpt.model.config
    assert (c.group_size, c.speech_delay, c.grouping, c.combine) == (1, 2, "mean", "mean")
    assert c.text_input_scale == 30.0


def test_offline_hub_id_gives_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(
        MissingFilesError, match="HF_HUB_OFFLINE is set and the repo is not in the local cache"
    ):
        build.run(build.BuildConfig(llm="nobody/no-such-llm", output_dir=str(tmp_path / "out"), **_small()))


def test_cli_help(capsys):
    with pytest.raises(SystemExit) as e:
        build.main(["--help"])
    assert e.value.code == 0
    assert "--srh_init" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        build.main(["--llm", "x", "--speech_vocab_size", "0"])
    assert "--speech_vocab_size must be > 0" in capsys.readouterr().err


def test_random_encoder_scale_settings_reach_the_checkpoint(tmp_path):
    """--encoder_positional_scale / --encoder_output_norm are stored, and the output gain is the text
    embeddings' RMS, so speech features enter the LLM at the scale of its token embeddings."""
    llm_dir, _ = _hf_llm(tmp_path / "llm", True)
    out = build.run(
        build.BuildConfig(
            llm=str(llm_dir),
            output_dir=str(tmp_path / "out"),
            **_small(encoder_positional_scale=0.1, encoder_output_norm=True),
        )
    )
    model = from_pretrained(out).model
    assert model.config.encoder["positional_scale"] == 0.1 and model.config.encoder["output_norm"] is True
    rms = float(model.llm.get_input_embeddings().weight.detach().pow(2).mean().sqrt())
    assert_close(model.encoder.output_norm.weight, torch.full_like(model.encoder.output_norm.weight, rms))
    with torch.no_grad():
        feats, _ = model.encoder(torch.randn(1, 80, 200), torch.tensor([200]))
    assert float(feats.pow(2).mean().sqrt()) == pytest.approx(rms, rel=1e-3)
