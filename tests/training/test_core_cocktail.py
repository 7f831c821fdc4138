import torch

from core.checkpoint import from_pretrained
from training.metrics import read_metrics
from training.recipes import core_cocktail


def _cfg(assets, out, **kw):
    base = dict(
        init=str(assets.init),
        base_llm=str(assets.base_llm),
        train_manifest=str(assets.manifest),
        output_dir=str(out),
        stage1_steps=12,
        stage2_steps=8,
        stage1_peak_lr=3e-3,
        stage1_final_lr=3e-4,
        stage2_peak_lr=1e-3,
        stage2_final_lr=1e-4,
        max_tokens=4000,
        log_every=1,
        save_every=100,
        precision="fp32",
        device="cpu",
        modes=["S2M", "T2T"],
    )
    base.update(kw)
    return core_cocktail.CoreCocktailConfig(**base)


def test_all_three_steps_from_one_command(tiny_assets, tmp_path):
    out = tmp_path / "cc"
    final = core_cocktail.run(_cfg(tiny_assets, out, alpha=0.0))
    assert final == out / "stage2" / "final"
    for stage, steps in (("stage1", 12), ("stage2", 8)):
        rows = read_metrics(out / stage / "metrics.jsonl")
        assert len(rows) == steps
        assert rows[-1]["loss"] < rows[0]["loss"]
    m1 = from_pretrained(out / "stage1" / "final").model.state_dict()
    m0 = from_pretrained(tiny_assets.base_llm).model.state_dict()
    mr = from_pretrained(out / "merged").model.state_dict()
    # alpha = 0: the shared LLM is exactly the base LLM ...
    layer = "llm.model.layers.0.self_attn.q_proj.weight"
    assert torch.equal(mr[layer], m0[layer])
    # ... while parameters only DrVoice trains (SRH, encoder, speech grouping) come from stage 1
    for key in ("srh.head.weight", "speech_grouping.proj.weight", "encoder.adapter.0.weight"):
        assert torch.equal(mr[key], m1[key]) and not torch.equal(mr[key], m0[key])
    assert (out / "stage2" / "final" / "codec").is_dir()


def test_steps_one_at_a_time_and_alpha(tiny_assets, tmp_path):
    out = tmp_path / "cc"
    core_cocktail.run(_cfg(tiny_assets, out, stage="1"))
    core_cocktail.run(_cfg(tiny_assets, out, stage="merge", alpha=0.5))
    m1 = from_pretrained(out / "stage1" / "final").model.state_dict()
    m0 = from_pretrained(tiny_assets.base_llm).model.state_dict()
    mr = from_pretrained(out / "merged").model.state_dict()
    layer = "llm.model.layers.1.mlp.up_proj.weight"
    torch.testing.assert_close(mr[layer], 0.5 * m1[layer] + 0.5 * m0[layer])
    emb = "llm.model.embed_tokens.weight"
    torch.testing.assert_close(mr[emb], 0.5 * m1[emb] + 0.5 * m0[emb])
    assert torch.equal(mr["llm.lm_head.weight"], mr[emb])  # tied head follows the merged embedding
    final = core_cocktail.run(_cfg(tiny_assets, out, stage="2"))
    assert len(read_metrics(out / "stage2" / "metrics.jsonl")) == 8
    assert from_pretrained(final).model is not None


def test_stage_order_errors(tiny_assets, tmp_path):
    import pytest

    with pytest.raises(FileNotFoundError, match="run --stage 1 first"):
        core_cocktail.run(_cfg(tiny_assets, tmp_path / "x", stage="merge"))
    with pytest.raises(ValueError, match="alpha"):
        _cfg(tiny_assets, tmp_path / "y", alpha=1.5)
