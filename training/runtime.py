"""Where a recipe runs: device, processes, DeepSpeed, and exact save/resume of the training state.

One code path serves a single CPU process (no DeepSpeed), `torchrun` (DDP, gloo or NCCL) and
DeepSpeed ZeRO-2 (`deepspeed` or `torchrun`/`accelerate` launchers with a DeepSpeed config).

Training state (`<output_dir>/state/step-<N>/`, written by rank 0 except DeepSpeed's shards):
    model.safetensors   trainable weights
    optimizer.pt        optimizer state (plain path; loaded with weights_only=True)
    deepspeed/engine/   DeepSpeed checkpoint: module states + one optimizer shard per rank (DeepSpeed path)
    scheduler.pt        LR scheduler state (weights_only=True)
    rng.pt              torch CPU/CUDA RNG states (weights_only=True)
    trainer.json        step, data position, python RNG, recipe extras
    COMPLETE            written last: a state without it (killed mid-save) is ignored
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file

log = logging.getLogger(__name__)

DEEPSPEED_TAG = "engine"  # DeepSpeed's checkpoint tag inside a state's deepspeed/ folder


@dataclass
class Runtime:
    device: torch.device
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return dist.is_available() and dist.is_initialized()

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def all_reduce_mean(self, value: float) -> float:
        if not self.distributed:
            return value
        t = torch.tensor(
            [value], dtype=torch.float64, device=self.device if self.device.type == "cuda" else "cpu"
        )
        dist.all_reduce(t)
        return float(t.item()) / self.world_size


def setup_runtime(device: str = "auto", use_deepspeed: bool = False) -> Runtime:
    """Initialises processes from the launcher's environment (RANK/WORLD_SIZE/LOCAL_RANK)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    if (world > 1 or use_deepspeed) and not dist.is_initialized():
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", "29500")
        os.environ.setdefault("RANK", str(rank))
        os.environ.setdefault("WORLD_SIZE", str(world))
        os.environ.setdefault("LOCAL_RANK", str(local))
        if use_deepspeed:
            import deepspeed

            deepspeed.init_distributed(dist_backend=backend)
        else:
            dist.init_process_group(backend=backend)
    return Runtime(dev, rank, world, local)


def autocast(runtime: Runtime, precision: str):
    """bf16 autocast on GPUs when asked; a no-op context on CPU / fp32."""
    enabled = precision == "bf16" and runtime.device.type == "cuda"
    return torch.autocast(device_type=runtime.device.type, dtype=torch.bfloat16, enabled=enabled)


def capture_rng() -> tuple[dict[str, torch.Tensor], Any]:
    tensors = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda{i}"] = s
    return tensors, random.getstate()


def restore_rng(tensors: dict[str, torch.Tensor], py_state: Any) -> None:
    torch.set_rng_state(tensors["cpu"])
    if torch.cuda.is_available():
        states = [tensors[k] for k in sorted(tensors) if k.startswith("cuda")]
        if states:
            torch.cuda.set_rng_state_all(states)
    random.setstate(py_state)


def _py_state_to_json(state: Any) -> Any:
    version, internal, gauss = state
    return [version, list(internal), gauss]


def _py_state_from_json(data: Any) -> Any:
    return (data[0], tuple(data[1]), data[2])


class Trainer:
    """Owns model + optimizer + scheduler on one runtime, with or without DeepSpeed.

    Args:
        model: the module to train (a core DrVoiceModel or a part of it).
        optimizer: a torch optimizer over the trainable parameters.
        scheduler: an LR scheduler stepped once per optimizer step.
        runtime: from `setup_runtime`.
        deepspeed_config: a DeepSpeed config dict (ZeRO-2 in training/configs/), or None.
        grad_clip: max gradient norm (0 = off).
        precision: "fp32" or "bf16" (GPU only).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler,
        runtime: Runtime,
        deepspeed_config: dict | None = None,
        grad_clip: float = 1.0,
        precision: str = "fp32",
    ):
        self.runtime = runtime
        self.grad_clip = grad_clip
        self.precision = precision
        self.scheduler = scheduler
        self.module = model
        self.ds = None
        if deepspeed_config is not None:
            import deepspeed

            cfg = resolve_deepspeed_config(deepspeed_config, runtime, grad_clip, precision)
            self.ds, self.optimizer, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, config=cfg)
            self.model = self.ds
        else:
            self.optimizer = optimizer
            self.model = model
            if runtime.world_size > 1:
                ids = [runtime.device.index] if runtime.device.type == "cuda" else None
                self.model = torch.nn.parallel.DistributedDataParallel(
                    model, device_ids=ids, find_unused_parameters=True
                )

    def step(self, loss: torch.Tensor) -> float:
        """Backward + clip + optimizer + scheduler step; returns the gradient norm (0 when unknown)."""
        if self.ds is not None:
            self.ds.backward(loss)
            self.ds.step()
            norm = self.ds.get_global_grad_norm()
            self.scheduler.step()
            return float(norm) if norm is not None else 0.0
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        params = [p for p in self.module.parameters() if p.grad is not None]
        norm = (
            torch.nn.utils.clip_grad_norm_(params, self.grad_clip) if self.grad_clip > 0 and params else None
        )
        self.optimizer.step()
        self.scheduler.step()
        return float(norm) if norm is not None else 0.0

    @property
    def lr(self) -> float:
        return float(self.scheduler.get_last_lr()[0])

    # ---- state -------------------------------------------------------------------------------------
    def save_state(self, output_dir: Path, step: int, extra: dict[str, Any], keep: int = 2) -> Path:
        """Saves everything needed to resume exactly after `step`; keeps the last `keep` states."""
        path = Path(output_dir) / "state" / f"step-{step:07d}"
        if self.runtime.is_main:
            path.mkdir(parents=True, exist_ok=True)
        self.runtime.barrier()
        if self.ds is not None:
            self.ds.save_checkpoint(str(path / "deepspeed"), tag=DEEPSPEED_TAG, save_latest=False)
        if self.runtime.is_main:
            weights = {k: v.detach().cpu().contiguous().clone() for k, v in self.module.state_dict().items()}
            _save_unique(weights, path / "model.safetensors")
            if self.ds is None:
                torch.save(self.optimizer.state_dict(), path / "optimizer.pt")
            torch.save(self.scheduler.state_dict(), path / "scheduler.pt")
            rng, py_state = capture_rng()
            torch.save(rng, path / "rng.pt")
            meta = {"step": step, "python_rng": _py_state_to_json(py_state), "extra": extra}
            (path / "trainer.json").write_text(json.dumps(meta))
            (path / "COMPLETE").write_text("ok")
            states = sorted(p for p in path.parent.glob("step-*") if (p / "COMPLETE").exists())
            for old in states[:-keep]:
                shutil.rmtree(old, ignore_errors=True)
        self.runtime.barrier()
        return path

    def load_state(self, path: Path) -> tuple[int, dict[str, Any]]:
        """Restores a state saved by `save_state`; returns (step, extra)."""
        path = Path(path)
        weights = load_file(str(path / "model.safetensors"))
        missing, unexpected = self.module.load_state_dict(weights, strict=False)
        tied = {k for k in missing if k.endswith("lm_head.weight")}
        if set(missing) - tied or unexpected:
            raise RuntimeError(
                f"training state does not fit the model: missing {missing[:5]}, unexpected {unexpected[:5]}"
            )
        if self.ds is not None:
            self.ds.load_checkpoint(str(path / "deepspeed"), tag=DEEPSPEED_TAG)
        else:
            try:
                self.optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True))
            except ValueError as err:  # torch: "... parameter group that doesn't match the size ..."
                raise RuntimeError(
                    f"cannot resume from {path}: it was saved with a different set of trainable parameters "
                    f"(did --freeze change?). Resume with the same settings, or start afresh with "
                    f"--resume false or a new --output_dir ({err})"
                ) from err
        self.scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=True))
        meta = json.loads((path / "trainer.json").read_text())
        restore_rng(torch.load(path / "rng.pt", weights_only=True), _py_state_from_json(meta["python_rng"]))
        return int(meta["step"]), meta["extra"]


def _save_unique(weights: dict[str, torch.Tensor], path: Path) -> None:
    """safetensors refuses shared storage; tied weights were cloned, so this saves all names."""
    save_file(weights, str(path))


def latest_state(output_dir: Path) -> Path | None:
    """The newest complete training state under output_dir/state, or None."""
    states = sorted(p for p in (Path(output_dir) / "state").glob("step-*") if (p / "COMPLETE").exists())
    return states[-1] if states else None


def deepspeed_config_path(path: str | None) -> str | None:
    """The recipe's --deepspeed file, else the one `accelerate launch --use_deepspeed
    --deepspeed_config_file F` hands its processes (ACCELERATE_DEEPSPEED_CONFIG_FILE), else None."""
    if path:
        return path
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true":
        return os.environ.get("ACCELERATE_DEEPSPEED_CONFIG_FILE") or None
    return None


def load_deepspeed_config(path: str | None) -> dict | None:
    path = deepspeed_config_path(path)
    if not path:
        return None
    return json.loads(Path(path).read_text())


def resolve_deepspeed_config(config: dict, runtime: Runtime, grad_clip: float, precision: str) -> dict:
    """The DeepSpeed config the engine gets: the recipe owns batching, clipping and precision.

    - one micro-batch per optimiser step, no accumulation (`train_micro_batch_size_per_gpu` = 1,
      `gradient_accumulation_steps` = 1, `train_batch_size` dropped): the recipe's batches are
      token-bucketed (`max_tokens` per process), so DeepSpeed's batch sizes are bookkeeping only,
      and the LR scheduler steps once per `Trainer.step`;
    - `gradient_clipping` = the recipe's `grad_clip` (the file's value, "auto" or not, is replaced);
    - `bf16.enabled` is on only for `precision="bf16"` on a GPU: "auto" or true on a CPU turns it off
      (CPUs train in fp32, DESIGN.md §8); `fp16` "auto" is off;
    - `zero_allow_untested_optimizer`: the recipe passes its own torch AdamW to ZeRO.
    """
    cfg = json.loads(json.dumps(config))  # deep copy
    cfg["train_micro_batch_size_per_gpu"] = 1
    cfg["gradient_accumulation_steps"] = 1
    cfg.pop("train_batch_size", None)
    cfg["gradient_clipping"] = float(grad_clip)
    bf16 = precision == "bf16" and runtime.device.type == "cuda"
    cfg["bf16"] = {**cfg.get("bf16", {}), "enabled": bf16}
    if cfg.get("fp16", {}).get("enabled") == "auto":
        cfg["fp16"]["enabled"] = False
    cfg.setdefault("zero_allow_untested_optimizer", True)
    return cfg
