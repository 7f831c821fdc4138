"""Streaming generation for the seven interaction patterns.

Per LLM step (5 Hz in the parallel phase): one shared-LLM forward with a KV cache, one text token
from the text head, then k SRH forwards (its KV cache lives for the whole reply) giving k speech
tokens (25 Hz). Chain modes first write their text-only phase one token per step and switch to the
parallel phase when they emit <|audio_bos|>. See core/sequence.py for the position layout.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn
from torch.nn.utils.rnn import pad_sequence
from transformers import DynamicCache

from core.kv_decoder import KVDecoder, matmul_dtype, unsupported_reason
from core.model import DrVoiceModel
from core.modes import get_mode, text_twin
from core.sampling import SamplingConfig, apply_repetition_penalty, sample_token
from core.sequence import Example


class LengthBudgetError(ValueError):
    """The prompt or the reply does not fit the model's position budget."""


StepKind = Literal["text", "parallel"]
DecodePath = Literal["lean", "cached", "uncached"]


@dataclass
class GenStep:
    """What one LLM step produced."""

    kind: StepKind  # "text": text-only (or chain text phase) step; "parallel": text + speech step
    text_token: int | None  # sampled text token (None once the reply text has ended)
    speech_tokens: list[int] = field(default_factory=list)  # new 25 Hz codes (no bos/eos/pad)
    text_done: bool = False  # the reply text has ended (<|im_end|> was produced)
    speech_done: bool = False  # the speech stream has ended (eos was produced)


@dataclass
class GenResult:
    """Summary of a finished generation (filled while streaming)."""

    steps: int = 0  # LLM steps after the prompt
    stop_reason: Literal["end", "max_steps", "cancelled"] = "end"


class _Decoder:
    """Incremental decoding of one causal transformer: lean, transformers-cached, or uncached.

    "lean" runs `core.kv_decoder.KVDecoder` (the same function without transformers' per-call
    overhead); "cached" calls the transformers model with a `DynamicCache`; "uncached" re-runs the
    whole sequence every call: the slow reference the tests compare the others against.

    With `rows` > 1 (the LLM only) it holds several sequences: `run(x, row=r)` feeds row r alone
    (its prompt), `run(x)` with x (rows, 1, hidden) advances every row by one position; the lean
    path does that in one pass, the others row by row.
    """

    def __init__(
        self, forward, base_model, how: str, wrap=None, matmul_dtype: torch.dtype | None = None, rows: int = 1
    ):
        self.forward = forward  # (inputs..., cache) -> outputs for the new positions
        self.caches = (
            [DynamicCache(config=base_model.config) for _ in range(rows)] if how == "cached" else None
        )
        self.lean = KVDecoder(base_model, matmul_dtype=matmul_dtype, rows=rows) if how == "lean" else None
        self.wrap = wrap  # lean path: (inputs..., decode) -> outputs, decode = embeds -> hidden states
        self.histories: list[list[tuple[torch.Tensor, ...]]] = [[] for _ in range(rows)]
        self.lengths = [0] * rows

    @property
    def length(self) -> int:
        return self.lengths[0]

    def keep(self, rows: list[int]) -> None:
        """Drops every row not in `rows` (the kept ones are renumbered in that order)."""
        self.lengths = [self.lengths[r] for r in rows]
        self.histories = [self.histories[r] for r in rows]
        if self.caches is not None:
            self.caches = [self.caches[r] for r in rows]
        if self.lean is not None:
            self.lean.keep(rows)

    def __call__(self, *inputs: torch.Tensor, row: int | None = None) -> torch.Tensor:
        """inputs: tensors shaped (rows, n, ...) for the n new positions of every row, or (1, n, ...)
        for `row` alone; returns outputs shaped (rows or 1, n, ...)."""
        n = inputs[0].shape[1]
        targets = range(len(self.lengths)) if row is None else [row]
        for r in targets:
            self.lengths[r] += n
        if self.lean is not None:
            if self.wrap is None:
                return self.lean(inputs[0], row=row)
            return self.wrap(*inputs, self.lean)  # a single-row decoder (the SRH)
        outs = []
        for i, r in enumerate(targets):
            part = tuple(x[i : i + 1] for x in inputs)
            if self.caches is not None:
                outs.append(self.forward(*part, cache=self.caches[r]))
                continue
            self.histories[r].append(part)
            full = [torch.cat(parts, dim=1) for parts in zip(*self.histories[r], strict=True)]
            outs.append(self.forward(*full, cache=None)[:, -n:])
        return torch.cat(outs)

    def fill(self, embeds: list[torch.Tensor]) -> torch.Tensor:
        """Every row's next positions, (1, n_r, hidden) each (prompts): one padded pass on the lean
        path, row by row on the others. Returns each row's last hidden state, (rows, hidden)."""
        if self.lean is None:
            return torch.cat([self(x, row=r)[:, -1] for r, x in enumerate(embeds)])
        counts = [x.shape[1] for x in embeds]
        for r, n in enumerate(counts):
            self.lengths[r] += n
        out = self.lean(pad_sequence([x[0] for x in embeds], batch_first=True), counts=counts)
        return out[torch.arange(len(counts)), torch.tensor(counts) - 1]

    def share(self, row: int, source: _Decoder, source_row: int, n: int) -> bool:
        """Lean path: starts `row` with the first n positions of `source`'s `source_row` (the same
        leading text) instead of computing them; False where the path cannot (nothing is done)."""
        if self.lean is None or source.lean is None or n < 1:
            return False
        self.lean.share(row, source.lean, source_row, n)
        self.lengths[row] = n
        return True

    def project(self, x: torch.Tensor, head: nn.Linear) -> torch.Tensor:
        """An output head on this decoder's hidden states (in the lean path's product precision)."""
        return self.lean.project(x, head) if self.lean is not None else head(x)


class _ExtraPrompts:
    """A reply's extra prompts, stepped together as the rows of one LLM decoder: other hearings of
    the user's speech ("view": fed what the main prompt is fed) and text-only twins ("guide": fed the
    reply's text only). `hidden` holds each row's last final hidden state, (rows, D)."""

    def __init__(self, run: _Decoder | None, roles: list[str], hidden: torch.Tensor | None = None):
        self.run, self.roles, self.hidden = run, roles, hidden

    def at(self, role: str) -> list[int]:
        return [i for i, r in enumerate(self.roles) if r == role]

    def keep(self, rows: list[int]) -> None:
        """Drops every other row (the decoder with it once none is left)."""
        if rows == list(range(len(self.roles))):
            return
        if rows:
            self.run.keep(rows)
            self.hidden, self.roles = self.hidden[rows], [self.roles[i] for i in rows]
        else:
            self.run, self.hidden, self.roles = None, None, []

    def step(self, next_emb: torch.Tensor, text_emb: torch.Tensor, budget: int) -> None:
        """Feeds each row its next input; a row whose next position would pass `budget` is dropped
        first (a slowed view is longer than the main prompt)."""
        if self.run is not None:
            self.keep([i for i, n in enumerate(self.run.lengths) if n + 1 <= budget])
        if self.run is not None:
            inputs = torch.cat([next_emb if r == "view" else text_emb for r in self.roles])
            self.hidden = self.run(inputs)[:, -1]


def _leading_text(p: Example, audio_id: int) -> int:
    """Positions before the first one that holds user audio or a speech group."""
    other = (p.input_ids == audio_id) | p.speech_input_mask
    return int(other.nonzero()[0]) if other.any() else len(p)


def _common_prefix(a: torch.Tensor, b: torch.Tensor) -> int:
    n = min(len(a), len(b))
    differ = (a[:n] != b[:n]).nonzero()
    return int(differ[0]) if len(differ) else n


def _same_mels(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(
        x.shape == y.shape and torch.equal(x, y) for x, y in zip(a, b, strict=True)
    )


DraftIds = Callable[[str, list[int]], list[int]]  # (mode, chain-phase ids) -> the draft's reply ids


class DrVoiceGenerator:
    """Streams GenSteps for a prompt (see `core.sequence.SequenceBuilder.prompt`).

    Args:
        model: the model.
        draft_ids: for STC/SAC with `SamplingConfig.follow_draft`: maps the chain phase's ids to the
            drafted response's ids as training lays them out in the parallel phase (the engine
            decodes, splits off the transcript and re-encodes). Training teaches the parallel text to
            repeat the draft token for token; following it makes sure it does, where a small model's
            text head, fed its own speech as well, drifts ("fifty three" drafted, "fifty five"
            spoken). None: the text head writes the parallel text afresh.
    """

    def __init__(self, model: DrVoiceModel, draft_ids: DraftIds | None = None):
        self.model = model
        self.draft_ids = draft_ids
        cfg = model.config
        self.cfg = cfg
        self.ids = cfg.special_token_ids
        vocab = cfg.llm["vocab_size"]
        # Text tokens allowed in each phase (others get -inf): keeps a small model on the format.
        never = [self.ids[n] for n in ("im_start", "audio", "audio_eos", "end_of_text")]
        self.text_only_mask = self._mask(vocab, never + [self.ids["audio_bos"], self.ids["sil"]])
        self.chain_mask = self._mask(vocab, never + [self.ids["im_end"], self.ids["sil"]])
        self.parallel_mask = self._mask(vocab, never + [self.ids["audio_bos"], self.ids["sil"]])
        self.speech_mask = self._mask(cfg.speech_vocab_total, [cfg.speech_bos, cfg.speech_pad])

    def _mask(self, size: int, banned: list[int]) -> torch.Tensor:
        m = torch.zeros(size, device=self.model.device)
        m[banned] = float("-inf")
        return m

    def _llm_forward(self, emb: torch.Tensor, cache=None) -> torch.Tensor:
        return self.model.llm.model(
            inputs_embeds=emb, cache=cache, use_cache=cache is not None
        ).last_hidden_state

    def _srh_forward(self, prev: torch.Tensor, cond: torch.Tensor, cache=None) -> torch.Tensor:
        return self.model.srh(prev, cond, cache=cache)

    def _srh_lean(self, prev: torch.Tensor, cond: torch.Tensor, run: KVDecoder) -> torch.Tensor:
        srh = self.model.srh
        return run.project(run(srh.embed(prev) + cond), srh.head)

    @torch.inference_mode()
    def stream(
        self,
        prompt: Example,
        mode: str,
        sampling: SamplingConfig | None = None,
        *,
        decode: DecodePath = "lean",
        matmul: str = "auto",
        cancel: threading.Event | None = None,
        result: GenResult | None = None,
        views: Sequence[Example] = (),
        guides: Sequence[Example] = (),
        reply_ids: Sequence[int] | None = None,
    ) -> Iterator[GenStep]:
        """Generates a reply step by step.

        Args:
            prompt: the prompt layout (ends with the assistant header, or <|audio_bos|> for S2M/T2M).
            mode: one of the seven patterns; must match the prompt.
            sampling: sampling settings (greedy by default).
            decode: "lean" (`core.kv_decoder`; transformers' cached forward for a model it does not
                cover), "cached" (transformers with a KV cache) or "uncached" (re-runs the whole
                sequence each step: the slow reference).
            matmul: the lean path's product precision (`core.kv_decoder.matmul_dtype`): "auto"
                (float16 copies of float32 weights on a CPU with several threads), "fp32", "fp16" or "bf16".
            cancel: set it to stop after the current step.
            result: filled with the step count and stop reason.
            views: prompts of the same turn with the user's speech heard another way
                (`core.mel_views`; the engine makes them for `SamplingConfig.audio_views`). They are
                fed the same tokens; text tokens are drawn from the mean of all prompts'
                log-probabilities, speech from the mean of their hidden states (a chain mode that
                follows its draft drops the views once the draft is written). Views and guides run
                as the rows of one decoder (`_ExtraPrompts`; one pass per step on the lean path),
                their leading text copied from `prompt`'s cache where it is the same.
            guides: S2M/T2M: prompts of the same turn in the text-only twin mode (S2T/T2T; the
                engine makes them for `SamplingConfig.text_guide`). They are fed the reply's text
                tokens only; each parallel text token is drawn from their mean log-probability
                weighted by `sampling.text_guide` against that of `prompt` and `views`. The speech
                is said from `prompt` and `views` alone.
            reply_ids: S2M/T2M: the reply text's token ids, written as given (<|im_end|> added) in
                place of drawn ones; only the speech is generated (a scripted reply, and
                `training.eval.follow_text`'s test of whether the speech says the text it is fed).
        Yields:
            One GenStep per LLM step.
        Raises:
            LengthBudgetError: the prompt or the reply exceeds `max_positions`.
        """
        sampling = sampling or SamplingConfig()
        result = result if result is not None else GenResult()
        m = get_mode(mode)
        cfg, ids, model = self.cfg, self.ids, self.model
        k, dev = cfg.group_size, model.device
        budget = cfg.max_positions
        if len(prompt) >= budget:
            raise LengthBudgetError(
                f"the conversation takes {len(prompt)} positions but the model's budget is {budget} "
                f"(about {budget / 5 / 60:.1f} min of audio at 5 Hz): start a new conversation or shorten the input"
            )
        gen = None
        if sampling.seed is not None:
            gen = torch.Generator(device="cpu").manual_seed(sampling.seed)

        if decode not in ("lean", "cached", "uncached"):
            raise ValueError(f"decode must be 'lean', 'cached' or 'uncached', got {decode!r}")
        llm_how = srh_how = decode
        if decode == "lean":
            llm_how = "lean" if unsupported_reason(model.llm.model) is None else "cached"
            srh_how = "lean" if unsupported_reason(model.srh.decoder) is None else "cached"
        llm_dtype = matmul_dtype(matmul, model.llm.model)

        def llm_decoder(rows: int = 1) -> _Decoder:
            return _Decoder(self._llm_forward, model.llm.model, llm_how, matmul_dtype=llm_dtype, rows=rows)

        heard: list[tuple[list[torch.Tensor], torch.Tensor]] = []  # user speech encoded, per view

        def prompt_inputs(p: Example) -> torch.Tensor:
            # a guide hears the speech as its view does: encode each distinct hearing once
            features = next((f for mels, f in heard if _same_mels(mels, p.mels)), None)
            if features is None and p.mels and cfg.user_audio == "continuous":
                features = model.encode_user_audio(p.mels)
                heard.append((p.mels, features))
            return model.embed_inputs(
                p.input_ids[None].to(dev),
                p.speech_inputs[None].to(dev),
                p.speech_input_mask[None].to(dev),
                p.mels,
                audio_features=features,
            )

        llm = llm_decoder()
        srh = _Decoder(
            self._srh_forward,
            model.srh.decoder,
            srh_how,
            wrap=self._srh_lean,
            matmul_dtype=matmul_dtype(matmul, model.srh.decoder),
        )
        hidden = llm(prompt_inputs(prompt))[0, -1]  # (D,)
        guides = guides if text_twin(m) is not None else ()  # only a parallel speaking mode has a twin
        extra = _ExtraPrompts(None, [])
        if views or guides:
            extra = _ExtraPrompts(
                llm_decoder(len(views) + len(guides)), ["view"] * len(views) + ["guide"] * len(guides)
            )
            lead = prompt.input_ids[: _leading_text(prompt, ids["audio"])]
            rest = []
            for row, p in enumerate([*views, *guides]):
                # the leading text they have in common with `prompt` (its system prompt) is copied
                n = min(_common_prefix(p.input_ids[: _leading_text(p, ids["audio"])], lead), len(p) - 1)
                rest.append(prompt_inputs(p)[:, n:] if extra.run.share(row, llm, 0, n) else prompt_inputs(p))
            extra.hidden = extra.run.fill(rest)  # (rows, D)

        last_input = int(prompt.input_ids[-1])
        parallel = m.speech_output and not m.is_chain
        text_done = speech_done = False
        prev_speech = cfg.speech_bos
        recent: list[int] = []
        par_step = 0
        pad_group = torch.full((k,), cfg.speech_pad, dtype=torch.long, device=dev)
        chain_ids: list[int] = []
        follow = m.has_draft and sampling.follow_draft and self.draft_ids is not None
        forced: list[int] | None = None  # the parallel text, when it follows the draft or is given
        if reply_ids is not None:
            if not parallel:
                raise ValueError(f"reply_ids needs a mode that speaks in parallel (S2M, T2M), not {m.name}")
            forced = [*reply_ids, ids["im_end"]]
            extra.keep(extra.at("view"))  # no text is drawn: the guides have nothing to do

        def mean_log_prob(scores: torch.Tensor) -> torch.Tensor:
            # (prompts, vocab) -> the prompts' mean log-probability (masked tokens stay at -inf)
            return scores[0] if len(scores) == 1 else torch.log_softmax(scores, -1).mean(0)

        def draw_text(mask: torch.Tensor) -> int:
            head = model.llm.lm_head
            guides_at, views_at = extra.at("guide"), extra.at("view")
            scores = extra.run.project(extra.hidden, head).float() + mask if extra.roles else None
            guide_weight = sampling.text_guide if guides_at else 0.0
            if guide_weight >= 1.0:  # the twin alone writes the text
                logits = mean_log_prob(scores[guides_at])
            else:
                own = (llm.project(hidden, head).float() + mask)[None]
                logits = mean_log_prob(torch.cat([own, scores[views_at]]) if views_at else own)
                if guide_weight > 0.0:
                    own = torch.log_softmax(logits, -1)
                    twin = torch.log_softmax(mean_log_prob(scores[guides_at]), -1)
                    logits = (1.0 - guide_weight) * own + guide_weight * twin
            return sample_token(logits.cpu(), sampling.temperature, sampling.top_k, sampling.top_p, gen)

        for step in range(sampling.max_new_steps):
            if cancel is not None and cancel.is_set():
                result.stop_reason = "cancelled"
                return
            result.steps = step + 1
            if not parallel:
                tok = draw_text(self.chain_mask if m.is_chain else self.text_only_mask)
                yield GenStep("text", tok)
                if not m.speech_output and tok == ids["im_end"]:
                    return
                if tok == ids["audio_bos"]:
                    parallel = True
                    if follow:
                        forced = [*self.draft_ids(m.name, chain_ids), ids["im_end"]]
                        extra.keep(extra.at("guide"))  # no text is drawn from the views from here on
                else:
                    chain_ids.append(tok)
                next_emb = text_emb = model.text_embed(torch.tensor([[tok]], device=dev))
            else:
                if text_done:
                    tok = ids["sil"]
                elif forced is not None:
                    tok = forced[min(par_step, len(forced) - 1)]
                else:
                    tok = draw_text(self.parallel_mask)
                text_emb = model.text_embed(torch.tensor([[tok]], device=dev))
                new_codes: list[int] = []
                group = pad_group
                if par_step >= cfg.speech_delay and not speech_done:
                    # with views, the speech is said from the mean of their hidden states
                    views_at = extra.at("view")
                    state = torch.cat([hidden[None], extra.hidden[views_at]]).mean(0) if views_at else hidden
                    cond = model.srh_condition(
                        state, torch.tensor(last_input, device=dev), torch.tensor(tok, device=dev)
                    )  # (k, d_srh)
                    group = pad_group.clone()
                    for j in range(k):
                        logits = srh(torch.tensor([[prev_speech]], device=dev), cond[None, j : j + 1])[0, -1]
                        logits = logits.float() + self.speech_mask
                        logits = apply_repetition_penalty(
                            logits.cpu(), recent[-sampling.repetition_window :], sampling.repetition_penalty
                        )
                        code = sample_token(
                            logits,
                            sampling.speech_temperature,
                            sampling.speech_top_k,
                            sampling.speech_top_p,
                            gen,
                        )
                        group[j] = code
                        prev_speech = code
                        if code == cfg.speech_eos:
                            speech_done = True
                            break
                        new_codes.append(code)
                        recent.append(code)
                if tok == ids["im_end"]:
                    text_done = True
                    extra.keep(extra.at("view"))  # the guides' work is done
                par_step += 1
                yield GenStep(
                    "parallel", None if tok == ids["sil"] else tok, new_codes, text_done, speech_done
                )
                if text_done and speech_done:
                    return
                next_emb = model.combine(
                    text_emb,
                    model.speech_grouping(group[None, None]),
                )
            if llm.length + 1 > budget:
                raise LengthBudgetError(
                    f"the reply reached the model's budget of {budget} positions "
                    f"(about {budget / 5 / 60:.1f} min at 5 Hz); start a new conversation"
                )
            hidden = llm(next_emb)[0, -1]
            extra.step(next_emb, text_emb, budget)
            last_input = tok
        result.stop_reason = "max_steps"
