"""The training loop on a toy objective: exact resume, checkpoints without pickle, config errors."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from unifashion.training.checkpoint import load_checkpoint, save_checkpoint
from unifashion.training.sampler import ResumableBatchSampler
from unifashion.training.trainer import LoopConfig, OptimConfig, latest_checkpoint, train


class NoisyRegression(torch.nn.Module):
    """A toy objective that uses the global RNG inside the loss (as dropout and diffusion noise do)."""

    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Dropout(0.2), torch.nn.Linear(16, 1))
        self.frozen = torch.nn.Linear(4, 4)
        self.frozen.requires_grad_(False)

    def forward(self, batch):
        x, y = batch["x"], batch["y"]
        noise = torch.randn_like(y) * 0.01
        mse = ((self.net(self.frozen(x)) - y - noise) ** 2).mean()
        return {"loss": mse, "mse": mse.detach()}


class Points(torch.utils.data.Dataset):
    def __init__(self, n=64):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 4, generator=g)
        self.y = self.x.sum(1, keepdim=True)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i], "y": self.y[i]}


def collate(rows):
    return {"x": torch.stack([r["x"] for r in rows]), "y": torch.stack([r["y"] for r in rows])}


def _losses(path):
    return [json.loads(line)["loss"] for line in path.read_text().splitlines()]


def _run(tmp, deadline=None, **kw):
    torch.manual_seed(123)
    model = NoisyRegression()
    cfg = LoopConfig(steps=24, batch_size=8, seed=5, checkpoint_every=5, output_dir=str(tmp),
                     optim=OptimConfig(lr=1e-2, warmup_steps=3), **kw)
    return model, train(model, Points(), collate, cfg, deadline=deadline)


def test_resume_continues_bit_for_bit(tmp_path):
    _, full = _run(tmp_path / "full")
    full_losses = _losses(full.log_file)
    assert len(full_losses) == 24 and full_losses[-1] < full_losses[0]

    _, part = _run(tmp_path / "split", stop_after=10)
    assert part.steps_done == 10
    assert latest_checkpoint(tmp_path / "split").name == "step-0000010"
    model, rest = _run(tmp_path / "split", resume="latest")
    assert rest.steps_done == 14
    assert _losses(rest.log_file) == full_losses  # identical floats, not approximately equal


def test_checkpoint_holds_only_trainable_tensors_and_no_pickle(tmp_path):
    model, result = _run(tmp_path)
    files = sorted(p.name for p in result.checkpoint.iterdir())
    assert files == ["model.safetensors", "optimizer.safetensors", "rng.safetensors", "state.json"]
    saved = load_file(result.checkpoint / "model.safetensors")
    assert set(saved) == {"net.0.weight", "net.0.bias", "net.2.weight", "net.2.bias"}
    # Only two checkpoints are kept.
    assert len(list((tmp_path / "checkpoints").glob("step-*"))) == 2


def test_frozen_parameters_do_not_move(tmp_path):
    torch.manual_seed(0)
    model = NoisyRegression()
    before = model.frozen.weight.clone()
    train(model, Points(), collate, LoopConfig(steps=5, batch_size=8, output_dir=str(tmp_path)))
    assert torch.equal(before, model.frozen.weight)


def test_checkpoint_round_trip_restores_optimizer_and_rng(tmp_path):
    model = NoisyRegression()
    opt = torch.optim.AdamW(model.net.parameters(), lr=0.1)
    model(collate([Points()[i] for i in range(4)]))["loss"].backward()
    opt.step()
    save_checkpoint(tmp_path / "c", model, opt, None, step=1)
    expected = torch.rand(3)
    other = NoisyRegression()
    opt2 = torch.optim.AdamW(other.net.parameters(), lr=0.1)
    meta = load_checkpoint(tmp_path / "c", other, opt2)
    assert meta["step"] == 1
    assert torch.equal(torch.rand(3), expected)
    for a, b in zip(model.parameters(), other.parameters(), strict=True):
        assert torch.equal(a, b)
    s1, s2 = opt.state_dict()["state"], opt2.state_dict()["state"]
    assert all(torch.equal(s1[k]["exp_avg"], s2[k]["exp_avg"]) for k in s1)


def test_sampler_order_depends_only_on_seed_and_step():
    a = ResumableBatchSampler(50, 8, 20, seed=1)
    b = ResumableBatchSampler(50, 8, 20, seed=1, start_step=7)
    assert list(a)[7:] == list(b)
    assert len(b) == 13
    with pytest.raises(ValueError, match="batch size 60 is larger than the dataset"):
        ResumableBatchSampler(50, 60, 1)


def test_config_errors_name_the_key():
    with pytest.raises(ValueError, match="'loop.stepz'"):
        LoopConfig.from_dict({"stepz": 3})
    with pytest.raises(ValueError, match="'loop.optim.learning_rate'"):
        LoopConfig.from_dict({"optim": {"learning_rate": 3}})
    with pytest.raises(ValueError, match="schedule"):
        OptimConfig(schedule="step")


def test_missing_checkpoint_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="state.json"):
        load_checkpoint(tmp_path / "nope", NoisyRegression())


def test_a_deadline_stops_at_a_checkpoint_and_the_same_call_resumes_bit_for_bit(tmp_path):
    import time

    _, full = _run(tmp_path / "full")
    _, cut = _run(tmp_path / "cut", deadline=time.time() - 1)  # already past: one step, then stop
    assert cut.out_of_time and cut.steps_done == 1
    assert latest_checkpoint(tmp_path / "cut").name == "step-0000001"
    _, rest = _run(tmp_path / "cut", resume="latest")
    assert not rest.out_of_time and rest.steps_done == 23
    assert _losses(rest.log_file) == _losses(full.log_file)


def test_checkpoints_come_every_few_minutes_whatever_the_step_count(tmp_path, monkeypatch):
    import unifashion.training.trainer as trainer

    clock = iter(range(0, 10_000, 200))  # each reading of the clock is 200 s later than the last
    monkeypatch.setattr(trainer.time, "perf_counter", lambda: float(next(clock)))
    torch.manual_seed(123)
    cfg = LoopConfig(steps=6, batch_size=8, checkpoint_every=1000, checkpoint_minutes=5, keep_checkpoints=10,
                     output_dir=str(tmp_path))
    train(NoisyRegression(), Points(), collate, cfg)
    steps = sorted(int(p.name.split("-")[1]) for p in (tmp_path / "checkpoints").glob("step-*"))
    assert steps[-1] == 6 and len(steps) >= 3  # by time, not only the last step's
