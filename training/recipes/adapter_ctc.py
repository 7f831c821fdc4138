"""CTC of the adapter's 5 Hz output against the LLM's own token embeddings.

    python -m training.recipes.adapter_ctc --init runs/demo/encoder_ctc/final \\
        --train_manifest runs/demo/train.tokens.jsonl --validation_manifest runs/demo/validation.tokens.jsonl \\
        --mel_cache runs/demo/mels --output_dir runs/demo/adapter_ctc

After `encoder_ctc` the Whisper encoder hears (character error rate ~5% on the demo's voices), yet an
LLM trained on top of it through the adapter reads the content words badly: on the demo it answered
"fifty two" questions as "thirty two" while the encoder's CTC transcript said "fifty two". The LLM had
memorised whole utterances instead of reading words. This recipe gives every 5 Hz adapter frame a
word to be: the score of token v at frame t is the cosine between the adapter output and the LLM's
input embedding of v (a learned vector stands for the CTC blank), times a learned temperature; CTC
over the tokenised user transcript then pulls the frames where a word is spoken towards that word's
embedding, the input the text LLM already understands (the LegoSLM idea of reading speech through
the LLM's embedding table, here as a training target only: the model and its checkpoint format are
unchanged). The Whisper encoder and the adapter train; the LLM does not. 5 Hz leaves ~1.3 frames per
token, so utterances with fewer frames than the CTC path needs give no loss (counted in the log).

Greedy token error rate on held-out utterances is logged (`metrics.jsonl`, `loss.png`); at the end
`ter_by_voice.json` holds it per validation voice.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F

from core.sequence import SequenceBuilder
from training.cli import arg, parse_config, save_config
from training.data import MelCache, read_manifest
from training.data.augment import augment_mel
from training.eval.scoring import edit_distance
from training.metrics import MetricsLogger
from training.recipes.encoder_ctc import _batch, cer_by_voice, ctc_training, greedy_decode

log = logging.getLogger(__name__)


@dataclass
class AdapterCTCConfig:
    init: str = arg("", "core checkpoint with a continuous speech encoder (e.g. encoder_ctc's final/)")
    train_manifest: str = arg("", "manifest whose user turns (audio + text) are the training data")
    validation_manifest: str | None = arg(None, "manifest for the token error rate (None: none)")
    output_dir: str = arg("runs/adapter_ctc", "metrics.jsonl, loss.png and final/ go here")
    mel_cache: str | None = arg(None, "folder of cached user log-mels")
    max_steps: int = arg(1000, "optimiser steps")
    batch_size: int = arg(32, "utterances per batch")
    peak_lr: float = arg(1e-3, "peak learning rate")
    final_lr: float = arg(1e-4, "learning rate at the last step (cosine)")
    warmup_fraction: float = arg(0.05, "linear warmup as a fraction of max_steps")
    grad_clip: float = arg(1.0, "max gradient norm")
    train_whisper: bool = arg(True, "train the Whisper encoder too (the adapter alone sees only its 0.2 s)")
    augment: bool = arg(False, "mel-axis warp and SpecAugment masks (no tempo: 5 Hz has no frames to spare)")
    eval_every: int = arg(250, "steps between token error rate measurements")
    eval_items: int = arg(64, "validation utterances per measurement")
    log_every: int = arg(10, "steps between metric lines")
    device: str = arg("auto", "auto, cpu or cuda")
    seed: int = arg(0, "data order and blank initialisation")

    def __post_init__(self) -> None:
        if not self.init or not self.train_manifest:
            raise ValueError("--init and --train_manifest are required")
        if self.max_steps < 1 or self.batch_size < 1:
            raise ValueError("--max_steps and --batch_size must be >= 1")


class TokenUtterance(NamedTuple):
    mel: torch.Tensor  # (n_mels, F) log-mel
    target: list[int]  # LLM token ids of the transcript, each + 1 (0 is the CTC blank)
    voice: str


class EmbeddingCTCHead(torch.nn.Module):
    """Scores (B, T, D) features against a frozen embedding table plus a learned blank: cosine x temperature."""

    def __init__(self, embeddings: torch.Tensor, temperature: float = 10.0):
        super().__init__()
        self.register_buffer("table", F.normalize(embeddings.detach().float(), dim=-1), persistent=False)
        self.blank = torch.nn.Parameter(torch.randn(embeddings.shape[1]) * embeddings.float().std().item())
        self.log_temperature = torch.nn.Parameter(torch.tensor(float(temperature)).log())

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(B, T, D) -> (B, T, 1 + V) log-probabilities; class 0 is the blank, class v + 1 token v."""
        table = torch.cat([F.normalize(self.blank, dim=-1)[None], self.table])  # (1 + V, D)
        scores = F.normalize(features.float(), dim=-1) @ table.T  # (B, T, 1 + V)
        return F.log_softmax(scores * self.log_temperature.exp(), -1)


def token_utterances(
    manifest: str, cache: MelCache, builder: SequenceBuilder, max_frames: int
) -> list[TokenUtterance]:
    """One item per distinct user recording with a transcript, shorter than `max_frames` mel frames."""
    seen, out = set(), []
    for item in read_manifest(manifest):
        if not item.audio or not item.text or item.audio in seen:
            continue
        seen.add(item.audio)
        ids = builder.encode_text(item.text)
        if ids and cache.frames(item.audio) <= max_frames:
            out.append(TokenUtterance(cache.get(item.audio), [i + 1 for i in ids], item.voice or ""))
    return out


def feasible(target: list[int], frames: int) -> bool:
    """Whether a CTC path exists: one frame per token plus a blank between equal neighbours."""
    repeats = sum(a == b for a, b in zip(target, target[1:], strict=False))
    return frames >= len(target) + repeats


def run(cfg: AdapterCTCConfig) -> Path:
    from core.checkpoint import from_pretrained, save_pretrained
    from training.runtime import setup_runtime

    torch.manual_seed(cfg.seed)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    device = setup_runtime(cfg.device).device
    ckpt = from_pretrained(cfg.init, device=device, dtype=torch.float32)
    model = ckpt.model.float()
    encoder = model.encoder
    if encoder is None:
        raise ValueError(f"{cfg.init} has no continuous speech encoder (user_audio is discrete)")
    builder = SequenceBuilder(model.config, ckpt.tokenizer)
    cache = MelCache(cfg.mel_cache, encoder.cfg.n_mels)
    window = encoder.cfg.window_mel_frames
    train = sorted(
        token_utterances(cfg.train_manifest, cache, builder, window), key=lambda u: u.mel.shape[-1]
    )
    every_valid = (
        token_utterances(cfg.validation_manifest, cache, builder, window) if cfg.validation_manifest else []
    )
    valid = every_valid[: cfg.eval_items]
    head = EmbeddingCTCHead(model.llm.get_input_embeddings().weight).to(device)
    params = list(encoder.adapter.parameters()) + list(head.parameters())
    if encoder.output_norm is not None:
        params += list(encoder.output_norm.parameters())
    if cfg.train_whisper:
        params += list(encoder.whisper.parameters())
    n_out = [-(-u.mel.shape[-1] // (2 * encoder.cfg.downsample)) for u in train]
    n_feasible = sum(feasible(u.target, n) for u, n in zip(train, n_out, strict=True))
    log.info(
        "adapter CTC on %d training utterances (%d with a CTC path at 5 Hz), token error rate on %d",
        len(train),
        n_feasible,
        len(valid),
    )
    batches = [train[i : i + cfg.batch_size] for i in range(0, len(train), cfg.batch_size)]
    generator = torch.Generator().manual_seed(cfg.seed)
    metrics = MetricsLogger(out)
    metrics.truncate_after(0)  # no resume: a rerun starts afresh

    def forward(utts, train: bool = False):
        if train and cfg.augment:
            utts = [u._replace(mel=augment_mel(u.mel, generator, tempo=False)) for u in utts]
        mels, lengths = _batch(utts)
        features, out_lengths = encoder(mels.to(device), lengths.to(device))  # (B, N, D), (B,)
        return head(features), out_lengths

    def errors(utts: list[TokenUtterance]) -> list[int]:
        encoder.eval()
        with torch.no_grad():
            result = [edit_distance(u.target, greedy_decode(forward([u])[0][0])) for u in utts]
        encoder.train()
        return result

    def ter() -> float:
        return sum(errors(valid)) / max(sum(len(u.target) for u in valid), 1)

    encoder.train()
    ctc_training(
        cfg,
        batches,
        forward,
        params,
        metrics,
        "token_error_rate",
        ter if valid else None,
        "adapter CTC",
        extra=lambda: {"temperature": head.log_temperature.exp()},
    )
    metrics.plot(out / "loss.png", keys=("loss", "token_error_rate") if valid else ("loss",))
    metrics.close()
    if every_valid:
        by_voice = {
            v: {"ter": r["cer"], "tokens": r["characters"], "utterances": r["utterances"]}
            for v, r in cer_by_voice(every_valid, errors(every_valid)).items()
        }
        (out / "ter_by_voice.json").write_text(json.dumps(by_voice, indent=2) + "\n")
        log.info(
            "validation token error rate by voice: %s",
            ", ".join(f"{v} {r['ter']:.3f}" for v, r in by_voice.items()),
        )
    extra = {**ckpt.extra, "recipe": "adapter_ctc", "adapter_ctc_steps": cfg.max_steps}
    return save_pretrained(out / "final", model.eval(), ckpt.tokenizer, codec=ckpt.codec, extra=extra)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    print(f"output: {run(parse_config(AdapterCTCConfig, argv, __doc__))}")


if __name__ == "__main__":
    main()
