"""Hub loading: the cache is used offline, missing files are named, pickles are refused."""

from __future__ import annotations

import pytest
import torch

from core.hub import (
    MissingFilesError,
    UnsafeWeightsError,
    fetch_files,
    is_repo_id,
    load_torch_weights,
    resolve_directory,
    resolve_file,
)

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class Opaque:  # unpickling needs this class: refused by weights_only
    pass


def fake_cache(root, repo_id: str, files: dict[str, bytes]):
    """The layout huggingface_hub's cache uses: models--owner--name/{refs/main, snapshots/<commit>/...}."""
    repo = root / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    snapshot = repo / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    for name, data in files.items():
        (snapshot / name).write_bytes(data)
    return snapshot


def test_offline_reads_the_cache_and_names_what_is_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    snapshot = fake_cache(tmp_path, "owner/model", {"flow.pt": b"x", "config.json": b"{}"})
    found = fetch_files("owner/model", ["flow.pt"], optional=["campplus.onnx"])
    assert found == {"flow.pt": snapshot / "flow.pt"}
    with pytest.raises(MissingFilesError) as err:
        fetch_files("owner/model", ["flow.pt", "hift.pt", "llm.pt"])
    message = str(err.value)
    assert "hift.pt, llm.pt" in message and "flow.pt," not in message and "HF_HUB_OFFLINE" in message
    assert "hf download owner/model --include hift.pt --include llm.pt" in message
    assert resolve_file("owner/model", "flow.pt") == snapshot / "flow.pt"
    with pytest.raises(MissingFilesError, match="other/repo: missing config.json.*HF_HUB_OFFLINE"):
        resolve_directory("other/repo", required=["config.json"], allow_patterns=["*.json"])


def test_empty_cache_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    with pytest.raises(
        MissingFilesError, match=r"FunAudioLLM/CosyVoice2-0.5B: missing speech_tokenizer_v2.onnx"
    ):
        resolve_file("FunAudioLLM/CosyVoice2-0.5B", "speech_tokenizer_v2.onnx")


def test_local_paths(tmp_path):
    (tmp_path / "a.pt").write_bytes(b"")
    assert resolve_file(tmp_path / "a.pt", "ignored") == tmp_path / "a.pt"
    assert resolve_file(tmp_path, "a.pt") == tmp_path / "a.pt"
    with pytest.raises(MissingFilesError, match="b.pt"):
        resolve_file(tmp_path, "b.pt")
    with pytest.raises(MissingFilesError, match="config.json"):
        resolve_directory(tmp_path, required=["config.json"])
    assert (
        is_repo_id("Qwen/Qwen2.5-7B-Instruct") and not is_repo_id(str(tmp_path)) and not is_repo_id("a/b/c")
    )


def test_weights_files(tmp_path):
    torch.save({"w": torch.ones(2)}, tmp_path / "ok.pt")
    assert torch.equal(load_torch_weights(tmp_path / "ok.pt")["w"], torch.ones(2))
    torch.save({"w": torch.ones(2), "meta": Opaque()}, tmp_path / "pickle.pt")
    with pytest.raises(UnsafeWeightsError, match="pickle.pt.*arbitrary Python objects"):
        load_torch_weights(tmp_path / "pickle.pt", "test weights")
    with pytest.raises(MissingFilesError, match="missing.pt"):
        load_torch_weights(tmp_path / "missing.pt")
    torch.save({"nested": {"w": torch.ones(1)}}, tmp_path / "nested.pt")
    with pytest.raises(ValueError, match="flat"):
        load_torch_weights(tmp_path / "nested.pt")
    (tmp_path / "garbage.pt").write_bytes(b"not a torch file")
    with pytest.raises((ValueError, UnsafeWeightsError)):
        load_torch_weights(tmp_path / "garbage.pt")
