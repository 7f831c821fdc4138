"""The SFT recipe under DeepSpeed ZeRO-2 on CPU (gloo): one process, then two with torchrun.

DeepSpeed's first use JIT-builds its shm comm op (~60 s, then cached in ~/.cache/torch_extensions).
"""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from core.checkpoint import from_pretrained
from training.data import ExampleCollator
from training.recipes.common import build_dataset
from training.runtime import Runtime, load_deepspeed_config, resolve_deepspeed_config

ROOT = Path(__file__).resolve().parents[2]
ZERO2 = ROOT / "training" / "configs" / "zero2.json"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sft_args(assets, out: Path, max_steps: int) -> list[str]:
    return [
        "-m",
        "training.recipes.sft",
        "--init",
        str(assets.init),
        "--train_manifest",
        str(assets.manifest),
        "--output_dir",
        str(out),
        "--max_steps",
        str(max_steps),
        "--save_every",
        "2",
        "--log_every",
        "1",
        "--max_tokens",
        "4000",
        "--peak_lr",
        "3e-3",
        "--precision",
        "fp32",
        "--device",
        "cpu",
        "--deepspeed",
        str(ZERO2),
    ]


def _run(cmd: list[str]) -> str:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "MASTER_PORT": str(_free_port()),
    }
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):  # the launchers set these
        env.pop(key, None)
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    return log


def test_zero2_config_is_resolved_by_the_recipe(monkeypatch):
    """zero2.json's "auto" values: clipping from --grad_clip, bf16 only for bf16 on a GPU."""
    file = load_deepspeed_config(str(ZERO2))
    assert file["zero_optimization"]["stage"] == 2
    assert file["zero_optimization"]["overlap_comm"] and file["zero_optimization"]["contiguous_gradients"]
    cpu = resolve_deepspeed_config(
        {**file, "train_batch_size": 64}, Runtime(torch.device("cpu")), 0.5, "bf16"
    )
    assert cpu["gradient_clipping"] == 0.5 and cpu["bf16"]["enabled"] is False
    assert cpu["train_micro_batch_size_per_gpu"] == 1 and "train_batch_size" not in cpu
    gpu = resolve_deepspeed_config(file, Runtime(torch.device("cuda", 0)), 1.0, "bf16")
    assert gpu["bf16"]["enabled"] is True and gpu["gradient_clipping"] == 1.0
    assert (
        resolve_deepspeed_config(file, Runtime(torch.device("cuda", 0)), 1.0, "fp32")["bf16"]["enabled"]
        is False
    )
    assert file["bf16"]["enabled"] == "auto"  # the input is not modified
    # accelerate launch --use_deepspeed --deepspeed_config_file F hands F to the recipe
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_CONFIG_FILE", str(ZERO2))
    assert load_deepspeed_config(None) == file


def finite_loss(ckpt, manifest: Path) -> bool:
    """The trained model's losses on an S2M and a T2M batch are finite."""
    dataset = build_dataset(ckpt, str(manifest), None, ["S2M", "T2M"], None, seed=0)
    batch = ExampleCollator.for_builder(dataset.builder)([dataset[i] for i in range(len(dataset))])
    with torch.no_grad():
        out = ckpt.model(batch)
    return bool(torch.isfinite(out.text_loss) and torch.isfinite(out.speech_loss) and out.speech_tokens > 0)


def _check_final(assets, out: Path, ranks: int) -> None:
    state = sorted((out / "state").glob("step-*"))[-1]
    assert (state / "COMPLETE").exists()
    engine = state / "deepspeed" / "engine"
    for rank in range(ranks):  # ZeRO-2 shards the optimizer state over the ranks
        assert (engine / f"zero_pp_rank_{rank}_mp_rank_00_optim_states.pt").is_file()
    ckpt = from_pretrained(out / "final")
    init = from_pretrained(assets.init).model.state_dict()
    trained = ckpt.model.state_dict()
    assert any(not torch.equal(init[k], trained[k]) for k in init if k.startswith("llm."))
    assert all(torch.isfinite(v).all() for v in trained.values())
    assert finite_loss(ckpt, assets.manifest)


@pytest.mark.slow
def test_zero2_single_process_and_resume(tiny_assets, tmp_path):
    out = tmp_path / "one"
    _run([sys.executable, *_sft_args(tiny_assets, out, max_steps=2)])
    log = _run([sys.executable, *_sft_args(tiny_assets, out, max_steps=4)])
    assert "resumed from" in log and "step-0000002" in log
    assert [p.name for p in sorted((out / "state").glob("step-*"))] == ["step-0000002", "step-0000004"]
    _check_final(tiny_assets, out, ranks=1)


@pytest.mark.slow
def test_zero2_two_processes_with_torchrun(tiny_assets, tmp_path):
    out = tmp_path / "two"
    port = str(_free_port())
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", port]
    _run([*cmd, *_sft_args(tiny_assets, out, max_steps=4)])
    _check_final(tiny_assets, out, ranks=2)
    rows = [line for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    assert len(rows) == 4  # rank 0 logs the loss averaged over both ranks
