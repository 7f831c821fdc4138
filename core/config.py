"""Model configuration: one dataclass whose every field is a design choice of DESIGN.md §3."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

GROUPINGS = ("concat", "mean")
COMBINES = ("sum", "mean")
USER_AUDIO_KINDS = ("continuous", "discrete")


@dataclass
class DrVoiceConfig:
    """Configuration of a DrVoice model (saved as config.json of a checkpoint)."""

    llm: dict[str, Any]  # transformers config dict (with "model_type") of the shared LLM; vocab = text vocab
    srh: dict[str, Any]  # transformers config dict of the Speech Refined Head decoder (fed inputs_embeds)
    special_token_ids: dict[
        str, int
    ]  # text ids of <|im_start|>, <|sil|>, ... (text_tokenizer.SpecialTokenIds)
    speech_vocab_size: int = 6561  # N speech codes 0..N-1; bos = N, eos = N+1, pad = N+2
    group_size: int = 5  # k speech tokens per LLM step: 25 Hz -> 5 Hz (eq. 3)
    grouping: str = "concat"  # "concat": Linear(concat of k embeddings) (paper eq. 3); "mean": Linear(mean)
    combine: str = "sum"  # eq. (1) assistant input: "sum" E_text + G (paper) or "mean" (E_text + G) / 2
    # eq. (1) with the text term scaled, c = s * E_text + G: a grouping trained from scratch can outgrow
    # the text embeddings (the demo's G ~42 against E_text ~1.4 in norm), and the LLM then barely sees
    # the reply text it writes while it speaks
    text_input_scale: float = 1.0
    speech_delay: int = 0  # speech starts this many LLM steps after the text (Fun-Audio-Chat uses 2)
    speech_embed_dim: int = 0  # width of the speech-token embeddings before grouping; 0 = LLM width
    srh_text_condition: bool = False  # add the input token's final-normed embedding to h before W_p
    # the SRH's own embedding of each step's reply text token (the one the text head emits with that
    # group), added to its k conditions: its self-attention then reads the reply text written so far
    srh_text_embedding: bool = False
    user_audio: str = (
        "continuous"  # "continuous": Whisper encoder + adapter; "discrete": grouped speech tokens
    )
    encoder: dict[str, Any] | None = None  # core.encoder.EncoderConfig dict (user_audio == "continuous")
    max_positions: int = 2048  # LLM sequence budget (2K positions ~ 6.8 min at 5 Hz, appendix A)
    speech_input_dropout: float = 0.0  # training only: share of speech groups left out of the LLM input
    text_loss_weight: float = 1.0  # lambda of eq. (7)
    speech_loss_weight: float = 1.0  # mu of eq. (7)
    codec: dict[str, Any] = field(default_factory=lambda: {"type": "units", "path": "codec"})  # detokenizer
    name: str = "drvoice"  # a label shown in the app and stored with every turn

    def __post_init__(self) -> None:
        if self.grouping not in GROUPINGS:
            raise ValueError(f"grouping must be one of {GROUPINGS}, got {self.grouping!r}")
        if self.combine not in COMBINES:
            raise ValueError(f"combine must be one of {COMBINES}, got {self.combine!r}")
        if self.user_audio not in USER_AUDIO_KINDS:
            raise ValueError(f"user_audio must be one of {USER_AUDIO_KINDS}, got {self.user_audio!r}")
        if self.group_size < 1:
            raise ValueError(f"group_size must be >= 1, got {self.group_size}")
        if not self.text_input_scale > 0:
            raise ValueError(f"text_input_scale must be > 0, got {self.text_input_scale}")
        if self.speech_delay < 0:
            raise ValueError(f"speech_delay must be >= 0, got {self.speech_delay}")
        if not 0.0 <= self.speech_input_dropout < 1.0:
            raise ValueError(f"speech_input_dropout must be in [0, 1), got {self.speech_input_dropout}")
        if self.speech_vocab_size < 2:
            raise ValueError(f"speech_vocab_size must be >= 2, got {self.speech_vocab_size}")
        if self.user_audio == "continuous" and self.encoder is None:
            raise ValueError("encoder config is required when user_audio == 'continuous'")
        for key in ("model_type", "hidden_size", "vocab_size"):
            if key not in self.llm:
                raise ValueError(f"llm config lacks {key!r}")
            if key not in self.srh:
                raise ValueError(f"srh config lacks {key!r}")
        if self.srh["vocab_size"] != self.speech_vocab_total:
            raise ValueError(
                f"srh.vocab_size must equal speech_vocab_size + 3 = {self.speech_vocab_total} "
                f"(its embed_tokens is the SRH speech embedding), got {self.srh['vocab_size']}"
            )
        if self.max_positions < 16:
            raise ValueError(f"max_positions must be >= 16, got {self.max_positions}")

    @property
    def speech_bos(self) -> int:
        return self.speech_vocab_size

    @property
    def speech_eos(self) -> int:
        return self.speech_vocab_size + 1

    @property
    def speech_pad(self) -> int:
        return self.speech_vocab_size + 2

    @property
    def speech_vocab_total(self) -> int:
        """Codes plus bos, eos and pad."""
        return self.speech_vocab_size + 3

    @property
    def llm_hidden_size(self) -> int:
        return int(self.llm["hidden_size"])

    @property
    def srh_hidden_size(self) -> int:
        return int(self.srh["hidden_size"])

    @property
    def speech_embed_width(self) -> int:
        return self.speech_embed_dim or self.llm_hidden_size

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DrVoiceConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown config fields: {', '.join(unknown)}")
        return cls(**data)


def qwen2_config_dict(
    vocab_size: int,
    hidden_size: int,
    num_layers: int,
    num_heads: int,
    num_kv_heads: int | None = None,
    intermediate_size: int | None = None,
    max_positions: int = 4096,
    rope_theta: float = 10000.0,
    tie_word_embeddings: bool = True,
) -> dict[str, Any]:
    """A Qwen2 transformers config dict (tiny sizes for tests and the demo)."""
    return {
        "model_type": "qwen2",
        "vocab_size": vocab_size,
        "hidden_size": hidden_size,
        "intermediate_size": intermediate_size or 4 * hidden_size,
        "num_hidden_layers": num_layers,
        "num_attention_heads": num_heads,
        "num_key_value_heads": num_kv_heads or num_heads,
        "max_position_embeddings": max_positions,
        "rope_parameters": {"rope_type": "default", "rope_theta": rope_theta},
        "tie_word_embeddings": tie_word_embeddings,
        "attention_dropout": 0.0,
    }


def small_config(
    special_token_ids: dict[str, int],
    text_vocab_size: int,
    speech_vocab_size: int,
    *,
    llm_hidden: int = 256,
    llm_layers: int = 4,
    llm_heads: int = 4,
    srh_hidden: int = 256,
    srh_layers: int = 2,
    srh_heads: int = 4,
    group_size: int = 5,
    user_audio: str = "continuous",
    encoder_state: int = 128,
    encoder_layers: int = 2,
    n_mels: int = 80,
    **overrides: Any,
) -> DrVoiceConfig:
    """Builds a small from-scratch DrVoice config (tests: pass tiny widths; demo: the defaults).

    The defaults (LLM 4x256, SRH 2x256, 2-layer 128-wide audio encoder) are the demo size class
    (~10 M parameters with a ~1K text vocabulary and 1K speech units).
    """
    from core.encoder import EncoderConfig

    encoder = None
    if user_audio == "continuous":
        encoder = EncoderConfig(
            n_mels=n_mels,
            n_audio_ctx=1500,
            n_audio_state=encoder_state,
            n_audio_head=max(1, encoder_state // 64),
            n_audio_layer=encoder_layers,
            downsample=10,
            adapter_hidden=llm_hidden,
            pad_to_window=False,
            llm_hidden_size=llm_hidden,
        ).to_dict()
    return DrVoiceConfig(
        llm=qwen2_config_dict(text_vocab_size, llm_hidden, llm_layers, llm_heads, max_positions=4096),
        srh=qwen2_config_dict(
            speech_vocab_size + 3,
            srh_hidden,
            srh_layers,
            srh_heads,
            max_positions=16384,
            tie_word_embeddings=False,
        ),
        special_token_ids=dict(special_token_ids),
        speech_vocab_size=speech_vocab_size,
        group_size=group_size,
        user_audio=user_audio,
        encoder=encoder,
        **overrides,
    )
