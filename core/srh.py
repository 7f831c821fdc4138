"""Speech Refined Head (SRH, paper §3.2, eqs. 4-6).

A small causal transformer over the whole 25 Hz speech sequence of a reply. Its input at position
j is E_srh(s_{j-1}) + H_j, where H_j is the j-th of the k vectors the ungrouping projection makes
from the shared LLM's hidden state of the step that owns token j; it predicts s_j (eq. 6). The
decoder is any transformers base model fed `inputs_embeds` (Qwen2 in the paper: initialised from a
Qwen2.5-0.5B TTS model); its `embed_tokens` (vocab = speech codes + bos/eos/pad) is E_srh.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import AutoConfig, AutoModel


def build_transformers_config(config_dict: dict):
    """A transformers PretrainedConfig from a plain dict holding "model_type"."""
    kwargs = dict(config_dict)
    model_type = kwargs.pop("model_type")
    return AutoConfig.for_model(model_type, **kwargs)


class SpeechRefinedHead(nn.Module):
    """Decoder + output projection over speech codes (+ bos/eos/pad)."""

    def __init__(self, srh_config: dict, speech_vocab_total: int):
        super().__init__()
        self.hf_config = build_transformers_config(srh_config)
        self.decoder = AutoModel.from_config(self.hf_config)
        self.head = nn.Linear(self.hf_config.hidden_size, speech_vocab_total, bias=False)

    @property
    def embed(self) -> nn.Embedding:
        return self.decoder.get_input_embeddings()

    def forward(
        self,
        prev_tokens: torch.Tensor,
        cond: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        cache=None,
    ) -> torch.Tensor:
        """Speech logits for each position.

        Args:
            prev_tokens: (B, J) previous speech token of each position (bos first).
            cond: (B, J, d_srh) ungrouped LLM states H (eq. 5).
            attention_mask: (B, J) 1 for real positions (right padding), or None.
            cache: a transformers Cache carried across calls during generation (one per reply).
        Returns:
            (B, J, speech_vocab_total) logits.
        """
        x = self.embed(prev_tokens) + cond  # (B, J, d_srh)
        out = self.decoder(
            inputs_embeds=x, attention_mask=attention_mask, cache=cache, use_cache=cache is not None
        )
        return self.head(out.last_hidden_state)
