"""Training checkpoints in safetensors + JSON, complete enough that a resume continues bit for bit.

A checkpoint folder holds:

- ``model.safetensors``: the trainable parameters and buffers that changed (all of them by default);
- ``optimizer.safetensors`` + the tensor-free rest of the optimizer state in ``state.json``;
- ``state.json``: the step, the scheduler state, the Python / NumPy RNG states, the config;
- ``rng.safetensors``: the torch RNG state.

Nothing is pickled, so a checkpoint from anyone can be opened safely.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file


def _flatten_optimizer(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors: dict[str, torch.Tensor] = {}
    rest: dict[str, dict] = {}
    for idx, entry in state["state"].items():
        for name, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{idx}.{name}"] = value.detach().contiguous().clone()
            else:
                rest.setdefault(str(idx), {})[name] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": rest}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    for idx, scalars in meta["scalars"].items():
        state.setdefault(int(idx), {}).update(scalars)
    return {"state": state, "param_groups": meta["param_groups"]}


def _numpy_state_to_json(state) -> list:
    name, keys, pos, has_gauss, cached = state
    return [name, keys.tolist(), int(pos), int(has_gauss), float(cached)]


def _numpy_state_from_json(data) -> tuple:
    name, keys, pos, has_gauss, cached = data
    return (name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached)


def save_checkpoint(path: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None,
                    scheduler: Any, step: int, extra: dict | None = None,
                    parameter_names: list[str] | None = None) -> Path:
    """Write a checkpoint folder atomically (to ``path.tmp``, then renamed), and return its path.

    ``parameter_names`` limits the model tensors saved (e.g. to the trainable ones); by default the
    whole state dict is saved.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    state = model.state_dict()
    if parameter_names is not None:
        state = {k: v for k, v in state.items() if k in set(parameter_names)}
    save_file({k: v.detach().contiguous().clone() for k, v in state.items()}, tmp / "model.safetensors")
    meta: dict[str, Any] = {"step": step, "extra": extra or {}}
    if optimizer is not None:
        tensors, opt_meta = _flatten_optimizer(optimizer.state_dict())
        save_file(tensors, tmp / "optimizer.safetensors")
        meta["optimizer"] = opt_meta
    if scheduler is not None:
        meta["scheduler"] = scheduler.state_dict()
    meta["python_rng"] = json.loads(json.dumps(random.getstate()))
    meta["numpy_rng"] = _numpy_state_to_json(np.random.get_state())
    save_file({"torch": torch.get_rng_state()}, tmp / "rng.safetensors")
    (tmp / "state.json").write_text(json.dumps(meta, indent=1, sort_keys=True))
    if path.exists():
        shutil.rmtree(path)
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None,
                    scheduler: Any = None, restore_rng: bool = True) -> dict:
    """Load a checkpoint folder into ``model`` (and optimizer / scheduler / RNGs); return its metadata."""
    path = Path(path)
    state_file = path / "state.json"
    if not state_file.is_file():
        raise FileNotFoundError(f"not a training checkpoint: {state_file} is missing")
    meta = json.loads(state_file.read_text())
    weights = load_file(path / "model.safetensors")
    missing = [k for k in weights if k not in model.state_dict()]
    if missing:
        raise KeyError(f"checkpoint {path} has tensors the model lacks: {missing[:5]}")
    model.load_state_dict(weights, strict=False)
    if optimizer is not None and "optimizer" in meta:
        optimizer.load_state_dict(_unflatten_optimizer(load_file(path / "optimizer.safetensors"), meta["optimizer"]))
    if scheduler is not None and "scheduler" in meta:
        scheduler.load_state_dict(meta["scheduler"])
    if restore_rng:
        py = meta["python_rng"]
        random.setstate((py[0], tuple(py[1]), py[2]))
        np.random.set_state(_numpy_state_from_json(meta["numpy_rng"]))
        torch.set_rng_state(load_file(path / "rng.safetensors")["torch"])
    return meta
