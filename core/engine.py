"""VoiceChatEngine: the one object the app, the evaluation and the command line share.

A request (mode, user audio and/or text, history, sampling) goes in; typed events come out:
`PhaseStart` / `TextDelta` while text is written, `AudioChunk` while speech is decoded, and a
final `Done` with the reply text, the generated speech tokens and the timings.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from core.codec.background import BackgroundStream
from core.generate import DrVoiceGenerator, GenResult
from core.mel_views import VIEWS, mel_view
from core.modes import get_mode, split_chain_text, text_twin
from core.sampling import ModeSampling, SamplingConfig
from core.sequence import HistoryTurn, SequenceBuilder, UserInput
from core.types import AudioChunk, Done, Event, PhaseStart, TextDelta, Timings, Waveform

log = logging.getLogger(__name__)


@dataclass
class Exchange:
    """An earlier turn of the conversation."""

    user_text: str | None = None
    user_audio: Any = None  # anything core.audio.load_audio accepts (kept to re-encode speech turns)
    assistant_text: str = ""


@dataclass
class ChatRequest:
    """One user turn to answer."""

    mode: str  # S2M, S2T, T2M, T2T, STC, SAC, SUC
    text: str | None = None  # typed input (text modes)
    audio: Any = None  # recorded/uploaded input (speech modes): path, bytes, (sr, array) or Waveform
    history: list[Exchange] = field(default_factory=list)
    sampling: SamplingConfig | None = None  # None: the engine's for the mode (generation_config.json)
    system_prompt: str | None = None  # overrides the mode's Table 5 prompt
    max_text_chars: int = 2000  # longer typed input is refused with a clear error
    reply_text: str | None = None  # S2M/T2M: the reply to say; written as given, only the speech generated


class InputError(ValueError):
    """The request cannot be answered as given (missing or invalid input); readable message."""


def _bounded_text(text: str | None, max_chars: int, empty: str, what: str) -> str:
    """`text` stripped; InputError with `empty` when nothing is left, or naming `what` when it is
    longer than `max_chars`."""
    text = (text or "").strip()
    if not text:
        raise InputError(empty)
    if len(text) > max_chars:
        raise InputError(f"The {what} is {len(text)} characters long; the limit is {max_chars}.")
    return text


class _TextStream:
    """Incremental detokenisation: yields only new, complete characters."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.tokens: list[int] = []
        self.text = ""

    def push(self, token: int) -> str:
        self.tokens.append(token)
        text = self.tokenizer.decode(self.tokens, skip_special_tokens=True)
        if text.endswith("\ufffd"):  # an incomplete UTF-8 sequence: wait for the next token
            return ""
        delta, self.text = text[len(self.text) :], text
        return delta


class VoiceChatEngine:
    """Answers chat requests with a DrVoice checkpoint."""

    def __init__(
        self,
        model,
        tokenizer,
        codec=None,
        checkpoint_id: str = "drvoice",
        user_tokenizer=None,
        background_audio: bool | None = None,
        decode: str = "lean",
        matmul: str = "auto",
        sampling: ModeSampling | None = None,
    ):
        self.model = model.eval()
        # the decoding settings of a request that sets none: the checkpoint's recommended ones
        self.sampling = sampling or ModeSampling()
        self.decode = decode  # generator decode path: "lean" (core/kv_decoder.py) or "cached" (transformers)
        # the lean path's product precision: "auto" multiplies by float16 copies of float32 weights
        # on a CPU with several torch threads (`core.kv_decoder.matmul_dtype`), "fp32" by the weights
        self.matmul = matmul
        # Decode the reply's audio on a worker thread, overlapping generation (same chunks and
        # samples). None: when the model is on an accelerator or torch uses one CPU thread. With
        # several CPU threads each side's thread pool competes for the same cores (measured on 2
        # cores: real-time factor 0.18 with the worker, 0.16 without; with 1 thread 0.154 vs 0.166).
        self.background_audio = background_audio
        self.tokenizer = tokenizer
        self.codec = codec  # detokenizer for the reply's speech (None: text-only)
        self.user_tokenizer = user_tokenizer  # speech tokenizer for discrete user input
        self.checkpoint_id = checkpoint_id
        self.config = model.config
        self.builder = SequenceBuilder(self.config, tokenizer)
        self.generator = DrVoiceGenerator(self.model, draft_ids=self._draft_ids)
        self._lock = threading.Lock()  # one generation at a time per model (torch threads are shared)

    def _draft_ids(self, mode: str, chain_ids: list[int]) -> list[int]:
        """The drafted response of a chain phase, encoded the way training encodes the parallel text."""
        chain = self.tokenizer.decode(chain_ids, skip_special_tokens=False)
        return self.builder.encode_text(split_chain_text(get_mode(mode), chain)[1].strip())

    @classmethod
    def from_pretrained(
        cls, path_or_id, device: str = "cpu", dtype: torch.dtype | None = None
    ) -> VoiceChatEngine:
        from core.checkpoint import from_pretrained

        ckpt = from_pretrained(path_or_id, device=device, dtype=dtype)
        return cls(ckpt.model, ckpt.tokenizer, ckpt.codec, ckpt.checkpoint_id, sampling=ckpt.sampling)

    def warm_up(self) -> Done:
        """Answers one short made-up request through every part a reply uses (the ear, the LLM, the
        Speech Refined Head, the codec), so that the first user does not wait for what the first
        call sets up: the float16 weight copies, rope tables, the codec's windows, the thread
        pools' first run (on the demo, first audio after ~180 ms on a first call, ~90 ms after).
        Generation settings are the defaults with a few steps; nothing is stored."""
        speaks, sampling = self.codec is not None, SamplingConfig(max_new_steps=8)
        if self.config.user_audio == "continuous":  # 1 s of quiet noise: heard, not refused as silence
            noise = np.random.default_rng(0).normal(0.0, 0.05, 16000).astype(np.float32)
            request = ChatRequest("S2M" if speaks else "S2T", audio=Waveform(noise, 16000), sampling=sampling)
        else:
            request = ChatRequest("T2M" if speaks else "T2T", text="Hello!", sampling=sampling)
        return self.chat(request)[0]

    def sampling_for(self, request: ChatRequest) -> SamplingConfig:
        """The request's own settings, else what the checkpoint recommends for its mode."""
        return request.sampling or self.sampling.for_mode(request.mode)

    @property
    def sample_rate(self) -> int:
        return int(self.codec.sample_rate) if self.codec is not None else 0

    # ---- inputs --------------------------------------------------------------------------------------
    def _user_input(
        self,
        text: str | None,
        audio: Any,
        want_audio: bool,
        max_chars: int,
        view: tuple[float, float] | None,
        heard: dict | None = None,
    ) -> UserInput:
        if want_audio:
            if audio is None:
                raise InputError("This mode answers speech: record or upload audio first.")
            from core.audio import load_audio

            # (id(audio), view) -> what the model hears of it (log-mels, or speech tokens), made once
            # for all the prompts of one request
            heard = {} if heard is None else heard
            continuous = self.config.user_audio == "continuous"
            if (id(audio), None) not in heard:
                wav = load_audio(audio)
                if continuous:
                    from core.encoder import log_mel

                    heard[id(audio), None] = log_mel(wav, self.config.encoder["n_mels"])
                elif self.user_tokenizer is None:
                    raise InputError("this checkpoint takes discrete user speech but has no speech tokenizer")
                else:
                    heard[id(audio), None] = self.user_tokenizer.encode(wav).tolist()
            if not continuous:
                return UserInput(text=text, speech_tokens=list(heard[id(audio), None]))
            if view and (id(audio), view) not in heard:
                heard[id(audio), view] = mel_view(heard[id(audio), None], *view)
            return UserInput(text=text, mels=heard[id(audio), view or None])
        return UserInput(
            text=_bounded_text(text, max_chars, "This mode answers text: type a message first.", "message")
        )

    def build_prompt(
        self, request: ChatRequest, view: tuple[float, float] | None = None, heard: dict | None = None
    ):
        """The prompt layout of a request; `view` (tempo, warp) hears all its speech that way. `heard`:
        log-mels already made for this request's audio objects (prompts of one request share them)."""
        mode = get_mode(request.mode)
        limit = request.max_text_chars
        history = [
            HistoryTurn(
                self._user_input(h.user_text, h.user_audio, h.user_audio is not None, limit, view, heard),
                h.assistant_text,
            )
            for h in request.history
        ]
        user = self._user_input(request.text, request.audio, mode.speech_input, limit, view, heard)
        return self.builder.prompt(mode.name, user, history, request.system_prompt)

    def prompts(self, request: ChatRequest) -> tuple[Any, list, list]:
        """The request's prompt, those of its extra audio views and those of its text guide.

        Views: `SamplingConfig.audio_views` - 1 of `core.mel_views.VIEWS` after the plain one, for
        continuous user speech only. Guides (`SamplingConfig.text_guide` > 0, S2M/T2M): the same turn
        in the text-only twin mode (`core.modes.text_twin`) with its default system prompt, heard
        in the plain view and in every extra one. A prompt that does not fit the position budget
        is left out. Each audio input is decoded once, and heard in each view once, for all of them."""
        mode, sampling = get_mode(request.mode), self.sampling_for(request)
        continuous = mode.speech_input and self.config.user_audio == "continuous"
        extra = VIEWS[1 : sampling.audio_views] if continuous else ()
        twin = text_twin(mode) if sampling.text_guide > 0 else None
        heard: dict = {}  # each audio input decoded, and heard in each view, once for all the prompts

        def fitting(req: ChatRequest, views) -> list:
            prompts = (self.build_prompt(req, view, heard) for view in views)
            return [p for p in prompts if len(p) < self.config.max_positions]

        prompt = self.build_prompt(request, None, heard)
        guides = []
        if twin is not None:
            guides = fitting(dataclasses.replace(request, mode=twin.name, system_prompt=None), (None, *extra))
        return prompt, fitting(request, extra), guides

    # ---- streaming -----------------------------------------------------------------------------------
    def stream(self, request: ChatRequest, cancel: threading.Event | None = None) -> Iterator[Event]:
        """Answers one request, yielding events as they become ready (see module docstring).

        Raises:
            InputError / core.audio.AudioInputError: bad input (readable message).
            core.generate.LengthBudgetError: the conversation does not fit the position budget.
        """
        start = time.perf_counter()
        mode, sampling = get_mode(request.mode), self.sampling_for(request)
        if mode.speech_output and self.codec is None:
            raise InputError(f"mode {mode.name} speaks, but this checkpoint has no speech detokenizer")
        reply_ids = self._reply_ids(request, mode)
        with self._lock:
            prompt, views, guides = self.prompts(request)
            yield from self._run(prompt, mode, sampling, cancel, start, views, guides, reply_ids)

    def _reply_ids(self, request: ChatRequest, mode) -> list[int] | None:
        """The token ids of a request's given reply text (None when it has none)."""
        if request.reply_text is None:
            return None
        if not mode.speech_output or mode.is_chain:
            raise InputError(
                f"A given reply text needs a mode that speaks as it writes (S2M, T2M), not {mode.name}."
            )
        text = _bounded_text(
            request.reply_text, request.max_text_chars, "The reply text to say is empty.", "reply text"
        )
        return self.builder.encode_text(text)

    def _run(
        self, prompt, mode, sampling, cancel, start, views=(), guides=(), reply_ids=None
    ) -> Iterator[Event]:
        detok = None
        if mode.speech_output:
            background = self.background_audio
            if background is None:
                background = self.model.device.type != "cpu" or torch.get_num_threads() == 1
            detok = BackgroundStream(self.codec.stream()) if background else self.codec.stream()
        try:
            yield from self._steps(prompt, mode, sampling, cancel, start, detok, views, guides, reply_ids)
        finally:
            if isinstance(detok, BackgroundStream):
                detok.close()  # a cancelled or failed reply: stop the worker

    def _steps(
        self, prompt, mode, sampling, cancel, start, detok, views, guides, reply_ids
    ) -> Iterator[Event]:
        ids = self.config.special_token_ids
        chain_stream, reply_stream = _TextStream(self.tokenizer), _TextStream(self.tokenizer)
        first_text = first_audio = None
        n_chunks, n_samples = 0, 0
        codes: list[int] = []
        chain_phase_text = {"transcript": "", "draft": ""}
        current_phase = None
        result = GenResult()

        def audio_events(chunks: list[np.ndarray]) -> Iterator[AudioChunk]:
            nonlocal first_audio, n_chunks, n_samples
            for c in chunks:
                if len(c) == 0:
                    continue
                if first_audio is None:
                    first_audio = time.perf_counter() - start
                yield AudioChunk(np.asarray(c, dtype=np.float32), self.sample_rate, n_chunks)
                n_chunks += 1
                n_samples += len(c)

        for step in self.generator.stream(
            prompt,
            mode.name,
            sampling,
            decode=self.decode,
            matmul=self.matmul,
            cancel=cancel,
            result=result,
            views=views,
            guides=guides,
            reply_ids=reply_ids,
        ):
            tok = step.text_token
            if step.kind == "text" and mode.is_chain:
                if tok == ids["audio_bos"]:
                    continue
                chain_stream.push(tok)
                transcript, draft = split_chain_text(mode, chain_stream.text)
                for phase, new_text in (("transcript", transcript), ("draft", draft)):
                    delta = new_text[len(chain_phase_text[phase]) :]
                    if not delta:
                        continue
                    if current_phase != phase:
                        current_phase = phase
                        yield PhaseStart(phase)
                    chain_phase_text[phase] = new_text
                    yield TextDelta(delta, phase)
            elif tok is not None and tok != ids["im_end"]:
                if current_phase != "reply":
                    current_phase = "reply"
                    yield PhaseStart("reply")
                delta = reply_stream.push(tok)
                if delta:
                    if first_text is None:
                        first_text = time.perf_counter() - start
                    yield TextDelta(delta, "reply")
            if step.speech_tokens:
                codes.extend(step.speech_tokens)
                if isinstance(detok, BackgroundStream):  # the first chunk is decoded at full speed
                    yield from audio_events(detok.push(step.speech_tokens, wait=first_audio is None))
                else:
                    yield from audio_events(detok.push(step.speech_tokens))
            elif isinstance(detok, BackgroundStream):
                yield from audio_events(detok.ready())
        if detok is not None and result.stop_reason != "cancelled":
            yield from audio_events(detok.flush())
        total = time.perf_counter() - start
        sr = self.sample_rate if mode.speech_output else 0
        timings = Timings(
            time_to_first_text=first_text,
            time_to_first_audio=first_audio,
            total_time=total,
            audio_seconds=n_samples / sr if sr else 0.0,
            llm_steps=result.steps,
        )
        yield Done(
            reply_text=reply_stream.text.strip(),
            transcript=chain_phase_text["transcript"].strip(),
            draft=chain_phase_text["draft"].strip(),
            speech_tokens=codes,
            sample_rate=sr,
            timings=timings,
            stop_reason=result.stop_reason,
        )

    def chat(self, request: ChatRequest) -> tuple[Done, Waveform | None]:
        """Non-streaming helper: the final event and the whole reply waveform (None for text modes)."""
        chunks, done = [], None
        for event in self.stream(request):
            if isinstance(event, AudioChunk):
                chunks.append(event.samples)
            elif isinstance(event, Done):
                done = event
        audio = Waveform(np.concatenate(chunks), self.sample_rate) if chunks else None
        return done, audio
