"""The DrVoice model: modules and the teacher-forced training forward (eq. 7).

Sampling, KV caches and streaming live in `core/generate.py`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pad_sequence
from transformers import AutoModelForCausalLM

from core.config import DrVoiceConfig
from core.grouping import SpeechGrouping, Ungrouping
from core.sequence import IGNORE, Batch
from core.srh import SpeechRefinedHead, build_transformers_config


@dataclass
class DrVoiceOutput:
    """Result of the training forward."""

    loss: torch.Tensor  # lambda * text_loss + mu * speech_loss (eq. 7)
    text_loss: torch.Tensor  # mean CE of the text head over assistant text targets (eq. 8)
    speech_loss: torch.Tensor  # mean CE of the SRH over assistant speech targets (eq. 6)
    text_tokens: int  # number of text targets
    speech_tokens: int  # number of speech targets


@dataclass
class SequenceLogprobs:
    """Per-sample log-probabilities of the targets (DPO/GSPO scoring)."""

    text: torch.Tensor  # (B,) sum of text-head log-probs over the reply
    speech: torch.Tensor  # (B,) sum of SRH log-probs over the reply's speech tokens
    text_count: torch.Tensor  # (B,) number of text targets
    speech_count: torch.Tensor  # (B,) number of speech targets

    @property
    def total(self) -> torch.Tensor:
        return self.text + self.speech

    @property
    def count(self) -> torch.Tensor:
        return self.text_count + self.speech_count


@dataclass
class _Heads:
    text_logits: torch.Tensor  # (Nt, V_text) at text-target positions
    text_targets: torch.Tensor  # (Nt,)
    text_batch_index: torch.Tensor  # (Nt,)
    speech_logits: torch.Tensor  # (Ns, V_speech) at speech-target positions (pad excluded)
    speech_targets: torch.Tensor  # (Ns,)
    speech_batch_index: torch.Tensor  # (Ns,)


class DrVoiceModel(nn.Module):
    """Shared LLM + text head, speech grouping, ungrouping + SRH, and the user speech encoder."""

    def __init__(self, config: DrVoiceConfig):
        super().__init__()
        self.config = config
        self.llm = AutoModelForCausalLM.from_config(build_transformers_config(config.llm))
        d_llm = config.llm_hidden_size
        self.speech_grouping = SpeechGrouping(
            config.speech_vocab_total, config.speech_embed_width, config.group_size, d_llm, config.grouping
        )
        self.ungrouping = Ungrouping(d_llm, config.srh_hidden_size, config.group_size)
        self.srh = SpeechRefinedHead(config.srh, config.speech_vocab_total)
        self.srh_text = None
        if config.srh_text_embedding:
            # zero at first: a checkpoint switched to it speaks exactly as before until it is trained
            self.srh_text = nn.Embedding(config.llm["vocab_size"], config.srh_hidden_size)
            nn.init.zeros_(self.srh_text.weight)
        self.encoder = None
        if config.user_audio == "continuous":
            from core.encoder import EncoderConfig, SpeechEncoder

            self.encoder = SpeechEncoder(EncoderConfig.from_dict(config.encoder))

    # ---- shared pieces (also used by the generator) -------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return self.llm.get_input_embeddings().weight.dtype

    def text_embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.llm.get_input_embeddings()(ids)

    def combine(self, text_emb: torch.Tensor, speech_emb: torch.Tensor) -> torch.Tensor:
        """eq. (1): c_t = s E_text(t_t) + G(s_group_t) ("sum") or their mean ("mean"); s is the config's
        text_input_scale (1 in the paper)."""
        out = text_emb * self.config.text_input_scale + speech_emb
        return out * 0.5 if self.config.combine == "mean" else out

    def encode_user_audio(self, mels: list[torch.Tensor]) -> torch.Tensor:
        """Continuous user speech -> (sum of 5 Hz frames, d_llm), segments concatenated in order."""
        if not mels:
            return torch.zeros(0, self.config.llm_hidden_size, device=self.device, dtype=self.dtype)
        lengths = torch.tensor([m.shape[-1] for m in mels], device=self.device)
        padded = pad_sequence([m.transpose(0, 1) for m in mels], batch_first=True).transpose(
            1, 2
        )  # (A, M, F)
        feats, out_lengths = self.encoder(padded.to(self.dtype), lengths)  # (A, N, d_llm)
        return torch.cat([feats[i, : int(n)] for i, n in enumerate(out_lengths)], dim=0)

    def embed_inputs(
        self,
        input_ids: torch.Tensor,
        speech_inputs: torch.Tensor,
        speech_input_mask: torch.Tensor,
        mels: list[torch.Tensor],
        audio_features: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """LLM input embeddings of a (B, L) layout (see core/sequence.py).

        Args:
            input_ids: (B, L) text ids.
            speech_inputs: (B, L, k) speech groups.
            speech_input_mask: (B, L) positions whose input includes a speech group.
            mels: user-audio log-mels, replacing the <|AUDIO|> positions in row-major order
                (continuous input only).
            audio_features: `encode_user_audio(mels)` when the caller has it already.
        Returns:
            (B, L, d_llm) embeddings.
        """
        emb = self.text_embed(input_ids)  # (B, L, D)
        if speech_input_mask.any():
            g = self.speech_grouping(speech_inputs[speech_input_mask])  # (M, D)
            if self.training and self.config.speech_input_dropout > 0:
                # the text stream must not lean on the model's own speech, which at inference is
                # generated, not the reference: drop whole groups from the input (not rescaled)
                keep = torch.rand(g.shape[0], 1, device=g.device) >= self.config.speech_input_dropout
                g = g * keep.to(g.dtype)
            emb = emb.clone()
            emb[speech_input_mask] = self.combine(emb[speech_input_mask], g)
        if self.config.user_audio == "continuous":
            audio_mask = input_ids == self.config.special_token_ids["audio"]
            n_audio = int(audio_mask.sum())
            if n_audio:
                feats = self.encode_user_audio(mels) if audio_features is None else audio_features
                if feats.shape[0] != n_audio:
                    raise ValueError(
                        f"{n_audio} <|AUDIO|> positions but the encoder produced {feats.shape[0]} frames"
                    )
                emb = emb.clone()
                emb[audio_mask] = feats.to(emb.dtype)
        return emb

    def srh_condition(
        self, hidden: torch.Tensor, input_ids: torch.Tensor, text_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        """eqs. (4)-(5): (..., d_llm) hidden states -> (..., k, d_srh) SRH conditions H.

        `input_ids` (...) are the LLM input tokens of those steps (`srh_text_condition`), `text_ids`
        (...) the text tokens emitted with each group (`srh_text_embedding`; <|sil|> after the text).
        """
        if self.config.srh_text_condition:
            # the input token's embedding at the hidden states' scale (the LLM's final RMSNorm): a raw
            # embedding is ~10x smaller than a hidden state and W_p could not tell it apart; the SRH
            # loss trains neither the embedding nor the norm through this path
            hidden = hidden + self.llm.model.norm(self.text_embed(input_ids)).detach()
        cond = self.ungrouping(hidden)
        if self.srh_text is not None:
            if text_ids is None:
                raise ValueError("srh_text_embedding needs the text token of each step (text_ids)")
            # x sqrt(d_srh), as Gemma scales its embeddings: started at zero, Adam moves a weight by ~lr
            # a step, and unscaled it would take thousands of steps to reach the conditions' ~unit rms
            text = self.srh_text(text_ids) * self.config.srh_hidden_size**0.5
            cond = cond + text.unsqueeze(-2).to(cond.dtype)
        return cond

    # ---- training ------------------------------------------------------------------------------------
    def _hidden(self, batch: Batch) -> torch.Tensor:
        """(B, L, D) final LLM hidden states of a teacher-forced batch."""
        emb = self.embed_inputs(batch.input_ids, batch.speech_inputs, batch.speech_input_mask, batch.mels)
        return self.llm.model(inputs_embeds=emb, attention_mask=batch.attention_mask).last_hidden_state

    def text_logits(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Text-head logits at the positions with a text target, (Nt, V), and their sample index (Nt,).

        Rows run sample by sample, in position order: two batches whose samples have the same text
        targets list them alike (distillation compares a teacher's rows with a student's).
        """
        hidden = self._hidden(batch)
        mask = batch.text_targets != IGNORE
        return self.llm.lm_head(hidden[mask]), mask.nonzero()[:, 0]

    def _emitted_text(self, batch: Batch, b: int, pos: torch.Tensor) -> torch.Tensor:
        """The text token emitted with each group at positions `pos` of sample `b`: its text target,
        or where the reply text is not a target (`Sample.text_target`) the token fed next, which is
        the same token; <|sil|> where neither exists (the last position of such a reply)."""
        emitted = batch.text_targets[b, pos]
        nxt = (pos + 1).clamp(max=batch.input_ids.shape[1] - 1)
        fed = (pos + 1 < batch.input_ids.shape[1]) & (batch.attention_mask[b, nxt] > 0)
        fallback = torch.where(fed, batch.input_ids[b, nxt], self.config.special_token_ids["sil"])
        return torch.where(emitted == IGNORE, fallback, emitted)

    def _heads(self, batch: Batch) -> _Heads:
        hidden = self._hidden(batch)  # (B, L, D)

        text_mask = batch.text_targets != IGNORE  # (B, L)
        text_logits = self.llm.lm_head(hidden[text_mask])  # (Nt, V)
        text_batch_index = text_mask.nonzero()[:, 0]

        # SRH: one 25 Hz sequence per sample from the positions that own a speech group (eq. 6)
        bos, pad = self.config.speech_bos, self.config.speech_pad
        owns_group = batch.speech_targets[..., 0] != IGNORE  # (B, L)
        cond_rows, prev_rows, target_rows = [], [], []
        for b in range(batch.input_ids.shape[0]):
            pos = owns_group[b].nonzero().squeeze(-1)
            if pos.numel() == 0:
                continue
            text_ids = self._emitted_text(batch, b, pos)
            cond = self.srh_condition(hidden[b, pos], batch.input_ids[b, pos], text_ids)  # (n, k, d_srh)
            targets = batch.speech_targets[b, pos].reshape(-1)  # (n*k,)
            prev = torch.cat([targets.new_tensor([bos]), targets[:-1]])
            cond_rows.append(cond.reshape(-1, cond.shape[-1]))
            prev_rows.append(prev)
            target_rows.append(targets)
        if target_rows:
            srh_mask = pad_sequence([torch.ones_like(t) for t in target_rows], batch_first=True)  # (B', J)
            logits = self.srh(
                pad_sequence(prev_rows, batch_first=True, padding_value=pad),
                pad_sequence(cond_rows, batch_first=True),
                attention_mask=srh_mask,
            )  # (B', J, V_s)
            targets = pad_sequence(target_rows, batch_first=True, padding_value=pad)
            valid = (targets != pad) & (srh_mask > 0)
            rows_with_speech = owns_group.any(dim=1).nonzero().squeeze(-1)
            speech_batch_index = rows_with_speech[:, None].expand_as(targets)[valid]
            speech_logits, speech_targets = logits[valid], targets[valid]
        else:
            speech_logits = hidden.new_zeros(0, self.config.speech_vocab_total)
            speech_targets = batch.input_ids.new_zeros(0)
            speech_batch_index = batch.input_ids.new_zeros(0)
        return _Heads(
            text_logits,
            batch.text_targets[text_mask],
            text_batch_index,
            speech_logits,
            speech_targets,
            speech_batch_index,
        )

    def forward(self, batch: Batch) -> DrVoiceOutput:
        """Teacher-forced losses on assistant positions only (eq. 7)."""
        heads = self._heads(batch)
        zero = heads.text_logits.sum() * 0.0
        text_loss = (
            F.cross_entropy(heads.text_logits.float(), heads.text_targets)
            if len(heads.text_targets)
            else zero
        )
        speech_loss = (
            F.cross_entropy(heads.speech_logits.float(), heads.speech_targets)
            if len(heads.speech_targets)
            else heads.speech_logits.sum() * 0.0 + zero
        )
        loss = self.config.text_loss_weight * text_loss + self.config.speech_loss_weight * speech_loss
        return DrVoiceOutput(loss, text_loss, speech_loss, len(heads.text_targets), len(heads.speech_targets))

    def sequence_logprobs(self, batch: Batch) -> SequenceLogprobs:
        """Sum of log-probs of each sample's text and speech targets (for DPO / GSPO)."""
        heads = self._heads(batch)
        b = batch.input_ids.shape[0]

        def per_sample(logits: torch.Tensor, targets: torch.Tensor, index: torch.Tensor):
            lp = torch.log_softmax(logits.float(), dim=-1).gather(-1, targets[:, None]).squeeze(-1)
            total = torch.zeros(b, device=logits.device).index_add(0, index, lp)
            count = torch.zeros(b, device=logits.device).index_add(0, index, torch.ones_like(lp))
            return total, count

        text, text_count = per_sample(heads.text_logits, heads.text_targets, heads.text_batch_index)
        speech, speech_count = per_sample(heads.speech_logits, heads.speech_targets, heads.speech_batch_index)
        return SequenceLogprobs(text, speech, text_count, speech_count)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
