"""The standalone TTS LM of SRH pretraining strategy 1 (paper appendix A and C, "SRH-Pretraining").

A small causal LM (any transformers `AutoModelForCausalLM`; the paper trains Qwen2.5-0.5B) over one
vocabulary that holds the text tokens first and the speech vocabulary after them:

    ids 0 .. T-1             text tokens (T = the shared LLM's text vocabulary size)
    ids T .. T+N-1           speech codes 0 .. N-1 (25 Hz)
    ids T+N, T+N+1, T+N+2    speech bos, eos, pad

trained on TTS in the T2M format (text first, then its speech):

    [reply text tokens] [speech bos] [25 Hz speech tokens] [speech eos]

with the loss on the speech positions only (the tokens after bos, eos included). Its decoder layers
and final norm then become the SRH decoder, the speech rows of its input embeddings the SRH speech
embedding E_srh and the speech rows of its LM head the SRH head (`load_into_srh`). The SRH reads
E_srh(s_{j-1}) (+ H_j) to predict s_j, the same teacher-forced pairing as the LM's next-token
prediction, so the weights transfer without any change.

A saved TTS LM is a Hugging Face `save_pretrained` directory whose config carries
`drvoice_text_vocab_size` and `drvoice_speech_vocab_size` (how to find the speech rows); `build`
takes it as `--srh_init`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn.utils.rnn import pad_sequence
from transformers import AutoModelForCausalLM, PreTrainedModel

from core.srh import SpeechRefinedHead, build_transformers_config

IGNORE = -100
TEXT_VOCAB_KEY = "drvoice_text_vocab_size"  # config attribute: T, where the speech rows start
SPEECH_VOCAB_KEY = "drvoice_speech_vocab_size"  # config attribute: N speech codes (rows = N + 3)


def build_tts_lm(srh_config: dict, text_vocab_size: int, speech_vocab_size: int) -> PreTrainedModel:
    """A randomly initialised TTS LM with the SRH's architecture and vocab T + N + 3.

    Args:
        srh_config: the transformers config dict of the SRH decoder (`DrVoiceConfig.srh`).
        text_vocab_size: T, the shared LLM's text vocabulary size.
        speech_vocab_size: N speech codes (bos/eos/pad follow).
    """
    config = build_transformers_config({**srh_config, "vocab_size": text_vocab_size + speech_vocab_size + 3})
    setattr(config, TEXT_VOCAB_KEY, int(text_vocab_size))
    setattr(config, SPEECH_VOCAB_KEY, int(speech_vocab_size))
    return AutoModelForCausalLM.from_config(config)


def is_tts_lm(model: PreTrainedModel) -> bool:
    """Whether `model` is a TTS LM of this module (its config says where the speech rows are)."""
    return hasattr(model.config, TEXT_VOCAB_KEY) and hasattr(model.config, SPEECH_VOCAB_KEY)


def speech_rows(model: PreTrainedModel) -> slice:
    """The rows of the TTS LM's embeddings / LM head that belong to the speech vocabulary (N + 3)."""
    start = int(getattr(model.config, TEXT_VOCAB_KEY))
    return slice(start, start + int(getattr(model.config, SPEECH_VOCAB_KEY)) + 3)


def t2m_sequence(
    text_ids: Sequence[int], speech_tokens: Sequence[int], text_vocab_size: int, speech_vocab_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """One T2M training sequence and its labels.

    Example (T = 10, N = 4: bos = 14, eos = 15): text [3, 5], speech [0, 2] gives
        input_ids [3, 5, 14, 10, 12, 15]
        labels    [-100, -100, -100, 10, 12, 15]
    (transformers shifts labels: the position of bos predicts 10, ..., the last code predicts eos).

    Returns:
        input_ids (L,), labels (L,) long.
    """
    if any(not 0 <= s < speech_vocab_size for s in speech_tokens):
        raise ValueError(f"speech tokens must be in [0, {speech_vocab_size})")
    bos, eos = text_vocab_size + speech_vocab_size, text_vocab_size + speech_vocab_size + 1
    speech = [text_vocab_size + int(s) for s in speech_tokens] + [eos]
    ids = torch.tensor([*text_ids, bos, *speech], dtype=torch.long)
    labels = torch.tensor([IGNORE] * (len(text_ids) + 1) + speech, dtype=torch.long)
    return ids, labels


def collate_t2m(
    sequences: Sequence[tuple[torch.Tensor, torch.Tensor]], pad_id: int
) -> dict[str, torch.Tensor]:
    """Right-pads (input_ids, labels) pairs into the keyword arguments of the LM's forward."""
    ids = pad_sequence([s[0] for s in sequences], batch_first=True, padding_value=pad_id)  # (B, L)
    labels = pad_sequence([s[1] for s in sequences], batch_first=True, padding_value=IGNORE)  # (B, L)
    mask = pad_sequence([torch.ones_like(s[0]) for s in sequences], batch_first=True)  # (B, L)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def _decoder(model: PreTrainedModel) -> nn.Module:
    return model.base_model  # the causal LM's decoder stack (Qwen2Model for Qwen2)


def copy_decoder(source: nn.Module, target: nn.Module) -> None:
    """Copies every decoder weight except the input embeddings (layers, final norm, ...).

    Raises:
        ValueError: the two decoders differ in architecture (names or shapes); the message names
            the first mismatch.
    """
    src = {k: v for k, v in source.state_dict().items() if not k.startswith("embed_tokens.")}
    dst = {k: v for k, v in target.state_dict().items() if not k.startswith("embed_tokens.")}
    if set(src) != set(dst):
        diff = sorted(set(src) ^ set(dst))[:5]
        raise ValueError(
            f"decoder architectures differ (parameters {diff}); use the SRH's model type and depth"
        )
    for k, v in src.items():
        if v.shape != dst[k].shape:
            raise ValueError(
                f"decoder weight {k} has shape {tuple(v.shape)}, the target needs {tuple(dst[k].shape)}"
            )
    with torch.no_grad():
        for k, v in src.items():
            dst[k].copy_(v)


def load_into_srh(tts_lm: PreTrainedModel, srh: SpeechRefinedHead) -> None:
    """Strategy 1: TTS LM decoder -> `srh.decoder`, speech rows of its embeddings -> E_srh, of its
    LM head -> `srh.head` (in place, exact copies)."""
    rows = speech_rows(tts_lm)
    embed = tts_lm.get_input_embeddings().weight[rows]  # (N+3, d_srh)
    head = tts_lm.get_output_embeddings().weight[rows]  # (N+3, d_srh)
    if embed.shape != srh.embed.weight.shape:
        raise ValueError(
            f"the TTS LM has {embed.shape[0]} speech rows of width {embed.shape[1]}; the SRH needs "
            f"{tuple(srh.embed.weight.shape)} (speech_vocab_size + 3, srh hidden size)"
        )
    copy_decoder(_decoder(tts_lm), srh.decoder)
    with torch.no_grad():
        srh.embed.weight.copy_(embed)
        srh.head.weight.copy_(head)


def init_from_srh(tts_lm: PreTrainedModel, srh: SpeechRefinedHead) -> None:
    """Starts a TTS LM from an SRH (the reverse of `load_into_srh`; text rows keep their init).

    A checkpoint built with `--srh_init Qwen2.5-0.5B` thus pretrains Qwen's layers, as the paper does.
    """
    rows = speech_rows(tts_lm)
    copy_decoder(srh.decoder, _decoder(tts_lm))
    with torch.no_grad():
        tts_lm.get_input_embeddings().weight[rows] = srh.embed.weight
        tts_lm.get_output_embeddings().weight[rows] = srh.head.weight
