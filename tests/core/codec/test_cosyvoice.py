"""CosyVoice2 detokenizer on tiny random weights in the official layout (flow.pt / hift.pt).

The reference is the package itself: modules constructed by hyperpyyaml from a cosyvoice2.yaml
written here (the official file's flow/hift sections with tiny widths), loaded by
`CosyVoice2Model.load` and run through `CosyVoice2Model.token2wav`.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core.codec.base import DetokenizerStream, SpeechDetokenizer
from core.codec.cosyvoice import CosyVoice2Detokenizer, Speaker
from core.codec.cosyvoice_modules import CosyVoice2Config, import_cosyvoice
from core.hub import MissingFilesError, UnsafeWeightsError
from core.types import Waveform
from tests.core.codec.tiny_cosyvoice import write_tiny_weights

pytestmark = pytest.mark.filterwarnings(  # the package's reference code (and the diffusers it uses)
    "ignore::FutureWarning:cosyvoice",
    "ignore::DeprecationWarning:cosyvoice",
    "ignore:.*LoRACompatibleLinear:FutureWarning",
)

TINY_YAML = """
flow: !new:cosyvoice.flow.flow.CausalMaskedDiffWithXvec
    input_size: 512
    output_size: 80
    spk_embed_dim: 192
    output_type: 'mel'
    vocab_size: 6561
    input_frame_rate: 25
    only_mask_loss: True
    token_mel_ratio: 2
    pre_lookahead_len: 3
    encoder: !new:cosyvoice.transformer.upsample_encoder.UpsampleConformerEncoder
        output_size: 512
        attention_heads: 2
        linear_units: 64
        num_blocks: 1
        dropout_rate: 0.1
        positional_dropout_rate: 0.1
        attention_dropout_rate: 0.1
        normalize_before: True
        input_layer: 'linear'
        pos_enc_layer_type: 'rel_pos_espnet'
        selfattention_layer_type: 'rel_selfattn'
        input_size: 512
        use_cnn_module: False
        macaron_style: False
        static_chunk_size: 5
    decoder: !new:cosyvoice.flow.flow_matching.CausalConditionalCFM
        in_channels: 240
        n_spks: 1
        spk_emb_dim: 80
        cfm_params: !new:omegaconf.DictConfig
            content:
                sigma_min: 1e-06
                solver: 'euler'
                t_scheduler: 'cosine'
                training_cfg_rate: 0.2
                inference_cfg_rate: 0.7
                reg_loss_type: 'l1'
        estimator: !new:cosyvoice.flow.decoder.CausalConditionalDecoder
            in_channels: 320
            out_channels: 80
            channels: [32]
            dropout: 0.0
            attention_head_dim: 16
            n_blocks: 1
            num_mid_blocks: 1
            num_heads: 2
            act_fn: 'gelu'
            static_chunk_size: 10
            num_decoding_left_chunks: -1
hift: !new:cosyvoice.hifigan.generator.HiFTGenerator
    in_channels: 80
    base_channels: 32
    nb_harmonics: 8
    sampling_rate: 24000
    nsf_alpha: 0.1
    nsf_sigma: 0.003
    nsf_voiced_threshold: 10
    upsample_rates: [8, 5, 3]
    upsample_kernel_sizes: [16, 11, 7]
    istft_params:
        n_fft: 16
        hop_len: 4
    resblock_kernel_sizes: [3]
    resblock_dilation_sizes: [[1]]
    source_resblock_kernel_sizes: [3, 3, 3]
    source_resblock_dilation_sizes: [[1], [1], [1]]
    lrelu_slope: 0.1
    audio_limit: 0.99
    f0_predictor: !new:cosyvoice.hifigan.f0_predictor.ConvRNNF0Predictor
        num_class: 1
        in_channels: 80
        cond_channels: 16
"""


class NotATensor:  # unpickling a file that holds this needs an arbitrary class
    def __init__(self):
        self.value = 1


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory):
    return write_tiny_weights(tmp_path_factory.mktemp("cosyvoice2"), CosyVoice2Config.tiny())


@pytest.fixture(scope="module")
def detokenizer(weights_dir):
    return CosyVoice2Detokenizer.from_pretrained(weights_dir, CosyVoice2Config.tiny())


@pytest.fixture(scope="module")
def reference(weights_dir):
    """The package's own CosyVoice2Model, built by hyperpyyaml and loaded by its `load`."""
    import_cosyvoice()
    from cosyvoice.cli.model import CosyVoice2Model
    from hyperpyyaml import load_hyperpyyaml

    conf = load_hyperpyyaml(TINY_YAML)  # our own trusted test YAML
    model = CosyVoice2Model(None, conf["flow"], conf["hift"])
    model.load(None, str(weights_dir / "flow.pt"), str(weights_dir / "hift.pt"))
    return model


def reference_token2wav(reference, tokens, speaker, offset, streaming, finalize, seed):
    torch.manual_seed(seed)
    return reference.token2wav(
        tokens[None],
        speaker.prompt_tokens[None],
        speaker.prompt_mel[None],
        speaker.embedding[None],
        offset,
        "test",
        stream=streaming,
        finalize=finalize,
    )[0].numpy()


def random_speaker(prompt_tokens: int = 7, seed: int = 0) -> Speaker:
    g = torch.Generator().manual_seed(seed)
    return Speaker(
        torch.randn(192, generator=g),
        torch.randint(0, 6561, (prompt_tokens,), generator=g),
        torch.randn(2 * prompt_tokens, 80, generator=g),
    )


def test_state_dicts_are_consumed_and_outputs_are_24_khz_with_2_mel_frames_per_token(
    weights_dir, detokenizer
):
    assert isinstance(detokenizer, SpeechDetokenizer)
    assert (
        detokenizer.sample_rate == 24000
        and detokenizer.token_rate == 25.0
        and detokenizer.codebook_size == 6561
    )
    saved = torch.load(weights_dir / "flow.pt", weights_only=True)
    assert sorted(detokenizer.flow.state_dict()) == sorted(saved)  # strict: nothing missing or unexpected
    tokens = torch.randint(0, 6561, (13,))
    speaker = detokenizer.speaker
    mel, _ = detokenizer.flow.inference(
        token=tokens[None].int(),
        token_len=torch.tensor([13]),
        prompt_token=speaker.prompt_tokens[None].int(),
        prompt_token_len=torch.tensor([0]),
        prompt_feat=speaker.prompt_mel[None],
        prompt_feat_len=torch.tensor([0]),
        embedding=speaker.embedding[None],
        streaming=True,
        finalize=True,
    )
    assert mel.shape == (1, 80, 26)  # 2 mel frames per token
    audio = detokenizer.decode(tokens)
    assert audio.dtype == np.float32 and audio.shape == (13 * 960,)  # 24 kHz: 40 ms per token
    assert np.isfinite(audio).all() and np.abs(audio).max() <= 0.99


@pytest.mark.parametrize("full_context", [False, True])
def test_offline_decode_equals_the_package(detokenizer, reference, full_context):
    tokens, speaker = torch.randint(0, 6561, (23,)), random_speaker()
    detokenizer.flow_full_context = full_context
    try:
        ours = detokenizer.decode(tokens, speaker)
    finally:
        detokenizer.flow_full_context = False
    reference.hift_cache_dict["test"] = None
    ref = reference_token2wav(reference, tokens, speaker, 0, not full_context, True, seed=0)
    np.testing.assert_array_equal(ours, ref)


def test_streaming_equals_the_packages_token2wav_schedule(detokenizer, reference):
    """CosyVoice2Model.tts(stream=True): hop 5 (+ prompt pad first), 3 look-ahead tokens, HiFT cache."""
    tokens, speaker = torch.randint(0, 6561, (31,)), random_speaker(prompt_tokens=7)
    stream = detokenizer.stream(speaker)
    assert isinstance(stream, DetokenizerStream)
    ours = []
    for i in range(0, len(tokens), 3):
        ours += stream.push(tokens[i : i + 3])
    ours += stream.flush()

    reference.hift_cache_dict["test"] = None
    hop, pad, offset, expected = 5, 3, 0, []  # prompt 7 tokens -> first hop 5 + 3
    while len(tokens) - offset >= (hop + pad if offset == 0 else hop) + 3:
        this_hop = hop + pad if offset == 0 else hop
        expected.append(
            reference_token2wav(
                reference, tokens[: offset + this_hop + 3], speaker, offset, True, False, seed=len(expected)
            )
        )
        offset += this_hop
    expected.append(reference_token2wav(reference, tokens, speaker, offset, True, True, seed=len(expected)))
    assert [len(c) for c in ours] == [len(c) for c in expected]
    for mine, ref in zip(ours, expected, strict=True):
        np.testing.assert_array_equal(mine, ref)
    assert sum(len(c) for c in ours) == len(tokens) * 960


def test_streaming_equals_offline_away_from_joins(tmp_path):
    """With a deterministic excitation (no sine, all frames unvoiced) the stream differs from the
    offline decode only around the joins, where HiFT's cache windows are cross-faded."""
    config = CosyVoice2Config.tiny(
        chunk_tokens=10, mel_cache_frames=4, hift_nsf_alpha=0.0, hift_voiced_threshold=1e9
    )
    detokenizer = CosyVoice2Detokenizer.from_pretrained(
        write_tiny_weights(tmp_path / "w", config, seed=1), config
    )
    tokens = torch.randint(0, 6561, (47,))
    offline = detokenizer.decode(tokens)
    stream = detokenizer.stream()
    one_by_one = [c for t in tokens for c in stream.push([int(t)])] + stream.flush()
    stream = detokenizer.stream()
    at_once = stream.push(tokens) + stream.flush()
    streamed = np.concatenate(one_by_one)
    np.testing.assert_array_equal(streamed, np.concatenate(at_once))  # independent of push sizes
    assert streamed.shape == offline.shape == (47 * 960,)
    # joins at tokens 10, 20, 30, 40; the cross-fade covers the 2 tokens (4 mel frames) before each
    # join, plus one token of HiFT receptive field on either side
    near_join = np.zeros(47, dtype=bool)
    for join in (10, 20, 30, 40):
        near_join[join - 3 : join + 1] = True
    per_token = np.abs(streamed - offline).reshape(47, 960).max(axis=1)
    assert per_token[~near_join].max() < 1e-5, per_token
    assert per_token[near_join].max() > 0  # the joins are really cross-faded windows
    assert np.abs(offline).max() > 1e-3


def test_unsafe_missing_and_mismatched_files_are_refused(tmp_path, weights_dir, monkeypatch):
    config = CosyVoice2Config.tiny()
    bad = tmp_path / "bad"
    bad.mkdir()
    torch.save({"weight": torch.zeros(1), "extra": NotATensor()}, bad / "flow.pt")
    torch.save(torch.load(weights_dir / "hift.pt", weights_only=True), bad / "hift.pt")
    with pytest.raises(UnsafeWeightsError, match="flow.pt"):
        CosyVoice2Detokenizer.from_pretrained(bad, config)
    (bad / "hift.pt").unlink()
    with pytest.raises(MissingFilesError, match="hift.pt"):
        CosyVoice2Detokenizer.from_pretrained(bad, config)
    with pytest.raises(ValueError, match="does not fit.*missing"):
        CosyVoice2Detokenizer.from_pretrained(weights_dir, CosyVoice2Config.tiny(decoder_mid_blocks=2))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty_cache"))
    with pytest.raises(MissingFilesError, match=r"FunAudioLLM/CosyVoice2-0.5B: missing flow.pt, hift.pt"):
        CosyVoice2Detokenizer.from_pretrained("FunAudioLLM/CosyVoice2-0.5B")


def _tiny_campplus(path) -> np.ndarray:
    """A stand-in CAM++ ONNX with the official interface: fbank (1, T, 80) -> x-vector (1, 192)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = np.random.RandomState(0).randn(80, 192).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMax", ["feats"], ["pooled"], axes=[1], keepdims=0),
            helper.make_node("MatMul", ["pooled", "w"], ["embs"]),
        ],
        "campplus",
        [helper.make_tensor_value_info("feats", TensorProto.FLOAT, [1, None, 80])],
        [helper.make_tensor_value_info("embs", TensorProto.FLOAT, [1, 192])],
        [numpy_helper.from_array(weight, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8  # what onnxruntime of any recent version reads
    onnx.save(model, str(path))
    return weight


def test_speaker_from_a_recording_with_campplus_and_s3_prompt(tmp_path, weights_dir):
    pytest.importorskip("onnxruntime")
    import shutil

    import torchaudio.compliance.kaldi as kaldi

    from core.codec.s3 import S3SpeechTokenizer, build_s3_model

    directory = tmp_path / "cv"
    shutil.copytree(weights_dir, directory)
    weight = _tiny_campplus(directory / "campplus.onnx")
    detokenizer = CosyVoice2Detokenizer.from_pretrained(directory, CosyVoice2Config.tiny())
    torch.manual_seed(0)
    s3 = S3SpeechTokenizer(build_s3_model("v2", n_audio_state=128, n_audio_head=2, n_audio_layer=1), "v2")
    rng = np.random.RandomState(1)
    recording = Waveform((0.2 * rng.randn(22050 * 2)).astype(np.float32), 22050)  # 2 s at 22.05 kHz

    speaker = detokenizer.speaker_from_recording(recording, tokenizer=s3)
    import torchaudio.functional as AF

    audio_16k = AF.resample(torch.from_numpy(recording.samples), 22050, 16000)
    feats = kaldi.fbank(audio_16k[None], num_mel_bins=80, dither=0, sample_frequency=16000)
    feats = feats - feats.mean(dim=0, keepdim=True)
    np.testing.assert_allclose(
        speaker.embedding.numpy(), feats.max(dim=0).values.numpy() @ weight, rtol=1e-4, atol=1e-4
    )
    assert len(speaker.prompt_tokens) == 50 and speaker.prompt_mel.shape == (100, 80)  # 2 s: 25 Hz / 50 Hz
    assert len(detokenizer.decode(torch.randint(0, 6561, (9,)), speaker)) == 9 * 960
    speaker.save(tmp_path / "speaker.safetensors")
    loaded = Speaker.load(tmp_path / "speaker.safetensors")
    assert torch.equal(loaded.embedding, speaker.embedding) and torch.equal(
        loaded.prompt_tokens, speaker.prompt_tokens
    )
    without_campplus = CosyVoice2Detokenizer.from_pretrained(weights_dir, CosyVoice2Config.tiny())
    with pytest.raises(MissingFilesError, match="campplus.onnx"):
        without_campplus.speaker_from_recording(recording)


def test_default_speaker_and_token_checks(detokenizer):
    assert torch.equal(detokenizer.speaker.embedding, torch.zeros(192))
    assert len(detokenizer.speaker.prompt_tokens) == 0
    assert len(detokenizer.decode([])) == 0
    with pytest.raises(ValueError, match="speech tokens must be in"):
        detokenizer.decode([0, 6561])
    with pytest.raises(ValueError, match="at most"):
        detokenizer.decode(np.zeros(7501, dtype=np.int64))
    stream = detokenizer.stream()
    assert stream.push([1, 2]) == [] and len(np.concatenate(stream.flush())) == 2 * 960
    with pytest.raises(RuntimeError):
        stream.push([1])


def _real_size_decode(device: str, stream: bool) -> None:
    from core.codec.cosyvoice_modules import build_flow, build_hift

    config = CosyVoice2Config()  # CosyVoice2-0.5B's sizes, random weights
    flow, hift = build_flow(config).to(device), build_hift(config).to(device)
    detokenizer = CosyVoice2Detokenizer(flow, hift, config)
    tokens = torch.randint(0, 6561, (30 if stream else 8,))
    audio = detokenizer.decode(tokens)
    assert audio.shape == (len(tokens) * 960,) and np.isfinite(audio).all()
    if stream:
        chunks = detokenizer.stream().push(tokens)
        assert (
            len(chunks) == 1 and len(chunks[0]) == (25 - 4) * 960
        )  # 25 tokens less the held-back 3840 samples


@pytest.mark.slow
def test_real_size_modules_decode_on_cpu():
    _real_size_decode("cpu", stream=False)


@pytest.mark.gpu
def test_real_size_modules_stream_on_cuda():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    _real_size_decode("cuda", stream=True)


def _librosa_slaney_mel(sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """librosa.filters.mel(htk=False, norm="slaney") written out (librosa is not installed here)."""
    f_sp, min_log_hz, logstep = 200.0 / 3, 1000.0, np.log(6.4) / 27.0
    min_log_mel = min_log_hz / f_sp

    def hz_to_mel(f):
        f = np.asarray(f, dtype=np.float64)
        return np.where(
            f >= min_log_hz, min_log_mel + np.log(np.maximum(f, 1e-10) / min_log_hz) / logstep, f / f_sp
        )

    def mel_to_hz(m):
        return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)

    fft_freqs = np.fft.rfftfreq(n=n_fft, d=1.0 / sr)
    mel_f = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    fdiff, ramps = np.diff(mel_f), np.subtract.outer(mel_f, fft_freqs)
    weights = np.stack(
        [np.maximum(0, np.minimum(-ramps[i] / fdiff[i], ramps[i + 2] / fdiff[i + 1])) for i in range(n_mels)]
    )
    return weights * (2.0 / (mel_f[2 : n_mels + 2] - mel_f[:n_mels]))[:, None]


def test_prompt_mel_is_matchas_mel_spectrogram():
    """matcha.utils.audio.mel_spectrogram(n_fft=1920, 80 mels, 24 kHz, hop 480, fmax 8000, center=False)."""
    from core.codec.cosyvoice_modules import prompt_mel

    y = torch.from_numpy(np.random.RandomState(0).randn(24000).astype(np.float32) * 0.1)
    basis = torch.from_numpy(_librosa_slaney_mel(24000, 1920, 80, 0, 8000)).float()
    padded = torch.nn.functional.pad(y[None, None], (720, 720), mode="reflect")[0]
    spec = torch.stft(padded, 1920, 480, 1920, torch.hann_window(1920), center=False, return_complex=True)
    expected = torch.log(torch.clamp(basis @ torch.sqrt(spec.abs() ** 2 + 1e-9)[0], min=1e-5)).T
    ours = prompt_mel(y)
    assert ours.shape == (50, 80)  # 50 frames per second: 2 per 25 Hz token
    torch.testing.assert_close(ours, expected, atol=1e-4, rtol=1e-4)
