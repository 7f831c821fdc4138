import torch

from core.grouping import SpeechGrouping, Ungrouping, group_tokens


def test_group_tokens_pads_last_group():
    groups = group_tokens([1, 2, 3, 4, 5, 6, 7], group_size=5, pad_id=99)
    assert groups.tolist() == [[1, 2, 3, 4, 5], [6, 7, 99, 99, 99]]
    assert group_tokens([], 5, 99).shape == (0, 5)


def test_grouping_shapes():
    g = SpeechGrouping(speech_vocab_total=10, embed_dim=6, group_size=5, out_dim=16, grouping="concat")
    assert g(torch.zeros(3, 7, 5, dtype=torch.long)).shape == (3, 7, 16)
    assert g.proj.in_features == 30
    m = SpeechGrouping(10, 6, 5, 16, grouping="mean")
    assert m(torch.zeros(4, 5, dtype=torch.long)).shape == (4, 16)
    assert m.proj.in_features == 6


def test_concat_grouping_hand_checked_eq3():
    """eq. (3) with k=2, embedding width 2, output width 1.

    Embeddings: E[0] = (1, 2), E[1] = (3, 4), E[2] = (5, 6).
    Linear weights w = (1, 10, 100, 1000), bias 0.5.
    Group (s_0, s_1) = (2, 1): concat = (5, 6, 3, 4)
      -> 5*1 + 6*10 + 3*100 + 4*1000 + 0.5 = 4365.5
    Group (0, 2): concat = (1, 2, 5, 6) -> 1 + 20 + 500 + 6000 + 0.5 = 6521.5
    Mean grouping of (2, 1) with w = (1, 10): mean = (4, 5) -> 4 + 50 + 0.5 = 54.5
    """
    g = SpeechGrouping(3, 2, 2, 1, grouping="concat")
    with torch.no_grad():
        g.embed.weight.copy_(torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]))
        g.proj.weight.copy_(torch.tensor([[1.0, 10.0, 100.0, 1000.0]]))
        g.proj.bias.fill_(0.5)
    out = g(torch.tensor([[2, 1], [0, 2]]))
    assert out.squeeze(-1).tolist() == [4365.5, 6521.5]

    m = SpeechGrouping(3, 2, 2, 1, grouping="mean")
    with torch.no_grad():
        m.embed.weight.copy_(g.embed.weight)
        m.proj.weight.copy_(torch.tensor([[1.0, 10.0]]))
        m.proj.bias.fill_(0.5)
    assert m(torch.tensor([2, 1])).item() == 54.5


def test_ungrouping_splits_projection_in_time_order():
    """eqs. (4)-(5): h_ug = W_p h, H = Split_k(h_ug): vector i is slice [i*d, (i+1)*d) of h_ug."""
    u = Ungrouping(llm_hidden=8, srh_hidden=3, group_size=5)
    h = torch.randn(2, 4, 8)
    out = u(h)
    assert out.shape == (2, 4, 5, 3)
    flat = u.proj(h)
    for i in range(5):
        torch.testing.assert_close(out[..., i, :], flat[..., i * 3 : (i + 1) * 3])
