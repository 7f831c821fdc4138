"""Assembles a DrVoice core checkpoint from pretrained parts (paper §3.3 "Initialization").

    python -m training.recipes.build --llm Qwen/Qwen2.5-7B-Instruct --whisper large-v3.pt \\
        --srh_init runs/srh_tts/tts_lm --codec checkpoints/demo/codec --output_dir runs/build

Parts (local directories, or Hugging Face hub ids fetched with huggingface_hub when online; only
safetensors weights are read from them):

- `--llm`: a transformers causal LM (Qwen2.5-*-Instruct in the paper) = shared LLM + text head.
  Its tokenizer gets the ChatML and DrVoice special tokens (`<|sil|>`, `<|audio_bos|>`,
  `<|audio_eos|>`, `<|AUDIO|>`). The embedding matrix grows when the tokenizer outgrows it (Qwen2.5
  already has spare padded rows and does not). The rows of the new tokens (input embeddings, and
  the LM head when it is not tied) are set to the mean of the rows of the tokens the tokenizer had
  before, plus Gaussian noise of `new_token_noise` times the per-dimension standard deviation of
  those rows: a new token starts as an "average" token (its logit near the average logit, so the
  text distribution barely moves) and the noise makes the four new tokens distinguishable. Every
  other row is left exactly as it was, so text in gives the LLM's own text logits out.
- `--whisper`: an openai-whisper checkpoint file (`large-v3.pt`: {"dims": ..., "model_state_dict":
  ...}, read with `torch.load(weights_only=True)`), an openai model name (`large-v3`) or a Hugging
  Face Whisper directory / hub id (`openai/whisper-large-v3`, `core.pretrained.load_whisper_encoder`);
  its encoder weights become the continuous
  speech encoder, whose dims it dictates. Without it the encoder is random with the `--encoder_*`
  dims. The adapter (50 Hz -> 5 Hz -> LLM width) is always new.
- `--srh_init`: the standalone TTS LM written by `srh_pretrain --strategy standalone` (layers, final
  norm and the speech rows of its embeddings / LM head are copied), or any Hugging Face causal LM of
  the SRH's type (Qwen2.5-0.5B in the paper; its layers and norm are copied, the speech embedding
  and head start random). Without it the SRH is random with the `--srh_*` dims.
- `--codec`: a units-codec directory (or a checkpoint holding one in codec/) shipped with the model;
  `speech_vocab_size` 0 takes its codebook size.

The speech grouping, ungrouping projection and adapter are new (random, seeded by `--seed`).
Peak memory is about twice the LLM's fp32 size (the loaded LLM and the assembled model).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from core.checkpoint import resolve_checkpoint, save_pretrained
from core.config import COMBINES, GROUPINGS, USER_AUDIO_KINDS, DrVoiceConfig, qwen2_config_dict
from core.model import DrVoiceModel
from core.pretrained import hf_config_dict, load_llm_for_drvoice, load_whisper_encoder
from core.text_tokenizer import SpecialTokenIds
from training.cli import arg, parse_config, save_config
from training.tts_lm import SPEECH_VOCAB_KEY, TEXT_VOCAB_KEY, copy_decoder, is_tts_lm, load_into_srh

log = logging.getLogger(__name__)


@dataclass
class BuildConfig:
    llm: str = arg("", "shared LLM: Hugging Face causal-LM directory or hub id (Qwen/Qwen2.5-7B-Instruct)")
    output_dir: str = arg("runs/build", "where the core checkpoint is written")
    whisper: str | None = arg(
        None, "openai-whisper checkpoint file (*.pt); None = random encoder (--encoder_*)"
    )
    srh_init: str | None = arg(
        None, "TTS LM dir from srh_pretrain, or a HF causal LM (Qwen2.5-0.5B); None = random"
    )
    codec: str | None = arg(None, "units-codec directory shipped in the checkpoint; None = no codec")
    speech_vocab_size: int = arg(0, "N speech codes; 0 = the codec's codebook size (6561 for S3Tokenizer v2)")
    group_size: int = arg(5, "k speech tokens per LLM step (eq. 3): 25 Hz -> 5 Hz")
    grouping: str = arg("concat", "concat (paper eq. 3) or mean (Fun-Audio-Chat)")
    combine: str = arg("sum", "eq. (1) assistant input: sum (paper) or mean")
    speech_delay: int = arg(0, "speech starts this many LLM steps after the text (Fun-Audio-Chat: 2)")
    text_input_scale: float = arg(
        1.0, "s of eq. (1) scaled, s E_text + G: the reply text's weight in the input"
    )
    speech_embed_dim: int = arg(0, "width of speech-token embeddings before grouping; 0 = LLM width")
    srh_text_condition: bool = arg(
        False, "add the input token's embedding (final-normed, detached) to h before W_p"
    )
    srh_text_embedding: bool = arg(
        False, "the SRH's own embedding of each step's reply text token, added to its k conditions"
    )
    user_audio: str = arg("continuous", "continuous (Whisper encoder + adapter) or discrete (grouped tokens)")
    srh_hidden: int = arg(896, "random SRH: width (Qwen2.5-0.5B: 896)")
    srh_layers: int = arg(24, "random SRH: decoder layers (Qwen2.5-0.5B: 24)")
    srh_heads: int = arg(14, "random SRH: attention heads (Qwen2.5-0.5B: 14)")
    srh_kv_heads: int = arg(2, "random SRH: key/value heads (Qwen2.5-0.5B: 2)")
    srh_intermediate: int = arg(4864, "random SRH: MLP width (Qwen2.5-0.5B: 4864)")
    srh_max_positions: int = arg(16384, "random SRH: max 25 Hz positions of one reply")
    encoder_n_mels: int = arg(128, "random encoder: mel bins (large-v3: 128)")
    encoder_state: int = arg(1280, "random encoder: width (large-v3: 1280)")
    encoder_heads: int = arg(20, "random encoder: attention heads (large-v3: 20)")
    encoder_layers: int = arg(32, "random encoder: blocks (large-v3: 32)")
    encoder_ctx: int = arg(1500, "random encoder: positions of one 30 s window")
    encoder_pad_to_window: bool | None = arg(
        None, "pad windows to 30 s; None = true with --whisper, else false"
    )
    encoder_positional_scale: float = arg(
        1.0,
        "multiplier of the encoder's sinusoidal positions (1 for Whisper weights; ~0.1 for a random encoder)",
    )
    encoder_output_norm: bool = arg(False, "LayerNorm on the adapter output (gain: the text embeddings' RMS)")
    downsample: int = arg(10, "adapter: encoder frames stacked per LLM position (50 Hz -> 5 Hz)")
    adapter_hidden: int = arg(2048, "adapter MLP hidden width")
    max_positions: int = arg(2048, "LLM sequence budget (appendix A: 2K)")
    new_token_noise: float = arg(0.02, "noise of the new token rows, in per-dimension std of the old rows")
    name: str = arg("drvoice", "label shown in the app and stored with every turn")
    seed: int = arg(0, "seeds the new weights")

    def __post_init__(self) -> None:
        if not self.llm:
            raise ValueError("--llm is required (a Hugging Face causal-LM directory or hub id)")
        if self.grouping not in GROUPINGS:
            raise ValueError(f"--grouping must be one of {GROUPINGS}, got {self.grouping!r}")
        if self.combine not in COMBINES:
            raise ValueError(f"--combine must be one of {COMBINES}, got {self.combine!r}")
        if self.user_audio not in USER_AUDIO_KINDS:
            raise ValueError(f"--user_audio must be one of {USER_AUDIO_KINDS}, got {self.user_audio!r}")
        if self.speech_vocab_size < 0 or (self.speech_vocab_size == 0 and not self.codec):
            raise ValueError("--speech_vocab_size must be > 0 when no --codec gives it")
        if self.whisper and self.user_audio != "continuous":
            raise ValueError("--whisper needs --user_audio continuous")
        if self.new_token_noise < 0:
            raise ValueError(f"--new_token_noise must be >= 0, got {self.new_token_noise}")


def config_dict(hf_config, **overrides: Any) -> dict[str, Any]:
    """`core.pretrained.hf_config_dict` without the TTS LM's vocabulary bookkeeping keys."""
    data = hf_config_dict(hf_config, **overrides)
    for key in (TEXT_VOCAB_KEY, SPEECH_VOCAB_KEY):
        data.pop(key, None)
    return data


def load_causal_lm(path_or_id: str) -> nn.Module:
    """A transformers causal LM in fp32 from a directory or hub id (safetensors only)."""
    from transformers import AutoModelForCausalLM

    directory = resolve_checkpoint(path_or_id)
    return AutoModelForCausalLM.from_pretrained(str(directory), dtype=torch.float32, use_safetensors=True)


def load_codec(path: str):
    from core.codec.units import UnitsCodec

    directory = Path(path).expanduser()
    if (directory / "codec" / "units_codec.json").is_file():
        directory = directory / "codec"  # a checkpoint directory that ships a codec
    if not (directory / "units_codec.json").is_file():
        raise FileNotFoundError(f"--codec {path}: no units_codec.json there (nor in its codec/ folder)")
    return UnitsCodec.load(directory)


def run(cfg: BuildConfig) -> Path:
    """Builds and writes the checkpoint; returns its directory."""

    from core.encoder import EncoderConfig

    codec = load_codec(cfg.codec) if cfg.codec else None
    speech_vocab = cfg.speech_vocab_size or codec.codebook_size
    if codec is not None and speech_vocab != codec.codebook_size:
        raise ValueError(
            f"--speech_vocab_size {speech_vocab} != the codec's codebook size {codec.codebook_size}"
        )

    llm, tokenizer, new_ids = load_llm_for_drvoice(
        cfg.llm, new_token_noise=cfg.new_token_noise, seed=cfg.seed, return_new_ids=True
    )
    special = SpecialTokenIds.from_tokenizer(tokenizer).to_dict()
    llm_config = config_dict(llm.config, vocab_size=llm.get_input_embeddings().weight.shape[0])

    srh_lm = load_causal_lm(cfg.srh_init) if cfg.srh_init else None
    if srh_lm is not None:
        if is_tts_lm(srh_lm) and int(getattr(srh_lm.config, SPEECH_VOCAB_KEY)) != speech_vocab:
            raise ValueError(
                f"--srh_init {cfg.srh_init} was trained on {getattr(srh_lm.config, SPEECH_VOCAB_KEY)} speech "
                f"codes, the model has {speech_vocab} (--speech_vocab_size / --codec)"
            )
        srh_config = config_dict(srh_lm.config, vocab_size=speech_vocab + 3, tie_word_embeddings=False)
    else:
        srh_config = qwen2_config_dict(
            speech_vocab + 3,
            cfg.srh_hidden,
            cfg.srh_layers,
            cfg.srh_heads,
            cfg.srh_kv_heads,
            cfg.srh_intermediate,
            max_positions=cfg.srh_max_positions,
            tie_word_embeddings=False,
        )

    encoder, whisper_weights = None, None
    if cfg.user_audio == "continuous":
        dims = {
            "n_mels": cfg.encoder_n_mels,
            "n_audio_ctx": cfg.encoder_ctx,
            "n_audio_state": cfg.encoder_state,
            "n_audio_head": cfg.encoder_heads,
            "n_audio_layer": cfg.encoder_layers,
        }
        if cfg.whisper:
            whisper_dims, whisper_weights = load_whisper_encoder(cfg.whisper)
            dims = {k: int(whisper_dims[k]) for k in dims}
        pad = cfg.encoder_pad_to_window if cfg.encoder_pad_to_window is not None else bool(cfg.whisper)
        encoder = EncoderConfig(
            llm_hidden_size=int(llm_config["hidden_size"]),
            downsample=cfg.downsample,
            adapter_hidden=cfg.adapter_hidden,
            pad_to_window=pad,
            positional_scale=cfg.encoder_positional_scale,
            output_norm=cfg.encoder_output_norm,
            **dims,
        ).to_dict()

    config = DrVoiceConfig(
        llm=llm_config,
        srh=srh_config,
        special_token_ids=special,
        speech_vocab_size=speech_vocab,
        group_size=cfg.group_size,
        grouping=cfg.grouping,
        combine=cfg.combine,
        speech_delay=cfg.speech_delay,
        text_input_scale=cfg.text_input_scale,
        speech_embed_dim=cfg.speech_embed_dim,
        srh_text_condition=cfg.srh_text_condition,
        srh_text_embedding=cfg.srh_text_embedding,
        user_audio=cfg.user_audio,
        encoder=encoder,
        max_positions=cfg.max_positions,
        name=cfg.name,
    )
    torch.manual_seed(cfg.seed)
    model = DrVoiceModel(config)
    model.llm.load_state_dict(llm.state_dict())  # strict: the stored config rebuilds the same LLM
    del llm
    if whisper_weights is not None:
        model.encoder.whisper.load_state_dict(whisper_weights)
    if model.encoder is not None and model.encoder.output_norm is not None:
        model.encoder.match_output_scale(model.llm.get_input_embeddings().weight)
    if srh_lm is not None:
        if is_tts_lm(srh_lm):
            load_into_srh(srh_lm, model.srh)
        else:
            copy_decoder(srh_lm.base_model, model.srh.decoder)
    out = Path(cfg.output_dir)
    extra = {
        "recipe": "build",
        "llm": cfg.llm,
        "whisper": cfg.whisper,
        "srh_init": cfg.srh_init,
        "srh_init_kind": None if srh_lm is None else ("tts_lm" if is_tts_lm(srh_lm) else "causal_lm"),
        "new_token_ids": new_ids,
    }
    path = save_pretrained(out, model.eval(), tokenizer, codec=codec, extra=extra)
    save_config(cfg, out / "build.yaml")
    log.info("wrote %s (%d parameters)", path, model.num_parameters())
    return path


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    print(f"checkpoint: {run(parse_config(BuildConfig, argv, __doc__))}")


if __name__ == "__main__":
    main()
