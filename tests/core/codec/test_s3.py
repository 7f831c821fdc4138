"""S3Tokenizer wrapper on tiny random weights in the official layouts, against the package itself."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core.codec.base import SpeechTokenizer
from core.codec.s3 import S3_VERSIONS, S3SpeechTokenizer, build_s3_model
from core.hub import MissingFilesError
from core.types import Waveform

TINY = dict(n_audio_state=128, n_audio_head=2, n_audio_layer=1)  # v2/v3 need 64-wide heads (rotary)


def noise(seconds: float, rate: int = 16000, seed: int = 0) -> Waveform:
    rng = np.random.RandomState(seed)
    t = np.arange(int(seconds * rate)) / rate
    samples = 0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t)) + 0.05 * rng.randn(len(t))
    return Waveform(samples.astype(np.float32), rate)


def tiny_v2_file(tmp_path, seed: int = 0):
    """A tiny v2 state dict saved as the package's converter writes it (`onnx2torch(..., torch_path)`)."""
    torch.manual_seed(seed)
    model = build_s3_model("v2", **TINY)
    path = tmp_path / "speech_tokenizer_v2.pt"
    torch.save(model.state_dict(), path)
    return path, model.state_dict()


def reference_codes(path, waveforms_16k):
    """The package's own path: S3TokenizerV2 + init_from_pt + log_mel_spectrogram + padding + quantize."""
    import s3tokenizer
    from s3tokenizer.model_v2 import ModelConfig

    model = s3tokenizer.S3TokenizerV2("speech_tokenizer_v2_25hz", ModelConfig(**TINY))
    model.init_from_pt(str(path))
    mels = [s3tokenizer.log_mel_spectrogram(torch.from_numpy(w.samples)) for w in waveforms_16k]
    batch, lengths = s3tokenizer.padding(mels)
    codes, code_lengths = model.quantize(batch, lengths)
    return [codes[i, : int(n)] for i, n in enumerate(code_lengths)]


def test_v2_equals_the_package_batched_and_at_25_hz(tmp_path):
    path, _ = tiny_v2_file(tmp_path)
    tokenizer = S3SpeechTokenizer.from_pretrained(path, "v2", **TINY)
    assert isinstance(tokenizer, SpeechTokenizer)
    assert (tokenizer.codebook_size, tokenizer.token_rate) == (6561, 25.0)
    clips = [noise(2.0, seed=0), noise(1.3, seed=1), noise(0.52, seed=2)]
    ours = tokenizer.encode_batch(clips)
    reference = reference_codes(path, clips)
    for mine, ref in zip(ours, reference, strict=True):
        assert torch.equal(mine, ref.long())
    assert [len(c) for c in ours] == [50, 33, 13]  # 25 Hz: ceil(ceil(frames / 2) / 2)
    for clip, batched in zip(clips, ours, strict=True):  # batching does not change any item
        assert torch.equal(tokenizer.encode(clip), batched)
    assert all(int(c.max()) < 6561 and int(c.min()) >= 0 for c in ours)


def test_any_sample_rate_is_resampled_to_16k(tmp_path):
    import torchaudio.functional as AF

    path, _ = tiny_v2_file(tmp_path)
    tokenizer = S3SpeechTokenizer.from_pretrained(path, "v2", **TINY)
    clip = noise(1.0, rate=44100)
    resampled = AF.resample(torch.from_numpy(clip.samples), 44100, 16000).numpy()
    assert torch.equal(tokenizer.encode(clip), tokenizer.encode(Waveform(resampled, 16000)))
    assert len(tokenizer.encode(clip)) == 25
    assert len(tokenizer.encode(Waveform(np.zeros(0, np.float32), 16000))) == 0
    assert len(tokenizer.encode(Waveform(np.zeros(100, np.float32), 16000))) == 1  # padded for the STFT


def test_audio_longer_than_30_s_is_segmented_and_merged_as_the_package_does(tmp_path):
    path, _ = tiny_v2_file(tmp_path)
    tokenizer = S3SpeechTokenizer.from_pretrained(path, "v2", **TINY)
    long_clip, short_clip = noise(31.0, seed=3), noise(1.0, seed=4)
    ours = tokenizer.encode_batch([long_clip, short_clip])
    reference = reference_codes(path, [long_clip, short_clip])
    assert torch.equal(ours[0], reference[0].long()) and torch.equal(ours[1], reference[1].long())
    # windows of 30 s with 26 s stride: 750 tokens keep [0, 700), 125 tokens keep [50, 125)
    assert len(ours[0]) == 775
    assert torch.equal(ours[1], tokenizer.encode(short_clip))


def test_v1_has_4096_codes_at_50_hz_and_v1_25hz_at_25_hz(tmp_path):
    for version, rate in (("v1", 50), ("v1_25hz", 25)):
        torch.manual_seed(0)
        model = build_s3_model(version, n_audio_state=64, n_audio_head=2, n_audio_layer=1)
        model.quantizer._codebook.embed.normal_()  # a zero codebook maps everything to code 0
        torch.save(model.state_dict(), tmp_path / f"{version}.pt")
        tokenizer = S3SpeechTokenizer.from_pretrained(
            tmp_path / f"{version}.pt", version, n_audio_state=64, n_audio_head=2, n_audio_layer=1
        )
        codes = tokenizer.encode(noise(1.0))
        assert tokenizer.codebook_size == 4096 and tokenizer.token_rate == rate
        assert len(codes) == rate and int(codes.max()) < 4096 and len(set(codes.tolist())) > 1


def _official_v2_onnx(state: dict[str, torch.Tensor], path) -> None:
    """Writes `state` as an ONNX file named like the official speech_tokenizer_v2.onnx, i.e. the
    node and initializer names the package's `onnx2torch` maps (MatMul weights stored transposed)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    inits, nodes = [], []

    def init(name, tensor):
        inits.append(numpy_helper.from_array(tensor.detach().numpy().astype(np.float32), name))
        return name

    def node(op, name, *inputs):
        nodes.append(helper.make_node(op, list(inputs), [name + "_out"], name=name))

    special = {"conv1.weight": "onnx::Conv_2216", "conv1.bias": "onnx::Conv_2217"}
    special.update({"conv2.weight": "onnx::Conv_2218", "conv2.bias": "onnx::Conv_2219"})
    for conv in ("conv1", "conv2"):
        w, b = (init(special[f"{conv}.{p}"], state[f"encoder.{conv}.{p}"]) for p in ("weight", "bias"))
        node("Conv", f"/{conv}/Conv", "x", w, b)
    blocks = sorted({int(k.split(".")[2]) for k in state if k.startswith("encoder.blocks.")})
    for i in blocks:
        p = f"encoder.blocks.{i}"
        for ln in ("attn_ln", "mlp_ln"):
            scale, bias = (
                init(f"{p}.{ln}.s", state[f"{p}.{ln}.weight"]),
                init(f"{p}.{ln}.b", state[f"{p}.{ln}.bias"]),
            )
            node("LayerNormalization", f"/blocks.{i}/{ln}/LayerNormalization", "x", scale, bias)
        for lin, onnx_name in (
            ("attn.query", "attn/query"),
            ("attn.key", "attn/key"),
            ("attn.value", "attn/value"),
        ):
            node(
                "MatMul",
                f"/blocks.{i}/{onnx_name}/MatMul",
                "x",
                init(f"w_{i}_{lin}", state[f"{p}.{lin}.weight"].T),
            )
            if f"{p}.{lin}.bias" in state:
                node(
                    "Add", f"/blocks.{i}/{onnx_name}/Add", init(f"b_{i}_{lin}", state[f"{p}.{lin}.bias"]), "x"
                )
        for lin, onnx_name in (("attn.out", "attn/out"), ("mlp.0", "mlp/mlp.0"), ("mlp.2", "mlp/mlp.2")):
            node(
                "MatMul",
                f"/blocks.{i}/{onnx_name}/MatMul",
                "x",
                init(f"w_{i}_{lin}", state[f"{p}.{lin}.weight"].T),
            )
            node("Add", f"/blocks.{i}/{onnx_name}/Add", init(f"b_{i}_{lin}", state[f"{p}.{lin}.bias"]), "x")
        fsmn = init(f"fsmn_{i}", state[f"{p}.attn.fsmn_block.weight"])
        node("Conv", f"/blocks.{i}/attn/fsmn_block/Conv", "x", fsmn)
    q = "quantizer._codebook.project_down"
    node("MatMul", "/quantizer/project_in/MatMul", "x", init("onnx::MatMul_2536", state[f"{q}.weight"].T))
    node("Add", "/quantizer/project_in/Add", init("quantizer.project_in.bias", state[f"{q}.bias"]), "x")
    graph = helper.make_graph(
        nodes,
        "speech_tokenizer_v2",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info(nodes[-1].output[0], TensorProto.FLOAT, None)],
        inits,
    )
    onnx.save(helper.make_model(graph), str(path))


def test_official_onnx_layout_is_converted_by_the_package(tmp_path):
    _, state = tiny_v2_file(tmp_path, seed=5)
    onnx_path = tmp_path / "speech_tokenizer_v2.onnx"
    _official_v2_onnx(state, onnx_path)
    tokenizer = S3SpeechTokenizer.from_pretrained(tmp_path, "v2", **TINY)  # a directory holding the .onnx
    loaded = tokenizer.model.state_dict()
    assert sorted(loaded) == sorted(state)
    for name, tensor in state.items():
        assert torch.equal(loaded[name], tensor), name


def test_missing_and_wrong_files_are_named(tmp_path, monkeypatch):
    with pytest.raises(MissingFilesError, match="speech_tokenizer_v2.onnx"):
        S3SpeechTokenizer.from_pretrained(tmp_path, "v2")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty_cache"))
    with pytest.raises(MissingFilesError, match="speech_tokenizer_v2.onnx.*HF_HUB_OFFLINE"):
        S3SpeechTokenizer.from_pretrained(None, "v2")  # the version's hub repo
    path, _ = tiny_v2_file(tmp_path)
    with pytest.raises(ValueError, match="does not fit"):
        S3SpeechTokenizer.from_pretrained(path, "v2", n_audio_state=128, n_audio_head=2, n_audio_layer=2)
    with pytest.raises(ValueError, match="unknown S3Tokenizer version"):
        S3SpeechTokenizer.from_pretrained(path, "v9")
    assert set(S3_VERSIONS) == {"v1", "v1_25hz", "v2", "v3"}
