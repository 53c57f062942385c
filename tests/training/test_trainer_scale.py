"""The loop's scale features: gradient accumulation, weighted mixtures, workers, activation
checkpointing, devices and precision."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from conftest import build_small_model
from unifashion.configuration import ConfigError
from unifashion.training.activation_checkpointing import enable_activation_checkpointing
from unifashion.training.sampler import WeightedBatchSampler
from unifashion.training.trainer import LoopConfig, OptimConfig, train


class _Regression(nn.Module):
    """A mean-squared-error objective: its loss over a batch is the mean of per-row losses."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.linear = nn.Linear(5, 3)

    def forward(self, batch):
        loss = ((self.linear(batch["x"]) - batch["y"]) ** 2).mean()
        return {"loss": loss, "mse": loss}


class _Rows(torch.utils.data.Dataset):
    def __init__(self, n=64):
        g = torch.Generator().manual_seed(1)
        self.x, self.y = torch.randn(n, 5, generator=g), torch.randn(n, 3, generator=g)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return i

    def collate(self, rows):
        return {"x": self.x[rows], "y": self.y[rows]}


def _one_step(tmp_path, accumulation: int, workers: int = 0) -> torch.Tensor:
    objective = _Regression()
    data = _Rows()
    # SGD-like AdamW step is a function of the gradient alone: equal gradients, equal weights.
    loop = LoopConfig(steps=1, batch_size=16, gradient_accumulation=accumulation, num_workers=workers,
                      checkpoint_every=10, output_dir=str(tmp_path / f"run-{accumulation}-{workers}"),
                      optim=OptimConfig(lr=0.1, warmup_steps=0, weight_decay=0.0, grad_clip=0.0))
    grads = {}
    objective.linear.weight.register_hook(lambda g: grads.setdefault("w", []).append(g.clone()))
    train(objective, data, data.collate, loop)
    return torch.stack(grads["w"]).sum(0), objective.linear.weight.detach().clone()


def test_accumulating_two_micro_batches_of_b_equals_one_step_of_2b(tmp_path):
    grad_one, weight_one = _one_step(tmp_path, 1)
    grad_two, weight_two = _one_step(tmp_path, 2)
    torch.testing.assert_close(grad_two, grad_one, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(weight_two, weight_one, rtol=1e-6, atol=1e-7)
    _, weight_workers = _one_step(tmp_path, 2, workers=2)  # the same batches come from worker processes
    torch.testing.assert_close(weight_workers, weight_one, rtol=1e-6, atol=1e-7)


def test_loop_settings_are_checked():
    with pytest.raises(ConfigError, match="divisor of loop.batch_size"):
        LoopConfig(batch_size=10, gradient_accumulation=3)
    with pytest.raises(ConfigError, match="device must be auto, cpu or cuda"):
        LoopConfig(device="tpu")
    with pytest.raises(ConfigError, match="mixed_precision must be"):
        LoopConfig(mixed_precision="int8")


def test_bf16_autocast_trains_on_the_cpu(tmp_path):
    objective, data = _Regression(), _Rows()
    loop = LoopConfig(steps=2, batch_size=8, mixed_precision="bf16", device="cpu", output_dir=str(tmp_path / "r"),
                      optim=OptimConfig(lr=0.1, warmup_steps=0))
    result = train(objective, data, data.collate, loop)
    assert result.steps_done == 2 and np.isfinite(result.last_losses["loss"])
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="fp16 mixed precision needs a GPU"):
            train(_Regression(), data, data.collate, LoopConfig(steps=1, batch_size=8, mixed_precision="fp16",
                                                                 output_dir=str(tmp_path / "r2")))


def test_weighted_batches_follow_the_weights_and_depend_only_on_the_step():
    # Two sources of 100 and 900 items, weighted 0.5 each: each makes about half of every batch.
    weights = np.array([0.5 / 100] * 100 + [0.5 / 900] * 900)
    sampler = WeightedBatchSampler(weights, batch_size=20, num_steps=200, seed=3)
    batches = list(sampler)
    first_source = np.mean([np.mean(np.array(b) < 100) for b in batches])
    assert 0.45 < first_source < 0.55
    assert all(len(set(b)) == 20 for b in batches)
    resumed = list(WeightedBatchSampler(weights, batch_size=20, num_steps=200, seed=3, start_step=150))
    assert resumed == batches[150:]
    with pytest.raises(ValueError, match="larger than the items"):
        WeightedBatchSampler(np.array([1.0, 0.0, 1.0]), batch_size=3, num_steps=1)


def test_activation_checkpointing_gives_the_same_gradients(single_thread):
    def grads(checkpointing: bool):
        model = build_small_model()
        model.set_phase(1, "qformer")
        model.train()
        if checkpointing:
            assert any("encoder" in name for name in enable_activation_checkpointing(model))
        torch.manual_seed(5)
        batch = {"images": torch.rand(4, 3, 32, 32), "captions": ["a red dress", "a blue shirt", "green pants",
                                                                  "a black top"]}
        model.phase1_loss(batch, generator=torch.Generator().manual_seed(0)).loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain, checkpointed = grads(False), grads(True)
    assert plain.keys() == checkpointed.keys() and any("qformer" in n for n in plain)
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], rtol=1e-5, atol=1e-6, msg=name)
