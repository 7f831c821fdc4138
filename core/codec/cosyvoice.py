"""CosyVoice2 detokenizer: S3 speech tokens (25 Hz) -> flow matching -> 80-bin mel (50 Hz) -> HiFT -> 24 kHz.

The modules are the official CosyVoice code (`core.codec.cosyvoice_modules`); this file reproduces
the package's `CosyVoice2Model.token2wav` (tested equal to it) and its streaming schedule:

- **offline** (`decode`): one flow pass over all tokens, one HiFT pass over all mel frames.
- **streaming** (`stream()`): CosyVoice2's own mechanism. A chunk is decoded once
  `hop + 3` tokens past the last chunk are available (hop = `chunk_tokens` = 25, the first hop is
  padded so that prompt + first chunk fill whole chunks; 3 = the flow's look-ahead). The flow is
  re-run on every token so far with its chunk-causal attention masks, so the mel of earlier
  chunks never changes; HiFT re-reads the last 8 mel frames and the last 3840 source samples of
  the previous chunk and its output is cross-faded with the previous chunk's held-back 3840
  samples (Hamming window) — the joins are inaudible. First audio after 28 tokens (1.12 s of
  speech tokens, 0.84 s of audio), then 1 s of audio per 25 tokens.
- The flow runs chunk-causally in both paths (`flow_full_context=False`, default), so a streamed
  reply equals its offline decode away from the joins. `flow_full_context=True` reproduces the
  package exactly (offline decode and a stream's last chunk attend over all tokens).
- HiFT's excitation source is random (harmonic phases, noise) as in CosyVoice2; each HiFT call is
  seeded (`seed + chunk index`), so decoding the same tokens twice gives the same audio.

Speaker: the flow is conditioned on a 192-d CAM++ x-vector and optionally on prompt tokens +
their mel (zero-shot voice of a reference recording). The default `Speaker` is the zero vector
(after the flow's L2 normalisation it stays zero, so the speaker projection contributes only its
bias: a fixed, generic voice) with no prompt. `speaker_from_recording` computes a real one when
`campplus.onnx` (shipped with CosyVoice2-0.5B) and onnxruntime are available.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from core.codec.cosyvoice_modules import (
    MAX_MEL_FRAMES,
    MEL_BINS,
    MEL_FRAMES_PER_TOKEN,
    PRE_LOOKAHEAD_TOKENS,
    SAMPLE_RATE,
    SAMPLES_PER_MEL_FRAME,
    SAMPLES_PER_TOKEN,
    CosyVoice2Config,
    build_flow,
    build_hift,
    campplus_embedding,
    load_module_weights,
    onnx_session,
    prompt_mel,
)
from core.codec.streaming import as_token_array
from core.hub import MissingFilesError, fetch_files, is_repo_id
from core.types import Waveform

logger = logging.getLogger(__name__)

DEFAULT_REPO = "FunAudioLLM/CosyVoice2-0.5B"
FLOW_FILE, HIFT_FILE, CAMPPLUS_FILE = "flow.pt", "hift.pt", "campplus.onnx"


@dataclass
class Speaker:
    """What the flow is conditioned on besides the tokens."""

    embedding: torch.Tensor  # (spk_embed_dim,) CAM++ x-vector (L2-normalised by the flow)
    prompt_tokens: torch.Tensor  # (P,) int64 speech tokens of a reference recording (may be empty)
    prompt_mel: torch.Tensor  # (2 P, 80) log-mel of the same recording (prompt condition)

    def __post_init__(self) -> None:
        if self.prompt_mel.shape != (MEL_FRAMES_PER_TOKEN * len(self.prompt_tokens), MEL_BINS):
            raise ValueError(
                f"prompt_mel must be (2 * {len(self.prompt_tokens)}, {MEL_BINS}), got {tuple(self.prompt_mel.shape)}"
            )

    @classmethod
    def default(cls, spk_embed_dim: int = 192) -> Speaker:
        """Zero x-vector, no prompt: the flow's generic voice (see the module docstring)."""
        return cls(torch.zeros(spk_embed_dim), torch.zeros(0, dtype=torch.long), torch.zeros(0, MEL_BINS))

    def save(self, path: str | Path) -> None:
        from safetensors.torch import save_file

        tensors = {
            "embedding": self.embedding,
            "prompt_tokens": self.prompt_tokens,
            "prompt_mel": self.prompt_mel,
        }
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(path))

    @classmethod
    def load(cls, path: str | Path) -> Speaker:
        from safetensors.torch import load_file

        data = load_file(str(path))
        return cls(data["embedding"].float(), data["prompt_tokens"].long(), data["prompt_mel"].float())


@dataclass
class _HiftCache:
    """What a stream keeps of the previous chunk (CosyVoice2Model.hift_cache_dict)."""

    mel: torch.Tensor  # (1, 80, mel_cache_frames)
    source: torch.Tensor  # (1, 1, mel_cache_frames * 480) excitation source
    speech: torch.Tensor  # (1, mel_cache_frames * 480) held-back audio, cross-faded into the next chunk


class CosyVoice2Detokenizer:
    """`SpeechDetokenizer` with CosyVoice2-0.5B's flow matching and HiFT vocoder.

    Build it with `CosyVoice2Detokenizer.from_pretrained(...)` (official files) or from modules.

    Args:
        flow: `CausalMaskedDiffWithXvec` with weights (see `cosyvoice_modules.build_flow`).
        hift: `HiFTGenerator` with weights.
        config: the hyperparameters the modules were built with.
        speaker: default voice (None: `Speaker.default()`).
        campplus_path: `campplus.onnx`, for `speaker_from_recording` (optional).
        flow_full_context: see the module docstring.
        seed: base seed of HiFT's random source.
    """

    sample_rate = SAMPLE_RATE
    token_rate = 25.0
    samples_per_token = SAMPLES_PER_TOKEN

    def __init__(
        self,
        flow: torch.nn.Module,
        hift: torch.nn.Module,
        config: CosyVoice2Config | None = None,
        speaker: Speaker | None = None,
        *,
        campplus_path: str | Path | None = None,
        flow_full_context: bool = False,
        seed: int = 0,
    ) -> None:
        self.config = config or CosyVoice2Config()
        self.flow = flow.eval()
        self.hift = hift.eval()
        self.speaker = speaker or Speaker.default(self.config.spk_embed_dim)
        self.campplus_path = Path(campplus_path) if campplus_path else None
        self.flow_full_context = flow_full_context
        self.seed = seed
        self._campplus = None
        self.source_cache_samples = self.config.mel_cache_frames * SAMPLES_PER_MEL_FRAME  # 3840
        # CosyVoice2Model.speech_window, applied in float64 as the package's numpy window is
        self._window = torch.from_numpy(np.hamming(2 * self.source_cache_samples))

    @property
    def codebook_size(self) -> int:
        return self.config.vocab_size

    @property
    def device(self) -> torch.device:
        return next(self.flow.parameters()).device

    @classmethod
    def from_pretrained(
        cls,
        source: str | Path = DEFAULT_REPO,
        config: CosyVoice2Config | None = None,
        *,
        device: torch.device | str | None = None,
        speaker: Speaker | None = None,
        flow_full_context: bool = False,
        revision: str | None = None,
        cache_dir: str | Path | None = None,
    ) -> CosyVoice2Detokenizer:
        """Loads `flow.pt` and `hift.pt` (and finds `campplus.onnx`) of a CosyVoice2 download.

        Args:
            source: a directory holding the files, or a hub repo id (default FunAudioLLM/CosyVoice2-0.5B).
            config: hyperparameters (default: CosyVoice2-0.5B's).
            device: where the modules run.

        Raises:
            MissingFilesError: flow.pt or hift.pt is missing (offline: not cached); names them.
            UnsafeWeightsError: a file whose unpickling needs arbitrary classes.
            ValueError: a file does not fit the modules (missing / unexpected keys).
        """
        config = config or CosyVoice2Config()
        local = Path(source).expanduser()
        if local.is_dir():
            missing = [name for name in (FLOW_FILE, HIFT_FILE) if not (local / name).is_file()]
            if missing:
                raise MissingFilesError(f"CosyVoice2 {local}: missing {', '.join(missing)}")
            files = {
                name: local / name
                for name in (FLOW_FILE, HIFT_FILE, CAMPPLUS_FILE)
                if (local / name).is_file()
            }
        elif is_repo_id(source):
            files = fetch_files(
                str(source),
                [FLOW_FILE, HIFT_FILE],
                optional=[CAMPPLUS_FILE],
                revision=revision,
                cache_dir=cache_dir,
            )
        else:
            raise MissingFilesError(f"CosyVoice2: {source} is neither a directory nor a hub id")
        flow, hift = build_flow(config), build_hift(config)
        load_module_weights(flow, files[FLOW_FILE], f"CosyVoice2 {FLOW_FILE}")
        load_module_weights(hift, files[HIFT_FILE], f"CosyVoice2 {HIFT_FILE}")
        if device is not None:
            flow.to(device)
            hift.to(device)
        logger.info("loaded CosyVoice2 flow + HiFT from %s", source)
        return cls(
            flow,
            hift,
            config,
            speaker,
            campplus_path=files.get(CAMPPLUS_FILE),
            flow_full_context=flow_full_context,
        )

    # ----------------------------------------------------------------------------- decoding

    def check_tokens(self, tokens: np.ndarray) -> None:
        """Raises ValueError unless every token is in [0, codebook_size)."""
        if len(tokens) and (tokens.min() < 0 or tokens.max() >= self.codebook_size):
            bad = tokens[(tokens < 0) | (tokens >= self.codebook_size)]
            raise ValueError(f"speech tokens must be in [0, {self.codebook_size}), got {bad[:8].tolist()}")

    def _check_length(self, num_tokens: int, speaker: Speaker) -> None:
        frames = MEL_FRAMES_PER_TOKEN * (num_tokens + len(speaker.prompt_tokens))
        if frames > MAX_MEL_FRAMES:
            raise ValueError(
                f"CosyVoice2's flow decodes at most {MAX_MEL_FRAMES // MEL_FRAMES_PER_TOKEN} tokens (300 s) "
                f"including the speaker prompt; got {num_tokens} + {len(speaker.prompt_tokens)}"
            )

    @torch.inference_mode()
    def token2wav(
        self,
        tokens: torch.Tensor,
        speaker: Speaker,
        token_offset: int = 0,
        cache: _HiftCache | None = None,
        *,
        streaming: bool,
        finalize: bool,
        chunk_index: int = 0,
    ) -> tuple[torch.Tensor, _HiftCache | None]:
        """One step of CosyVoice2Model.token2wav.

        Args:
            tokens: (n,) every token so far (a non-final call's last 3 are look-ahead only).
            speaker: conditioning.
            token_offset: tokens already turned into audio by earlier calls.
            cache: the previous call's HiFT cache (None for the first call).
            streaming: chunk-causal flow attention.
            finalize: last call (no look-ahead split, nothing held back).
            chunk_index: offsets the seed of HiFT's random source.

        Returns:
            audio (samples,) float32 on CPU, and the cache for the next call (None when finalize).
        """
        device = self.device
        prompt = speaker.prompt_tokens.to(device, torch.int32)[None]  # (1, P)
        mel, _ = self.flow.inference(
            token=tokens.to(device, torch.int32)[None],
            token_len=torch.tensor([len(tokens)], dtype=torch.int32, device=device),
            prompt_token=prompt,
            prompt_token_len=torch.tensor([prompt.shape[1]], dtype=torch.int32, device=device),
            prompt_feat=speaker.prompt_mel.to(device, torch.float32)[None],
            prompt_feat_len=torch.tensor([speaker.prompt_mel.shape[0]], dtype=torch.int32, device=device),
            embedding=speaker.embedding.to(device, torch.float32)[None],
            streaming=streaming,
            finalize=finalize,
        )  # (1, 80, 2 n') mel of the tokens (not of the prompt)
        mel = mel[:, :, token_offset * MEL_FRAMES_PER_TOKEN :]
        source = torch.zeros(1, 1, 0, device=device)
        if cache is not None:
            mel = torch.cat([cache.mel, mel], dim=2)
            source = cache.source
        hift_device = next(self.hift.parameters()).device
        with torch.random.fork_rng(devices=[hift_device] if hift_device.type == "cuda" else []):
            torch.manual_seed(self.seed + chunk_index)
            speech, speech_source = self.hift.inference(speech_feat=mel.to(hift_device), cache_source=source)
        if cache is not None:
            speech = self._crossfade(speech, cache.speech)
        new_cache = None
        if not finalize:
            n = self.source_cache_samples
            new_cache = _HiftCache(
                mel[:, :, -self.config.mel_cache_frames :], speech_source[:, :, -n:], speech[:, -n:]
            )
            speech = speech[:, :-n]
        return speech[0].float().cpu(), new_cache

    def _crossfade(self, speech: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
        """cosyvoice.utils.common.fade_in_out: the first n samples of `speech` fade in (rising half
        of the Hamming window) over the previous chunk's held-back n samples (falling half)."""
        n = self.source_cache_samples
        window = self._window.to(speech.device)
        speech = speech.clone()
        head = speech[..., :n].double() * window[:n] + previous[..., -n:].double() * window[n:]
        speech[..., :n] = head.to(speech.dtype)
        return speech

    def decode(
        self, tokens: Sequence[int] | torch.Tensor | np.ndarray, speaker: Speaker | None = None
    ) -> np.ndarray:
        """Offline decode.

        Args:
            tokens: (T,) codes in [0, codebook_size).
            speaker: voice (None: this detokenizer's default speaker).

        Returns:
            (T * 960,) float32 waveform at 24 kHz.
        """
        array = as_token_array(tokens)
        self.check_tokens(array)
        if len(array) == 0:
            return np.zeros(0, dtype=np.float32)
        speaker = speaker or self.speaker
        self._check_length(len(array), speaker)
        audio, _ = self.token2wav(
            torch.from_numpy(array), speaker, streaming=not self.flow_full_context, finalize=True
        )
        return audio.numpy()

    def stream(self, speaker: Speaker | None = None) -> CosyVoice2Stream:
        """A fresh streaming decoder (`push(tokens)` / `flush()`)."""
        return CosyVoice2Stream(self, speaker or self.speaker)

    # ------------------------------------------------------------------------------ speakers

    def speaker_from_recording(
        self, waveform: Waveform, tokenizer=None, max_seconds: float = 30.0
    ) -> Speaker:
        """A speaker from a reference recording (CosyVoice2's zero-shot frontend).

        Args:
            waveform: mono speech at any sample rate (only the first `max_seconds` are used).
            tokenizer: an S3 tokenizer (`core.codec.s3.S3SpeechTokenizer`, v2) to also use the
                recording as a prompt (tokens + mel): the reply then continues its voice. Without
                it only the CAM++ x-vector is used.

        Raises:
            MissingFilesError: no campplus.onnx was found with the weights.
            ImportError: onnxruntime is not installed.
        """
        import torchaudio.functional as AF

        if self.campplus_path is None:
            raise MissingFilesError(
                f"a speaker from a recording needs CAM++ ({CAMPPLUS_FILE}, shipped with {DEFAULT_REPO}); "
                "none was found with the CosyVoice2 weights"
            )
        if self._campplus is None:
            self._campplus = onnx_session(self.campplus_path)
        samples = torch.as_tensor(np.asarray(waveform.samples, dtype=np.float32)).reshape(-1)
        samples = samples[: int(max_seconds * waveform.sample_rate)]
        samples_16k = (
            AF.resample(samples, int(waveform.sample_rate), 16000)
            if waveform.sample_rate != 16000
            else samples
        )
        embedding = campplus_embedding(self._campplus, samples_16k)
        if tokenizer is None:
            return Speaker(embedding, torch.zeros(0, dtype=torch.long), torch.zeros(0, MEL_BINS))
        tokens = tokenizer.encode(Waveform(samples_16k.numpy(), 16000)).long()
        mel = prompt_mel(AF.resample(samples, int(waveform.sample_rate), SAMPLE_RATE))  # (F, 80)
        n = min(mel.shape[0] // MEL_FRAMES_PER_TOKEN, len(tokens))  # as CosyVoice2's frontend aligns them
        return Speaker(embedding, tokens[:n], mel[: MEL_FRAMES_PER_TOKEN * n])


class CosyVoice2Stream:
    """`DetokenizerStream` of `CosyVoice2Detokenizer` (CosyVoice2Model.tts(stream=True) schedule).

    The concatenation of everything `push` and `flush` return has exactly `num_tokens * 960` samples.
    """

    def __init__(self, detokenizer: CosyVoice2Detokenizer, speaker: Speaker) -> None:
        self.detokenizer = detokenizer
        self.speaker = speaker
        hop, prompt = detokenizer.config.chunk_tokens, len(speaker.prompt_tokens)
        self.hop_tokens = hop
        self.first_hop_tokens = hop + (
            math.ceil(prompt / hop) * hop - prompt
        )  # prompt + chunk 0 = whole chunks
        self._tokens = np.zeros(0, dtype=np.int64)
        self._offset = 0  # tokens already turned into audio
        self._cache: _HiftCache | None = None
        self._chunks = 0
        self._finished = False

    @property
    def num_tokens(self) -> int:
        return len(self._tokens)

    def push(self, tokens: Sequence[int] | torch.Tensor | np.ndarray) -> list[np.ndarray]:
        """Adds tokens; returns the chunks that became ready (maybe none)."""
        if self._finished:
            raise RuntimeError("push() after flush(): start a new stream")
        new = as_token_array(tokens)
        self.detokenizer.check_tokens(new)
        self._tokens = np.concatenate([self._tokens, new])
        self.detokenizer._check_length(len(self._tokens), self.speaker)
        chunks = []
        while True:
            hop = self.first_hop_tokens if self._offset == 0 else self.hop_tokens
            end = self._offset + hop
            if len(self._tokens) < end + PRE_LOOKAHEAD_TOKENS:
                break
            audio, self._cache = self.detokenizer.token2wav(
                torch.from_numpy(self._tokens[: end + PRE_LOOKAHEAD_TOKENS]),
                self.speaker,
                self._offset,
                self._cache,
                streaming=True,
                finalize=False,
                chunk_index=self._chunks,
            )
            self._offset, self._chunks = end, self._chunks + 1
            chunks.append(audio.numpy())
        return chunks

    def flush(self) -> list[np.ndarray]:
        """Ends the stream: decodes the remaining tokens (nothing held back)."""
        if self._finished:
            return []
        self._finished = True
        if self._offset >= len(self._tokens):
            return []
        audio, self._cache = self.detokenizer.token2wav(
            torch.from_numpy(self._tokens),
            self.speaker,
            self._offset,
            self._cache,
            streaming=not self.detokenizer.flow_full_context,
            finalize=True,
            chunk_index=self._chunks,
        )
        return [audio.numpy()]
