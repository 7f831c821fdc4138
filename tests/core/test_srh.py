import torch
from transformers import DynamicCache

from core.config import qwen2_config_dict
from core.srh import SpeechRefinedHead


def test_step_decoding_with_kv_cache_matches_teacher_forcing():
    """The SRH's cache persists over the whole reply: feeding tokens one at a time (as the generator
    does, across several k-token groups) gives the logits of one teacher-forced forward."""
    torch.manual_seed(0)
    vocab = 23
    srh = SpeechRefinedHead(
        qwen2_config_dict(vocab, 32, 2, 2, max_positions=512, tie_word_embeddings=False), vocab
    )
    srh.eval()
    steps = 17  # more than three groups of k = 5
    prev = torch.randint(0, vocab, (1, steps))
    cond = torch.randn(1, steps, 32)
    with torch.no_grad():
        full = srh(prev, cond)
        cache = DynamicCache(config=srh.hf_config)
        stepped = torch.cat(
            [srh(prev[:, j : j + 1], cond[:, j : j + 1], cache=cache) for j in range(steps)], dim=1
        )
    assert full.shape == (1, steps, vocab)
    torch.testing.assert_close(stepped, full, atol=1e-5, rtol=1e-5)
    assert cache.get_seq_length() == steps


def test_padding_mask_does_not_change_real_positions():
    torch.manual_seed(1)
    vocab = 11
    srh = SpeechRefinedHead(
        qwen2_config_dict(vocab, 16, 1, 2, max_positions=64, tie_word_embeddings=False), vocab
    )
    srh.eval()
    prev = torch.randint(0, vocab, (1, 6))
    cond = torch.randn(1, 6, 16)
    padded_prev = torch.cat([prev, torch.zeros(1, 3, dtype=torch.long)], 1)
    padded_cond = torch.cat([cond, torch.randn(1, 3, 16)], 1)
    mask = torch.tensor([[1] * 6 + [0] * 3])
    with torch.no_grad():
        a = srh(prev, cond)
        b = srh(padded_prev, padded_cond, attention_mask=mask)[:, :6]
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
