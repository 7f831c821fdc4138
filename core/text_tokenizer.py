"""Text tokenizer helpers: DrVoice special tokens, a small byte-level BPE for tiny/demo models."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
END_OF_TEXT = "<|endoftext|>"
SIL = "<|sil|>"  # text pad while the speech stream continues
AUDIO_BOS = "<|audio_bos|>"  # switches the parallel speech stream on
AUDIO_EOS = "<|audio_eos|>"
AUDIO = "<|AUDIO|>"  # placeholder for one 5 Hz user-audio position
CHAT_TOKENS = (IM_START, IM_END, END_OF_TEXT)
DRVOICE_TOKENS = (SIL, AUDIO_BOS, AUDIO_EOS, AUDIO)


@dataclass(frozen=True)
class SpecialTokenIds:
    """Ids of the special text tokens the model and generator rely on."""

    im_start: int
    im_end: int
    end_of_text: int
    sil: int
    audio_bos: int
    audio_eos: int
    audio: int
    newline: int  # id of "\n" (ChatML separators)

    @classmethod
    def from_tokenizer(cls, tokenizer: PreTrainedTokenizerBase) -> SpecialTokenIds:
        ids = {}
        vocab = tokenizer.get_vocab()
        for name, tok in (
            ("im_start", IM_START),
            ("im_end", IM_END),
            ("end_of_text", END_OF_TEXT),
            ("sil", SIL),
            ("audio_bos", AUDIO_BOS),
            ("audio_eos", AUDIO_EOS),
            ("audio", AUDIO),
        ):
            # membership, not "id != unk": Qwen2Tokenizer's default unk token is <|endoftext|> itself
            tid = vocab.get(tok)
            if tid is None:
                raise ValueError(f"tokenizer lacks the special token {tok}; call add_drvoice_tokens first")
            ids[name] = int(tid)
        newline = tokenizer.encode("\n", add_special_tokens=False)
        if len(newline) != 1:
            raise ValueError("tokenizer must encode '\\n' as a single token")
        return cls(**ids, newline=newline[0])

    def to_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def add_drvoice_tokens(tokenizer: PreTrainedTokenizerBase) -> int:
    """Adds the ChatML and DrVoice special tokens that are missing; returns how many were added."""
    missing = [t for t in CHAT_TOKENS + DRVOICE_TOKENS if t not in tokenizer.get_vocab()]
    if missing:
        tokenizer.add_special_tokens(
            {"additional_special_tokens": missing}, replace_extra_special_tokens=False
        )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = END_OF_TEXT
    return len(missing)


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int = 512) -> PreTrainedTokenizerFast:
    """Trains a byte-level BPE (any text encodes: the 256 bytes are the base alphabet).

    Used for tiny test models and the demo checkpoint, whose shared LLM is trained from scratch.

    Args:
        texts: training sentences.
        vocab_size: total vocabulary size including the special tokens (>= 300).
    Returns:
        A fast tokenizer with the ChatML and DrVoice special tokens added.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    if vocab_size < 300:
        raise ValueError(f"vocab_size must be >= 300 (256 bytes + specials), got {vocab_size}")
    specials = list(CHAT_TOKENS + DRVOICE_TOKENS)
    tok = Tokenizer(models.BPE())
    # Digits are split one by one so numbers are spelled digit-wise (small models learn them better).
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=END_OF_TEXT, eos_token=IM_END)
    add_drvoice_tokens(fast)
    return fast
