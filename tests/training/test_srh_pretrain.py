import pytest
import torch
from torch.testing import assert_close
from transformers import AutoModelForCausalLM

from core.checkpoint import from_pretrained
from core.config import qwen2_config_dict
from core.srh import SpeechRefinedHead
from training.metrics import read_metrics
from training.recipes import srh_pretrain
from training.tts_lm import (
    build_tts_lm,
    collate_t2m,
    init_from_srh,
    load_into_srh,
    speech_rows,
    t2m_sequence,
)


def _cfg(assets, out, strategy, **kw):
    base = dict(
        strategy=strategy,
        init=str(assets.init),
        train_manifest=str(assets.manifest),
        output_dir=str(out),
        max_steps=25,
        max_tokens=4000,
        peak_lr=3e-3,
        final_lr=3e-4,
        log_every=1,
        save_every=10,
        precision="fp32",
        device="cpu",
    )
    base.update(kw)
    return srh_pretrain.SRHPretrainConfig(**base)


def _mean(rows, key, sl):
    vals = [r[key] for r in rows[sl]]
    return sum(vals) / len(vals)


def test_t2m_sequence_by_hand():
    """T = 10, N = 4 (bos 14, eos 15): text [3, 5], speech [0, 2] -> speech ids offset by T."""
    ids, labels = t2m_sequence([3, 5], [0, 2], text_vocab_size=10, speech_vocab_size=4)
    assert ids.tolist() == [3, 5, 14, 10, 12, 15]
    assert labels.tolist() == [-100, -100, -100, 10, 12, 15]
    batch = collate_t2m([(ids, labels), t2m_sequence([7], [3], 10, 4)], pad_id=16)
    assert batch["input_ids"][1].tolist() == [7, 14, 13, 15, 16, 16]
    assert batch["labels"][1].tolist() == [-100, -100, 13, 15, -100, -100]
    assert batch["attention_mask"][1].tolist() == [1, 1, 1, 1, 0, 0]
    with pytest.raises(ValueError):
        t2m_sequence([1], [4], 10, 4)


def test_tts_lm_weights_round_trip_through_the_srh():
    """TTS LM -> SRH copies layers, norm and the speech rows exactly; the SRH then computes the
    LM's speech logits of a pure-speech sequence (no text rows involved)."""
    torch.manual_seed(0)
    srh_cfg = qwen2_config_dict(7, 16, 2, 2, tie_word_embeddings=False)
    lm = build_tts_lm(srh_cfg, text_vocab_size=20, speech_vocab_size=4)
    srh = SpeechRefinedHead(srh_cfg, 7)
    load_into_srh(lm, srh)
    assert_close(
        srh.decoder.layers[1].mlp.up_proj.weight, lm.model.layers[1].mlp.up_proj.weight, rtol=0, atol=0
    )
    assert_close(srh.decoder.norm.weight, lm.model.norm.weight, rtol=0, atol=0)
    assert_close(srh.embed.weight, lm.model.embed_tokens.weight[20:27], rtol=0, atol=0)
    assert_close(srh.head.weight, lm.lm_head.weight[20:27], rtol=0, atol=0)
    prev = torch.tensor([[4, 0, 3, 1]])  # bos, then codes
    ref = lm(input_ids=prev + 20).logits[..., speech_rows(lm)]
    got = srh(prev, torch.zeros(1, 4, 16))
    assert_close(got, ref, rtol=1e-5, atol=1e-5)
    lm2 = build_tts_lm(srh_cfg, 20, 4)
    init_from_srh(lm2, srh)
    assert_close(lm2.model.layers[0].self_attn.q_proj.weight, lm.model.layers[0].self_attn.q_proj.weight)
    assert_close(lm2.lm_head.weight[20:27], lm.lm_head.weight[20:27])


def test_standalone_trains_a_tts_lm_and_loads_it_into_the_srh(tiny_assets, tmp_path):
    out = tmp_path / "standalone"
    final = srh_pretrain.run(_cfg(tiny_assets, out, "standalone", max_steps=30))
    rows = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in rows] == list(range(1, 31))
    assert _mean(rows, "loss", slice(-5, None)) < 0.7 * _mean(rows, "loss", slice(0, 5))

    lm = AutoModelForCausalLM.from_pretrained(out / "tts_lm")
    init = from_pretrained(tiny_assets.init).model
    model = from_pretrained(final).model
    text_vocab = init.config.llm["vocab_size"]
    rows_ = slice(text_vocab, text_vocab + init.config.speech_vocab_total)
    assert speech_rows(lm) == rows_
    srh = model.srh
    for i, layer in enumerate(srh.decoder.layers):
        assert_close(
            layer.self_attn.q_proj.weight, lm.model.layers[i].self_attn.q_proj.weight, rtol=0, atol=0
        )
        assert_close(layer.mlp.down_proj.weight, lm.model.layers[i].mlp.down_proj.weight, rtol=0, atol=0)
    assert_close(srh.decoder.norm.weight, lm.model.norm.weight, rtol=0, atol=0)
    assert_close(srh.embed.weight, lm.model.embed_tokens.weight[rows_], rtol=0, atol=0)
    assert_close(srh.head.weight, lm.lm_head.weight[rows_], rtol=0, atol=0)
    # the SRH was trained; every other part is the --init checkpoint's
    before, after = init.state_dict(), model.state_dict()
    for k in before:
        if k.startswith("srh."):
            continue
        assert torch.equal(before[k], after[k]), k
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("srh.decoder.layers"))
    assert (final / "codec").is_dir()


def test_frozen_backbone_trains_only_the_speech_parts(tiny_assets, tmp_path):
    out = tmp_path / "frozen"
    final = srh_pretrain.run(_cfg(tiny_assets, out, "frozen_backbone", max_steps=25))
    rows = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in rows] == list(range(1, 26))
    first, last = _mean(rows, "speech_loss", slice(0, 5)), _mean(rows, "speech_loss", slice(-5, None))
    assert last < 0.7 * first
    before = from_pretrained(tiny_assets.init).model.state_dict()
    after = from_pretrained(final).model.state_dict()
    for k in before:
        if k.startswith(("llm.", "encoder.")):  # encoder + adapter, shared LLM + text head
            assert torch.equal(before[k], after[k]), k
    for prefix in ("srh.", "ungrouping.", "speech_grouping."):
        assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith(prefix)), prefix
    assert (out / "srh_pretrain.yaml").is_file()


def test_cli_help_and_validation(capsys):
    with pytest.raises(SystemExit) as e:
        srh_pretrain.main(["--help"])
    assert e.value.code == 0
    assert "--strategy" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        srh_pretrain.main(["--init", "x", "--train_manifest", "y", "--strategy", "both"])
    assert "--strategy must be one of" in capsys.readouterr().err


def test_tiny_yaml_maps_onto_the_config():
    from pathlib import Path

    from training.cli import parse_config

    yaml_path = Path(__file__).resolve().parents[2] / "training" / "configs" / "srh_pretrain_tiny.yaml"
    cfg = parse_config(
        srh_pretrain.SRHPretrainConfig, ["--config", str(yaml_path), "--strategy", "standalone"]
    )
    assert cfg.strategy == "standalone" and cfg.modes == ["T2M", "S2M"] and cfg.max_steps == 2000
