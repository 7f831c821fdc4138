"""The demo pipeline's export: bf16 weights, with the model card and the recommended settings that
evaluation chose (already in the output) kept."""

from __future__ import annotations

import torch
from safetensors import safe_open

from core.checkpoint import GENERATION_FILE, from_pretrained, save_generation_config
from core.sampling import ModeSampling, SamplingConfig
from training.recipes.demo_export import export


def test_export_keeps_the_card_and_the_recommended_settings(tiny_assets, tmp_path):
    out = tmp_path / "demo"
    out.mkdir()
    (out / "README.md").write_text("# card\n")
    (out / "stale.json").write_text("{}")  # anything else in `out` is replaced
    recommended = ModeSampling(modes={"S2T": SamplingConfig(audio_views=3)})
    save_generation_config(out, recommended)
    export(tiny_assets.init, out)
    ckpt = from_pretrained(out)
    assert (out / "README.md").read_text() == "# card\n" and not (out / "stale.json").exists()
    assert ckpt.sampling == recommended and (out / GENERATION_FILE).is_file()
    assert ckpt.codec is not None
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        assert {f.get_tensor(name).dtype for name in f.keys()} == {torch.bfloat16}  # noqa: SIM118
