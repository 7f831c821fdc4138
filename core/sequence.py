"""Layout of a DrVoice LLM sequence: ChatML prompt, chain text phase and the parallel phase.

One definition is shared by training (teacher-forced examples) and inference (prompts), so the
generator sees exactly the positions the model was trained on.

Layout of one assistant turn (positions of the shared LLM, 5 Hz in the parallel phase):

    <|im_start|>system\\n{Table 5 prompt}<|im_end|>\\n
    <|im_start|>user\\n{text | <|AUDIO|> x n}<|im_end|>\\n          (history turns repeat user/assistant)
    <|im_start|>assistant\\n
    [chain modes] {transcript}\\n{draft} <|audio_bos|>          text-only phase, one token per position
    [S2M/T2M]     <|audio_bos|> is part of the prompt
    parallel phase: the hidden state at <|audio_bos|> (position P0) and at each later position P0+i
    predicts text token x_i (reply tokens, <|im_end|>, then <|sil|> while speech continues) AND, through
    the SRH, speech group g_i (k tokens; the last real group ends with eos, then pad). The input at
    P0+i+1 is E_text(x_i) + G(g_i) (eq. 1). The first `speech_delay` groups are all pad (not predicted).
    Text-only modes: {reply}<|im_end|> after the assistant header.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from core.config import DrVoiceConfig
from core.grouping import group_tokens
from core.modes import Mode, chain_text, get_mode

IGNORE = -100


@dataclass
class UserInput:
    """One user turn: text, or speech (continuous: mel frames; discrete: speech tokens)."""

    text: str | None = None
    mels: torch.Tensor | None = None  # (n_mels, frames) log-mel of the user's speech (continuous input)
    speech_tokens: list[int] | None = None  # 25 Hz codes of the user's speech (discrete input)

    @property
    def has_audio(self) -> bool:
        return self.mels is not None or self.speech_tokens is not None


@dataclass
class HistoryTurn:
    """An earlier exchange; assistant replies are kept as text."""

    user: UserInput
    assistant_text: str


@dataclass
class Sample:
    """One assistant turn to train on."""

    mode: str  # S2M, S2T, T2M, T2T, STC, SAC, SUC
    user: UserInput
    reply_text: str
    reply_speech: list[int] = field(default_factory=list)  # 25 Hz codes of the spoken reply
    transcript: str = ""  # the user's words (STC/SUC chain phase)
    draft: str | None = None  # chain text response (STC/SAC); defaults to reply_text
    history: list[HistoryTurn] = field(default_factory=list)
    system_prompt: str | None = None  # overrides the mode's Table 5 prompt
    # Exact token ids of a generated reply (GSPO scores what was sampled, not a re-tokenisation):
    reply_ids: list[int] | None = None  # reply text ids without <|im_end|>; replaces encoding reply_text
    chain_ids: list[int] | None = None  # chain-phase ids before <|audio_bos|>; replaces transcript + draft
    # Speech with no reply (STC/SUC only): targets on the chain phase's transcript alone, nothing after
    transcript_only: bool = False
    # False: the reply text is fed as the parallel text but never predicted (S2M/T2M only); the
    # speech is the only target, so it learns to say what the text says (training.data.counterfactual)
    text_target: bool = True


@dataclass
class Example:
    """A tokenised sample: per-position tensors of length L (see module docstring)."""

    input_ids: torch.Tensor  # (L,) text token ids (<|AUDIO|> at user-audio positions)
    speech_inputs: torch.Tensor  # (L, k) speech group fed at each position (pad where unused)
    speech_input_mask: torch.Tensor  # (L,) bool: position has a speech-group input
    text_targets: torch.Tensor  # (L,) text token predicted from each position, IGNORE where none
    speech_targets: torch.Tensor  # (L, k) speech group predicted by the SRH from each position, IGNORE
    mels: list[torch.Tensor]  # user-audio log-mels in order of their <|AUDIO|> runs

    def __len__(self) -> int:
        return int(self.input_ids.numel())


@dataclass
class Batch:
    """Right-padded examples for the training forward."""

    input_ids: torch.Tensor  # (B, L)
    attention_mask: torch.Tensor  # (B, L) long, 1 = real position
    speech_inputs: torch.Tensor  # (B, L, k)
    speech_input_mask: torch.Tensor  # (B, L) bool
    text_targets: torch.Tensor  # (B, L)
    speech_targets: torch.Tensor  # (B, L, k)
    mels: list[torch.Tensor]  # all user-audio log-mels, sample-major, in <|AUDIO|> run order

    def to(self, device: torch.device | str) -> Batch:
        return Batch(
            input_ids=self.input_ids.to(device),
            attention_mask=self.attention_mask.to(device),
            speech_inputs=self.speech_inputs.to(device),
            speech_input_mask=self.speech_input_mask.to(device),
            text_targets=self.text_targets.to(device),
            speech_targets=self.speech_targets.to(device),
            mels=[m.to(device) for m in self.mels],
        )


class SequenceBuilder:
    """Turns prompts and samples into token layouts for one model config and tokenizer."""

    def __init__(self, config: DrVoiceConfig, tokenizer):
        self.config = config
        self.tokenizer = tokenizer
        self.ids = config.special_token_ids
        self.k = config.group_size
        self.pad = config.speech_pad

    def encode_text(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False) if text else []

    def audio_positions(self, user: UserInput) -> int:
        """Number of 5 Hz <|AUDIO|> positions a user recording occupies."""
        if self.config.user_audio == "continuous":
            if user.mels is None:
                raise ValueError("this model takes continuous user audio: pass log-mel features (mels)")
            from core.encoder import EncoderConfig, num_output_frames

            return num_output_frames(int(user.mels.shape[-1]), EncoderConfig.from_dict(self.config.encoder))
        if user.speech_tokens is None:
            raise ValueError("this model takes discrete user audio: pass the user's speech tokens")
        return math.ceil(len(user.speech_tokens) / self.k)

    # ---- prompt -----------------------------------------------------------------------------------
    def _user_turn(self, user: UserInput, use_audio: bool, rows: _Rows) -> None:
        rows.text([self.ids["im_start"]] + self.encode_text("user\n"))
        if use_audio:
            n = self.audio_positions(user)
            if self.config.user_audio == "continuous":
                rows.text([self.ids["audio"]] * n)
                rows.mels.append(user.mels)
            else:
                groups = group_tokens(user.speech_tokens, self.k, self.pad)  # (n, k)
                for g in groups:
                    rows.add(self.ids["audio"], speech_in=g)
        else:
            if not user.text:
                raise ValueError("a text turn needs user text")
            rows.text(self.encode_text(user.text))
        rows.text([self.ids["im_end"]] + self.encode_text("\n"))

    def _prompt_rows(
        self, mode: Mode, user: UserInput, history: list[HistoryTurn], system_prompt: str | None
    ) -> _Rows:
        rows = _Rows(self.k, self.pad)
        prompt = system_prompt if system_prompt is not None else mode.system_prompt
        rows.text([self.ids["im_start"]] + self.encode_text("system\n" + prompt) + [self.ids["im_end"]])
        rows.text(self.encode_text("\n"))
        for turn in history:
            self._user_turn(turn.user, turn.user.has_audio, rows)
            rows.text([self.ids["im_start"]] + self.encode_text("assistant\n" + turn.assistant_text))
            rows.text([self.ids["im_end"]] + self.encode_text("\n"))
        if mode.speech_input and not user.has_audio:
            raise ValueError(f"mode {mode.name} takes speech input: record or upload audio")
        if not mode.speech_input and not user.text:
            raise ValueError(f"mode {mode.name} takes text input: type a message")
        self._user_turn(user, mode.speech_input, rows)
        rows.text([self.ids["im_start"]] + self.encode_text("assistant\n"))
        if mode.speech_output and not mode.is_chain:
            rows.text([self.ids["audio_bos"]])
        return rows

    def prompt(
        self,
        mode: str,
        user: UserInput,
        history: list[HistoryTurn] | None = None,
        system_prompt: str | None = None,
    ) -> Example:
        """The prompt of a turn (no targets); generation continues after its last position."""
        rows = self._prompt_rows(get_mode(mode), user, history or [], system_prompt)
        return rows.build()

    # ---- training example --------------------------------------------------------------------------
    def example(self, sample: Sample) -> Example:
        """A teacher-forced training example of `sample` (targets on the assistant turn only)."""
        mode = get_mode(sample.mode)
        rows = self._prompt_rows(mode, sample.user, sample.history, sample.system_prompt)
        if sample.transcript_only:
            if not (mode.speech_input and mode.has_transcript):
                raise ValueError(
                    f"transcript_only needs STC or SUC (speech in, transcript first), not {mode.name}"
                )
            for tok in self.encode_text(sample.transcript):  # what the chain phase starts with
                rows.target_last(tok)
                rows.add(tok)
            rows.drop_last()  # the transcript's last token is predicted, not fed
            return rows.build()
        reply = self.encode_text(sample.reply_text) if sample.reply_ids is None else list(sample.reply_ids)
        ids = self.ids
        if not sample.text_target and (not mode.speech_output or mode.is_chain):
            raise ValueError(f"a reply without text targets needs S2M or T2M, not {mode.name}")
        if not mode.speech_output:
            # text-only reply: each position predicts the next token
            for tok in [*reply, ids["im_end"]]:
                rows.target_last(tok)
                rows.add(tok)
            rows.drop_last()  # <|im_end|> is predicted, never fed
            return rows.build()
        if mode.is_chain:
            if sample.chain_ids is not None:
                phase = list(sample.chain_ids)
            else:
                draft = sample.reply_text if sample.draft is None else sample.draft
                phase = self.encode_text(chain_text(mode, sample.transcript, draft))
            for tok in [*phase, ids["audio_bos"]]:
                rows.target_last(tok)
                rows.add(tok)
        if not sample.reply_speech and sample.reply_ids is None:  # a generated reply may end speech at once
            raise ValueError(f"mode {mode.name} needs the reply's speech tokens")
        # parallel phase: speech + eos, grouped; text + <|im_end|>, then <|sil|>
        groups = group_tokens([*sample.reply_speech, self.config.speech_eos], self.k, self.pad)  # (G, k)
        delay = self.config.speech_delay
        text_stream = [*reply, ids["im_end"]]
        steps = max(len(text_stream), delay + len(groups))
        pad_group = torch.full((self.k,), self.pad, dtype=torch.long)
        for i in range(steps):
            x = text_stream[i] if i < len(text_stream) else ids["sil"]
            g = groups[i - delay] if delay <= i < delay + len(groups) else None
            rows.target_last(x if sample.text_target else IGNORE, g)
            if i < steps - 1:
                rows.add(x, speech_in=g if g is not None else pad_group)
        return rows.build()

    def examples_length(self, sample: Sample) -> int:
        return len(self.example(sample))


class _Rows:
    """Accumulates per-position rows of an Example."""

    def __init__(self, k: int, pad: int):
        self.k, self.pad = k, pad
        self.ids: list[int] = []
        self.speech: list[torch.Tensor | None] = []
        self.text_t: list[int] = []
        self.speech_t: list[torch.Tensor | None] = []
        self.mels: list[torch.Tensor] = []

    def add(self, token: int, speech_in: torch.Tensor | None = None) -> None:
        self.ids.append(int(token))
        self.speech.append(speech_in)
        self.text_t.append(IGNORE)
        self.speech_t.append(None)

    def text(self, tokens: list[int]) -> None:
        for t in tokens:
            self.add(t)

    def target_last(self, text_target: int, speech_target: torch.Tensor | None = None) -> None:
        self.text_t[-1] = int(text_target)
        self.speech_t[-1] = speech_target

    def drop_last(self) -> None:
        for lst in (self.ids, self.speech, self.text_t, self.speech_t):
            lst.pop()

    def build(self) -> Example:
        n = len(self.ids)
        speech_inputs = torch.full((n, self.k), self.pad, dtype=torch.long)
        speech_mask = torch.zeros(n, dtype=torch.bool)
        speech_targets = torch.full((n, self.k), IGNORE, dtype=torch.long)
        for i, (s, t) in enumerate(zip(self.speech, self.speech_t, strict=True)):
            if s is not None:
                speech_inputs[i] = s
                speech_mask[i] = True
            if t is not None:
                speech_targets[i] = t
        return Example(
            input_ids=torch.tensor(self.ids, dtype=torch.long),
            speech_inputs=speech_inputs,
            speech_input_mask=speech_mask,
            text_targets=torch.tensor(self.text_t, dtype=torch.long),
            speech_targets=speech_targets,
            mels=list(self.mels),
        )


def collate(examples: list[Example], pad_token_id: int, speech_pad: int) -> Batch:
    """Right-pads examples into a Batch."""
    if not examples:
        raise ValueError("cannot collate an empty list of examples")
    b, length = len(examples), max(len(e) for e in examples)
    k = examples[0].speech_inputs.shape[1]
    batch = Batch(
        input_ids=torch.full((b, length), pad_token_id, dtype=torch.long),
        attention_mask=torch.zeros((b, length), dtype=torch.long),
        speech_inputs=torch.full((b, length, k), speech_pad, dtype=torch.long),
        speech_input_mask=torch.zeros((b, length), dtype=torch.bool),
        text_targets=torch.full((b, length), IGNORE, dtype=torch.long),
        speech_targets=torch.full((b, length, k), IGNORE, dtype=torch.long),
        mels=[m for e in examples for m in e.mels],
    )
    for i, e in enumerate(examples):
        n = len(e)
        batch.input_ids[i, :n] = e.input_ids
        batch.attention_mask[i, :n] = 1
        batch.speech_inputs[i, :n] = e.speech_inputs
        batch.speech_input_mask[i, :n] = e.speech_input_mask
        batch.text_targets[i, :n] = e.text_targets
        batch.speech_targets[i, :n] = e.speech_targets
    return batch
