"""CosyVoice2 flow matching and HiFT vocoder modules, built in code from known hyperparameters.

The classes are the official CosyVoice code of the `cosyvoice-minicpmo` package
(`CausalMaskedDiffWithXvec` + `UpsampleConformerEncoder` + `CausalConditionalCFM` /
`CausalConditionalDecoder`, and `HiFTGenerator` + `ConvRNNF0Predictor`). The hyperparameters are
those of CosyVoice2-0.5B's `cosyvoice2.yaml` (`CosyVoice2Config()`); that YAML is *not* executed
(it constructs arbitrary objects through hyperpyyaml tags). `flow.pt` / `hift.pt` are read with
`torch.load(weights_only=True)` and must fit the modules exactly.

Facts the package fixes (not configurable): the flow encoder is 512 wide (its look-ahead and
upsampling layers hard-code 512 channels) with a 3-token look-ahead; the flow's mel has 80 bins
and is produced by 10 Euler steps with classifier-free guidance 0.7 from a fixed noise tensor of
15000 frames (300 s: longer inputs fail); 2 mel frames per token (25 Hz tokens -> 50 Hz mel);
HiFT upsamples 8 * 5 * 3 = 120 times and its iSTFT hop is 4, i.e. 480 samples per mel frame,
so 960 samples (40 ms at 24 kHz) per token.
"""

from __future__ import annotations

import logging
import random
import sys
import types
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from core.hub import load_torch_weights

logger = logging.getLogger(__name__)

SAMPLE_RATE = 24000  # Hz of the HiFT output
MEL_BINS = 80  # flow output / HiFT input
MEL_FRAMES_PER_TOKEN = 2  # token_mel_ratio: 25 Hz tokens -> 50 Hz mel
SAMPLES_PER_MEL_FRAME = 480  # prod(upsample_rates) * istft hop = 8 * 5 * 3 * 4
SAMPLES_PER_TOKEN = MEL_FRAMES_PER_TOKEN * SAMPLES_PER_MEL_FRAME  # 960 = 40 ms at 24 kHz
PRE_LOOKAHEAD_TOKENS = 3  # hard-coded in the package's PreLookaheadLayer
ENCODER_WIDTH = 512  # hard-coded in the package's UpsampleConformerEncoder
MAX_MEL_FRAMES = 50 * 300  # length of CausalConditionalCFM's fixed noise (prompt + reply)


@dataclass(frozen=True)
class CosyVoice2Config:
    """Hyperparameters of the flow and HiFT modules (defaults: CosyVoice2-0.5B's cosyvoice2.yaml)."""

    vocab_size: int = 6561  # speech codes the flow embeds (S3Tokenizer v2)
    spk_embed_dim: int = 192  # CAM++ speaker embedding width
    encoder_heads: int = 8  # flow encoder attention heads (width fixed at 512)
    encoder_linear_units: int = 2048  # flow encoder feed-forward width
    encoder_blocks: int = 6  # flow encoder conformer blocks before upsampling (4 after, fixed)
    decoder_channels: tuple[int, ...] = (256,)  # CFM U-Net widths
    decoder_attention_head_dim: int = 64
    decoder_blocks: int = 4  # transformer blocks per U-Net level
    decoder_mid_blocks: int = 12
    decoder_heads: int = 8
    chunk_tokens: int = 25  # static chunk of the chunk-causal flow, = the streaming hop (CosyVoice2: 25)
    decoder_left_chunks: int = -1  # chunks of left context of the decoder's attention (-1: all)
    hift_base_channels: int = 512
    hift_nb_harmonics: int = 8
    hift_nsf_alpha: float = 0.1  # amplitude of the sine source
    hift_nsf_sigma: float = 0.003  # noise of the voiced source
    hift_voiced_threshold: float = 10.0  # Hz above which a frame is voiced
    hift_resblock_kernel_sizes: tuple[int, ...] = (3, 7, 11)
    hift_resblock_dilation_sizes: tuple[tuple[int, ...], ...] = ((1, 3, 5), (1, 3, 5), (1, 3, 5))
    hift_source_resblock_kernel_sizes: tuple[int, ...] = (7, 7, 11)
    hift_source_resblock_dilation_sizes: tuple[tuple[int, ...], ...] = ((1, 3, 5), (1, 3, 5), (1, 3, 5))
    hift_f0_channels: int = 512  # ConvRNNF0Predictor width
    mel_cache_frames: int = 8  # streaming: mel frames HiFT re-reads before each chunk (CosyVoice2: 8)

    def __post_init__(self) -> None:
        if self.chunk_tokens < 1 or self.mel_cache_frames < 1:
            raise ValueError("chunk_tokens and mel_cache_frames must be >= 1")
        if any(c % 8 for c in self.decoder_channels):
            raise ValueError(
                f"decoder_channels must be multiples of 8 (GroupNorm), got {self.decoder_channels}"
            )
        if (
            len(self.hift_source_resblock_kernel_sizes) != 3
            or len(self.hift_source_resblock_dilation_sizes) != 3
        ):
            raise ValueError("HiFT has 3 upsampling stages: give 3 source resblock kernels / dilations")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CosyVoice2Config:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"CosyVoice2Config: unknown field(s) {unknown}")
        tuples = {
            k: tuple(tuple(x) if isinstance(x, list) else x for x in v)
            for k, v in data.items()
            if isinstance(v, list)
        }
        return cls(**{**data, **tuples})

    @classmethod
    def tiny(cls, **overrides: Any) -> CosyVoice2Config:
        """Same module classes with small widths (tests): ~7 M parameters, mostly the 512-wide encoder."""
        values = dict(
            vocab_size=6561,
            encoder_heads=2,
            encoder_linear_units=64,
            encoder_blocks=1,
            decoder_channels=(32,),
            decoder_attention_head_dim=16,
            decoder_blocks=1,
            decoder_mid_blocks=1,
            decoder_heads=2,
            chunk_tokens=5,
            hift_base_channels=32,
            hift_resblock_kernel_sizes=(3,),
            hift_resblock_dilation_sizes=((1,),),
            hift_source_resblock_kernel_sizes=(3, 3, 3),
            hift_source_resblock_dilation_sizes=((1,), (1,), (1,)),
            hift_f0_channels=16,
        )
        values.update(overrides)
        return cls(**values)


# ---------------------------------------------------------------------------------------------
# Importing the package


def _install_matcha_stub() -> None:
    """Lets `matcha.models.components.flow_matching` import without training-only packages.

    The package's `matcha/utils/__init__.py` imports hydra, lightning, gdown and wget (training
    tools), and `matcha.utils.pylogger` imports lightning, only to build a logger. Inference needs
    neither: when they are not installed, `matcha.utils.pylogger` is provided by a stand-in whose
    `get_pylogger` is `logging.getLogger`.
    """
    try:
        import matcha.utils.pylogger  # noqa: F401
    except ImportError:
        import matcha

        utils = types.ModuleType("matcha.utils")
        utils.__path__ = [str(Path(matcha.__file__).parent / "utils")]
        pylogger = types.ModuleType("matcha.utils.pylogger")
        pylogger.get_pylogger = logging.getLogger
        utils.pylogger = pylogger
        sys.modules["matcha.utils"] = utils
        sys.modules["matcha.utils.pylogger"] = pylogger
        logger.debug("matcha.utils replaced by a logging stand-in (hydra/lightning not installed)")


def import_cosyvoice() -> types.SimpleNamespace:
    """The official classes used here, imported from `cosyvoice-minicpmo` (with a clear error)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        _install_matcha_stub()
        from cosyvoice.flow.decoder import CausalConditionalDecoder
        from cosyvoice.flow.flow import CausalMaskedDiffWithXvec
        from cosyvoice.flow.flow_matching import CausalConditionalCFM
        from cosyvoice.hifigan.f0_predictor import ConvRNNF0Predictor
        from cosyvoice.hifigan.generator import HiFTGenerator
        from cosyvoice.transformer.upsample_encoder import UpsampleConformerEncoder
        from omegaconf import DictConfig
    except ImportError as exc:
        raise ImportError(
            f"the CosyVoice2 detokenizer needs the official CosyVoice code: pip install cosyvoice-minicpmo "
            f"diffusers conformer (see requirements.txt); import failed with: {exc}"
        ) from exc
    finally:
        # cosyvoice.utils.file_utils calls logging.basicConfig(level=DEBUG) at import: undo it.
        root.handlers[:] = handlers
        root.setLevel(level)
    return types.SimpleNamespace(
        CausalConditionalDecoder=CausalConditionalDecoder,
        CausalMaskedDiffWithXvec=CausalMaskedDiffWithXvec,
        CausalConditionalCFM=CausalConditionalCFM,
        ConvRNNF0Predictor=ConvRNNF0Predictor,
        HiFTGenerator=HiFTGenerator,
        UpsampleConformerEncoder=UpsampleConformerEncoder,
        DictConfig=DictConfig,
    )


@contextmanager
def _preserved_rng() -> Iterator[None]:
    """CausalConditionalCFM's constructor reseeds python, numpy and torch (to draw its fixed
    noise); the caller's random streams are restored afterwards."""
    py_state, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        yield
    random.setstate(py_state)
    np.random.set_state(np_state)


# ---------------------------------------------------------------------------------------------
# Building and loading


def build_flow(cfg: CosyVoice2Config) -> torch.nn.Module:
    """`CausalMaskedDiffWithXvec` with CosyVoice2's architecture (randomly initialised, eval mode)."""
    cv = import_cosyvoice()
    encoder = cv.UpsampleConformerEncoder(
        input_size=ENCODER_WIDTH,
        output_size=ENCODER_WIDTH,
        attention_heads=cfg.encoder_heads,
        linear_units=cfg.encoder_linear_units,
        num_blocks=cfg.encoder_blocks,
        dropout_rate=0.1,
        positional_dropout_rate=0.1,
        attention_dropout_rate=0.1,
        normalize_before=True,
        input_layer="linear",
        pos_enc_layer_type="rel_pos_espnet",
        selfattention_layer_type="rel_selfattn",
        use_cnn_module=False,
        macaron_style=False,
        static_chunk_size=cfg.chunk_tokens,
    )
    with warnings.catch_warnings():  # diffusers deprecates the LoRACompatibleLinear the package uses
        warnings.simplefilter("ignore", FutureWarning)
        estimator = cv.CausalConditionalDecoder(
            in_channels=4 * MEL_BINS,  # x, mu, speaker, prompt condition
            out_channels=MEL_BINS,
            channels=list(cfg.decoder_channels),
            dropout=0.0,
            attention_head_dim=cfg.decoder_attention_head_dim,
            n_blocks=cfg.decoder_blocks,
            num_mid_blocks=cfg.decoder_mid_blocks,
            num_heads=cfg.decoder_heads,
            act_fn="gelu",
            static_chunk_size=cfg.chunk_tokens * MEL_FRAMES_PER_TOKEN,
            num_decoding_left_chunks=cfg.decoder_left_chunks,
        )
    cfm_params = cv.DictConfig(
        {
            "sigma_min": 1e-06,
            "solver": "euler",
            "t_scheduler": "cosine",
            "training_cfg_rate": 0.2,
            "inference_cfg_rate": 0.7,
            "reg_loss_type": "l1",
        }
    )
    with _preserved_rng():
        decoder = cv.CausalConditionalCFM(
            in_channels=3 * MEL_BINS,
            cfm_params=cfm_params,
            n_spks=1,
            spk_emb_dim=MEL_BINS,
            estimator=estimator,
        )
    flow = cv.CausalMaskedDiffWithXvec(
        input_size=ENCODER_WIDTH,
        output_size=MEL_BINS,
        spk_embed_dim=cfg.spk_embed_dim,
        output_type="mel",
        vocab_size=cfg.vocab_size,
        input_frame_rate=25,
        only_mask_loss=True,
        token_mel_ratio=MEL_FRAMES_PER_TOKEN,
        pre_lookahead_len=PRE_LOOKAHEAD_TOKENS,
        encoder=encoder,
        decoder=decoder,
    )
    return flow.eval()


def build_hift(cfg: CosyVoice2Config) -> torch.nn.Module:
    """`HiFTGenerator` (24 kHz) with CosyVoice2's architecture (randomly initialised, eval mode)."""
    cv = import_cosyvoice()
    hift = cv.HiFTGenerator(
        in_channels=MEL_BINS,
        base_channels=cfg.hift_base_channels,
        nb_harmonics=cfg.hift_nb_harmonics,
        sampling_rate=SAMPLE_RATE,
        nsf_alpha=cfg.hift_nsf_alpha,
        nsf_sigma=cfg.hift_nsf_sigma,
        nsf_voiced_threshold=cfg.hift_voiced_threshold,
        upsample_rates=[8, 5, 3],
        upsample_kernel_sizes=[16, 11, 7],
        istft_params={"n_fft": 16, "hop_len": 4},
        resblock_kernel_sizes=list(cfg.hift_resblock_kernel_sizes),
        resblock_dilation_sizes=[list(d) for d in cfg.hift_resblock_dilation_sizes],
        source_resblock_kernel_sizes=list(cfg.hift_source_resblock_kernel_sizes),
        source_resblock_dilation_sizes=[list(d) for d in cfg.hift_source_resblock_dilation_sizes],
        lrelu_slope=0.1,
        audio_limit=0.99,
        f0_predictor=cv.ConvRNNF0Predictor(
            num_class=1, in_channels=MEL_BINS, cond_channels=cfg.hift_f0_channels
        ),
    )
    return hift.eval()


def load_module_weights(module: torch.nn.Module, path: str | Path, what: str) -> None:
    """Loads `flow.pt` / `hift.pt` (weights_only) into `module`; every key must match.

    HiFT files saved from the GAN wrapper carry a "generator." prefix, which is removed (as the
    package's `CosyVoiceModel.load` does).

    Raises:
        MissingFilesError / UnsafeWeightsError: see `core.hub.load_torch_weights`.
        ValueError: missing or unexpected keys (names the first few).
    """
    state = load_torch_weights(path, what)
    if what.endswith("hift.pt"):
        state = {k.replace("generator.", ""): v for k, v in state.items()}
    missing, unexpected = module.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"{what}: {path} does not fit the configured modules: {len(missing)} missing "
            f"{sorted(missing)[:5]}, {len(unexpected)} unexpected {sorted(unexpected)[:5]}"
        )


# ---------------------------------------------------------------------------------------------
# Front ends of a reference recording (zero-shot speaker)


def prompt_mel(samples_24k: torch.Tensor) -> torch.Tensor:
    """CosyVoice2's 80-bin log-mel of a 24 kHz recording (the flow's prompt condition).

    = matcha's `mel_spectrogram(n_fft=1920, num_mels=80, sampling_rate=24000, hop_size=480,
    win_size=1920, fmin=0, fmax=8000, center=False)`, with torchaudio's Slaney filter bank in place
    of librosa's (the same matrix).

    Args:
        samples_24k: (N,) float32 audio at 24 kHz.

    Returns:
        (N // 480, 80) log-mel at 50 frames/s.
    """
    import torchaudio.functional as AF

    n_fft, hop = 1920, 480
    pad = (n_fft - hop) // 2
    y = torch.nn.functional.pad(samples_24k.reshape(1, 1, -1).float(), (pad, pad), mode="reflect").reshape(
        1, -1
    )
    spec = torch.stft(
        y,
        n_fft,
        hop_length=hop,
        win_length=n_fft,
        window=torch.hann_window(n_fft),
        center=False,
        return_complex=True,
    )
    magnitude = torch.sqrt(torch.view_as_real(spec).pow(2).sum(-1) + 1e-9)  # (1, n_fft/2+1, F)
    banks = AF.melscale_fbanks(
        n_fft // 2 + 1, 0.0, 8000.0, MEL_BINS, SAMPLE_RATE, norm="slaney", mel_scale="slaney"
    )
    mel = banks.T @ magnitude[0]  # (80, F)
    return torch.log(torch.clamp(mel, min=1e-5)).T.contiguous()


def campplus_embedding(session, samples_16k: torch.Tensor) -> torch.Tensor:
    """CAM++ speaker embedding of a 16 kHz recording, as CosyVoice's frontend computes it.

    Args:
        session: an onnxruntime InferenceSession of `campplus.onnx`.
        samples_16k: (N,) float32 audio at 16 kHz.

    Returns:
        (192,) float32 embedding (not normalised: the flow L2-normalises it).
    """
    import torchaudio.compliance.kaldi as kaldi

    feat = kaldi.fbank(samples_16k.reshape(1, -1).float(), num_mel_bins=80, dither=0, sample_frequency=16000)
    feat = feat - feat.mean(dim=0, keepdim=True)  # (F, 80)
    name = session.get_inputs()[0].name
    out = session.run(None, {name: feat.unsqueeze(0).numpy()})[0]
    return torch.from_numpy(np.asarray(out, dtype=np.float32).reshape(-1))


def onnx_session(path: str | Path):
    """A CPU onnxruntime session (the optional `onnxruntime` dependency)."""
    try:
        import onnxruntime
    except ImportError as exc:
        raise ImportError(
            "speaker embeddings from a recording need onnxruntime: pip install onnxruntime"
        ) from exc
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    return onnxruntime.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
