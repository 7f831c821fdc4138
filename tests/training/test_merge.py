"""Core-Cocktail merge M_r = alpha * M1 + (1 - alpha) * M0 (paper §3.3) on tiny hand-written state dicts."""

import pytest
import torch
from torch.testing import assert_close

from training.merge import interpolate, merge_state_dicts, prefix_key_map


def _m1_m0():
    """M1 = a DrVoice state dict (LLM under ``llm.``, plus M1-only modules), M0 = the base LLM.

    llm.model.w:       M1 [[3, 4], [5, 6]]            M0 model.w [[1, 2], [3, 4]]
    llm.model.embed:   M1 5 rows (2 new tokens)       M0 model.embed 3 rows
    llm.lm_head.bias:  M1 [10, 20, 30, 40, 50]        M0 lm_head.bias [0, 0, 0]
    encoder.proj / srh.w / speech_embed: M1 only.     M0 model.rotary.inv_freq: unused.
    """
    m1 = {
        "llm.model.w": torch.tensor([[3.0, 4.0], [5.0, 6.0]]),
        "llm.model.embed": torch.arange(10, dtype=torch.float32).view(5, 2) + 100.0,
        "llm.lm_head.bias": torch.tensor([10.0, 20.0, 30.0, 40.0, 50.0]),
        "encoder.proj": torch.full((2, 3), 7.0),
        "srh.w": torch.full((4,), -1.0),
        "speech_embed": torch.full((6, 2), 0.5),
    }
    m0 = {
        "model.w": torch.tensor([[1.0, 2.0], [3.0, 4.0]]),
        "model.embed": torch.zeros(3, 2),
        "lm_head.bias": torch.zeros(3),
        "model.rotary.inv_freq": torch.ones(4),
    }
    return m1, m0


KEY_MAP = prefix_key_map("llm.")


def test_prefix_key_map():
    assert KEY_MAP("llm.model.layers.0.mlp.up_proj.weight") == "model.layers.0.mlp.up_proj.weight"
    assert KEY_MAP("srh.layers.0.weight") is None
    assert prefix_key_map("llm.", "base.")("llm.x") == "base.x"


def test_alpha_half_is_the_mean_and_report_counts():
    """alpha = 0.5: w = ([[3,4],[5,6]] + [[1,2],[3,4]]) / 2 = [[2,3],[4,5]].
    embed rows 0-2: (M1 + 0) / 2 = [[50, 50.5], [51, 51.5], [52, 52.5]]; rows 3-4 stay M1 [[106, 107], [108, 109]].
    bias: [5, 10, 15] merged, [40, 50] kept.
    Report: merged 1 (w), resized 2 (embed, bias), kept 3 (encoder, srh, speech_embed), unused M0 1.
    """
    m1, m0 = _m1_m0()
    merged, report = merge_state_dicts(m1, m0, 0.5, key_map=KEY_MAP)
    assert list(merged) == list(m1)
    assert_close(merged["llm.model.w"], torch.tensor([[2.0, 3.0], [4.0, 5.0]]))
    assert_close(
        merged["llm.model.embed"],
        torch.tensor([[50.0, 50.5], [51.0, 51.5], [52.0, 52.5], [106.0, 107.0], [108.0, 109.0]]),
    )
    assert_close(merged["llm.lm_head.bias"], torch.tensor([5.0, 10.0, 15.0, 40.0, 50.0]))
    for key in ("encoder.proj", "srh.w", "speech_embed"):
        assert merged[key] is m1[key]

    assert report.merged == ["llm.model.w"]
    assert report.resized == ["llm.model.embed", "llm.lm_head.bias"]
    assert report.kept_from_m1 == ["encoder.proj", "srh.w", "speech_embed"]
    assert report.unused_m0 == ["model.rotary.inv_freq"]
    assert (report.num_merged, report.num_resized, report.num_kept_from_m1, report.num_unused_m0) == (
        1,
        2,
        3,
        1,
    )
    assert "merged 1" in report.summary()
    assert "model.rotary.inv_freq" not in merged


def test_alpha_zero_is_exactly_m0_and_alpha_one_exactly_m1():
    """alpha = 0 restores M0 bit for bit on shared parameters (and the old vocabulary rows);
    alpha = 1 returns M1 bit for bit everywhere. Random values, so no rounding luck.
    """
    torch.manual_seed(0)
    m1 = {"w": torch.randn(4, 3), "emb": torch.randn(6, 3), "srh": torch.randn(2)}
    m0 = {"w": torch.randn(4, 3), "emb": torch.randn(4, 3)}

    at0, _ = merge_state_dicts(m1, m0, 0.0)
    assert torch.equal(at0["w"], m0["w"])
    assert torch.equal(at0["emb"][:4], m0["emb"])
    assert torch.equal(at0["emb"][4:], m1["emb"][4:])
    assert torch.equal(at0["srh"], m1["srh"])

    at1, _ = merge_state_dicts(m1, m0, 1.0)
    for key in m1:
        assert torch.equal(at1[key], m1[key])


def test_inputs_are_not_modified():
    m1, m0 = _m1_m0()
    before1 = {k: v.clone() for k, v in m1.items()}
    before0 = {k: v.clone() for k, v in m0.items()}
    merge_state_dicts(m1, m0, 0.3, key_map=KEY_MAP)
    assert all(torch.equal(m1[k], before1[k]) for k in m1)
    assert all(torch.equal(m0[k], before0[k]) for k in m0)


def test_bf16_stays_bf16_and_is_computed_in_fp32():
    """M1 bf16 1.0, M0 bf16 2.0, alpha 0.25: 0.25 * 1 + 0.75 * 2 = 1.75 (exact in bf16), dtype bf16.
    An fp32 M0 is cast to M1's dtype: M1 bf16 0, M0 fp32 1.0, alpha 0 -> 1.0 in bf16.
    """
    m1 = {"w": torch.ones(3, dtype=torch.bfloat16), "v": torch.zeros(2, dtype=torch.bfloat16)}
    m0 = {"w": torch.full((3,), 2.0, dtype=torch.bfloat16), "v": torch.ones(2, dtype=torch.float32)}
    merged, _ = merge_state_dicts(m1, m0, 0.25)
    assert merged["w"].dtype == torch.bfloat16
    assert torch.equal(merged["w"], torch.full((3,), 1.75, dtype=torch.bfloat16))
    merged0, _ = merge_state_dicts(m1, m0, 0.0)
    assert merged0["v"].dtype == torch.bfloat16
    assert torch.equal(merged0["v"], torch.ones(2, dtype=torch.bfloat16))


def test_unchanged_bf16_parameter_survives_any_alpha():
    """A parameter stage 1 did not move (M1 == M0 == x) must come back as x for any alpha.

    x = 0.11962890625 (bf16), alpha = 0.3. In bf16 arithmetic 0.3 * x rounds to 0.035888671875 and
    0.7 * x to 0.083984375, whose sum rounds to 0.1201171875 != x. In fp32, 0.3x + 0.7x = x up to an
    fp32 ulp, which the cast back to bf16 removes: the result is exactly x.
    """
    x = torch.tensor([0.11962890625], dtype=torch.bfloat16)
    assert (0.3 * x + 0.7 * x).item() == 0.1201171875  # the bf16-arithmetic failure this guards against
    assert torch.equal(interpolate(x, x.clone(), 0.3), x)
    torch.manual_seed(0)
    many = torch.randn(1000).to(torch.bfloat16)
    assert torch.equal(interpolate(many, many.clone(), 0.3), many)


def test_shape_mismatch_raises_with_key_name():
    with pytest.raises(ValueError, match="'w'"):
        merge_state_dicts({"w": torch.zeros(2, 3)}, {"w": torch.zeros(2, 4)}, 0.5)
    # M1 with FEWER vocabulary rows than M0 is not a resize DrVoice does: error.
    with pytest.raises(ValueError, match="llm.embed"):
        merge_state_dicts(
            {"llm.embed": torch.zeros(2, 3)}, {"embed": torch.zeros(4, 3)}, 0.5, key_map=KEY_MAP
        )


@pytest.mark.parametrize("alpha", [-0.1, 1.5, float("nan")])
def test_alpha_out_of_range_raises(alpha):
    with pytest.raises(ValueError, match="alpha"):
        merge_state_dicts({"w": torch.zeros(1)}, {"w": torch.zeros(1)}, alpha)


def test_tied_weights_are_merged_independently():
    """Tied embed / lm_head (same tensor in M1 and in M0): both keys get the same merged values
    (alpha 0.5 of 4 and 0 = 2), and the result no longer shares storage with M1.
    """
    shared1 = torch.full((3, 2), 4.0)
    shared0 = torch.zeros(3, 2)
    m1 = {"embed_tokens.weight": shared1, "lm_head.weight": shared1}
    m0 = {"embed_tokens.weight": shared0, "lm_head.weight": shared0}
    merged, report = merge_state_dicts(m1, m0, 0.5)
    assert report.num_merged == 2
    assert torch.equal(merged["embed_tokens.weight"], torch.full((3, 2), 2.0))
    assert torch.equal(merged["lm_head.weight"], merged["embed_tokens.weight"])
    assert torch.equal(shared1, torch.full((3, 2), 4.0))


def test_key_map_to_missing_m0_key_and_integer_buffers_are_kept():
    """A key_map result absent from M0 means M1-only; integer buffers are never interpolated."""
    m1 = {"a": torch.ones(2), "ids": torch.arange(4)}
    m0 = {"ids": torch.zeros(4, dtype=torch.long)}
    merged, report = merge_state_dicts(m1, m0, 0.5, key_map=lambda k: k)
    assert torch.equal(merged["a"], m1["a"]) and torch.equal(merged["ids"], m1["ids"])
    assert report.kept_from_m1 == ["a", "ids"] and report.unused_m0 == []
