"""The training loop: accelerate for devices and processes, exact resume, progress and logs.

The same loop runs on this CPU and, under ``accelerate launch``, on several GPUs or nodes (DDP):
the model is wrapped once by ``accelerator.prepare``, each process takes its share of every global
batch, and only the main process writes checkpoints and logs.

Resume is exact: the batch order depends only on (seed, step) (:class:`ResumableBatchSampler`),
the data loader has its own generator so it never draws from the global RNG, and checkpoints
carry the optimizer, scheduler and every RNG state. A run stopped at step s and resumed gives the
same losses, to the bit, as a run that never stopped.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from unifashion import configuration
from unifashion.atomic import atomic_write
from unifashion.configuration import ConfigError
from unifashion.training.checkpoint import load_checkpoint, save_checkpoint
from unifashion.training.sampler import ResumableBatchSampler, WeightedBatchSampler

SCHEDULES = ("cosine", "linear", "constant")


@dataclass
class ParamGroupConfig:
    """One module's own optimiser settings: ``parameter_groups`` names parts of the model
    (UniFashion's :meth:`~unifashion.models.UniFashion.parameter_group` names: ``qformer``,
    ``heads``, ``llm_adapter``, ``llm``, ``diffusion_adapter``, ``unet``, ``vae``); the rest is
    AdamW's learning rate, weight decay and betas and the group's own schedule and warm-up
    (``warmup_ratio`` of the stage's steps when set, else ``warmup_steps``)."""

    parameter_groups: list[str] = field(default_factory=list)
    lr: float = 1e-4
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    schedule: str = "cosine"
    warmup_steps: int = 0
    warmup_ratio: float | None = None
    min_lr_ratio: float = 0.0

    def __post_init__(self):
        self.betas = tuple(self.betas)
        if not self.parameter_groups:
            raise ConfigError("an optimiser group needs parameter_groups (the model parts it covers)")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"optim group schedule must be one of {SCHEDULES}, got {self.schedule!r}")


@dataclass
class OptimConfig:
    """AdamW with warm-up and a decay schedule. Defaults follow BLIP-2's Q-Former training.

    ``groups``: per-module settings (:class:`ParamGroupConfig`), e.g. the paper's LLM (cosine 2e-5,
    3% warm-up) beside its diffusion model (constant 1e-4) in one stage; every trainable
    parameter no group names takes the settings above. ``warmup_ratio`` (a fraction of the
    stage's steps) replaces ``warmup_steps`` when set."""

    lr: float = 1e-4
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 100
    schedule: str = "cosine"  # cosine | linear | constant
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    warmup_ratio: float | None = None
    groups: list[ParamGroupConfig] = field(default_factory=list)

    def __post_init__(self):
        self.betas = tuple(self.betas)
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"optim.schedule must be cosine, linear or constant, got {self.schedule!r}")
        named = [name for g in self.groups for name in g.parameter_groups]
        repeated = sorted({n for n in named if named.count(n) > 1})
        if repeated:
            raise ConfigError(f"optim.groups name {repeated} more than once")


@dataclass
class LoopConfig:
    """How long to train and how often to log and checkpoint."""

    steps: int = 1000
    batch_size: int = 32
    seed: int = 0
    log_every: int = 10
    checkpoint_every: int = 200
    # Also checkpoint whenever this many minutes passed since the last one (0: by steps alone), so an
    # interrupted CPU run loses at most that much work whatever its step time.
    checkpoint_minutes: float = 5.0
    keep_checkpoints: int = 2
    output_dir: str = "runs/train"
    resume: str | None = None  # a checkpoint folder, or "latest" for output_dir's newest
    stop_after: int | None = None  # stop early at this step (checkpoint saved), as an interruption would
    optim: OptimConfig = field(default_factory=OptimConfig)
    device: str = "auto"  # auto (a GPU when there is one) | cpu | cuda; under `accelerate launch`: its devices
    mixed_precision: str = "no"  # no | bf16 | fp16 (autocast; fp16 with loss scaling)
    # batch_size is the optimizer step's batch; it is split into this many micro-batches whose
    # gradients add up (in-batch negatives of ITC/ITM then come from one micro-batch only).
    gradient_accumulation: int = 1
    num_workers: int = 0  # data-loading processes (pixels and cached features are read there)
    activation_checkpointing: bool = False  # recompute the Q-Former's (and LM's, UNet's) activations

    def __post_init__(self):
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"loop.device must be auto, cpu or cuda, got {self.device!r} (pick a GPU with "
                              "CUDA_VISIBLE_DEVICES)")
        if self.mixed_precision not in ("no", "bf16", "fp16"):
            raise ConfigError(f"loop.mixed_precision must be no, bf16 or fp16, got {self.mixed_precision!r}")
        if self.gradient_accumulation < 1 or self.batch_size % self.gradient_accumulation:
            raise ConfigError(f"loop.gradient_accumulation ({self.gradient_accumulation}) must be a positive "
                              f"divisor of loop.batch_size ({self.batch_size})")
        if self.num_workers < 0:
            raise ConfigError("loop.num_workers must be 0 or more")

    @classmethod
    def from_dict(cls, data: dict, where: str = "loop") -> LoopConfig:
        return configuration.from_dict(cls, data, where)


def lr_lambda(optim: OptimConfig | ParamGroupConfig, total_steps: int) -> Callable[[int], float]:
    warmup = optim.warmup_steps if optim.warmup_ratio is None else int(round(optim.warmup_ratio * total_steps))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        if optim.schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        if optim.schedule == "linear":
            shape = 1.0 - progress
        else:
            shape = 0.5 * (1.0 + math.cos(math.pi * progress))
        return optim.min_lr_ratio + (1.0 - optim.min_lr_ratio) * shape
    return factor


def build_optimizer(objective: torch.nn.Module, trainable: list[tuple[str, torch.nn.Parameter]], optim: OptimConfig,
                    total_steps: int) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW over ``trainable`` with one torch parameter group per (settings, decay or not) and a
    schedule per group. Matrices decay, vectors (biases, norms) do not. ``optim.groups`` need an
    objective with ``parameter_group(name)`` (the UniFashion objectives have it)."""
    claimed: dict[int, ParamGroupConfig] = {}
    for spec in optim.groups:
        if not hasattr(objective, "parameter_group"):
            raise ConfigError("optim.groups need a model with named parameter groups (UniFashion)")
        for name in spec.parameter_groups:
            for parameter in objective.parameter_group(name):
                claimed[id(parameter)] = spec
    torch_groups, lambdas = [], []
    for spec in [*optim.groups, optim]:
        members = [p for _, p in trainable if claimed.get(id(p)) is spec or (spec is optim and id(p) not in claimed)]
        for decays in (True, False):
            params = [p for p in members if (p.ndim >= 2) == decays]
            if not params and spec is not optim:
                continue
            torch_groups.append({"params": params, "lr": spec.lr, "betas": spec.betas,
                                 "weight_decay": spec.weight_decay if decays else 0.0})
            lambdas.append(lr_lambda(spec, total_steps))
    optimizer = torch.optim.AdamW(torch_groups, lr=optim.lr, betas=optim.betas)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambdas)


class _ShardedBatches:
    """Each process's share of every global batch (all of it with one process), split into
    ``micro`` micro-batches for gradient accumulation."""

    def __init__(self, sampler, rank: int, world: int, micro: int = 1):
        self.sampler, self.rank, self.world, self.micro = sampler, rank, world, micro

    def __iter__(self):
        for batch in self.sampler:
            share = batch[self.rank::self.world]
            size = -(-len(share) // self.micro)
            for start in range(0, size * self.micro, size):
                yield share[start:start + size]

    def __len__(self):
        return len(self.sampler) * self.micro


def make_accelerator(device: str = "auto", mixed_precision: str = "no"):
    """An ``accelerate.Accelerator`` for ``device`` ("auto", "cpu", "cuda") and precision; a clear
    error when a GPU is asked for and there is none, or bf16 where the GPU lacks it."""
    from accelerate import Accelerator

    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available here (use --device cpu or auto)")
    on_cpu = device == "cpu" or (device == "auto" and not torch.cuda.is_available())
    if mixed_precision == "fp16" and on_cpu:
        raise ValueError("fp16 mixed precision needs a GPU; on the CPU use bf16 or no")
    if mixed_precision == "bf16" and not on_cpu and not torch.cuda.is_bf16_supported():
        raise ValueError("this GPU does not support bf16; use fp16")
    from accelerate.state import AcceleratorState, PartialState

    state = AcceleratorState() if AcceleratorState._shared_state else None  # noqa: SLF001
    if state is not None and state.initialized and PartialState().num_processes == 1 and (
            state.mixed_precision != mixed_precision or (on_cpu and state.device.type != "cpu")):
        # One process, another run's settings (e.g. an fp32 stage, then a bf16 one): start afresh.
        AcceleratorState._reset_state(reset_partial_state=True)  # noqa: SLF001
    return Accelerator(cpu=on_cpu, mixed_precision=mixed_precision)


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, list):
        return [_to_device(v, device) for v in batch]
    return batch


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    pointer = Path(output_dir) / "checkpoints" / "latest.json"
    if not pointer.is_file():
        return None
    return Path(output_dir) / "checkpoints" / json.loads(pointer.read_text())["name"]


@dataclass
class TrainResult:
    steps_done: int
    seconds: float
    last_losses: dict[str, float]
    checkpoint: Path | None
    log_file: Path
    out_of_time: bool = False  # stopped at the deadline before its last step (checkpoint saved)


def train(objective: torch.nn.Module, dataset, collate: Callable, config: LoopConfig,
          description: str = "training", run_config: dict | None = None,
          sample_weights=None, deadline: float | None = None) -> TrainResult:
    """Train the trainable parameters of ``objective`` on ``dataset``.

    ``deadline`` (a ``time.time()`` value): stop after the first step that ends past it, save a
    checkpoint and return with ``out_of_time`` set; the same call resumes from that checkpoint.

    ``objective(batch)`` returns a dict of scalar tensors with the total under ``"loss"``; every
    term is logged. Only parameters with ``requires_grad`` are optimised and checkpointed.
    ``sample_weights`` (one per dataset item): draw batches with these probabilities (a weighted
    mixture of datasets) instead of epochs of a shuffled order.
    """
    accelerator = make_accelerator(config.device, config.mixed_precision)
    if config.activation_checkpointing:
        from unifashion.training.activation_checkpointing import enable_activation_checkpointing

        enable_activation_checkpointing(objective)
    torch.manual_seed(config.seed)
    out_dir = Path(config.output_dir)
    ckpt_dir = out_dir / "checkpoints"
    trainable = [(n, p) for n, p in objective.named_parameters() if p.requires_grad]
    if not trainable:
        raise ValueError("nothing to train: every parameter of the objective is frozen")
    optimizer, scheduler = build_optimizer(objective, trainable, config.optim, config.steps)

    start_step = 0
    resume = config.resume
    if resume == "latest":
        resume = latest_checkpoint(out_dir)
    if resume:
        meta = load_checkpoint(resume, objective, optimizer, scheduler)
        start_step = int(meta["step"])
        accelerator.print(f"resumed from {resume} at step {start_step}")

    if sample_weights is not None:
        sampler = WeightedBatchSampler(sample_weights, config.batch_size, config.steps, config.seed, start_step)
    else:
        sampler = ResumableBatchSampler(len(dataset), config.batch_size, config.steps, config.seed, start_step)
    micro = config.gradient_accumulation
    loader = DataLoader(dataset, batch_sampler=_ShardedBatches(sampler, accelerator.process_index,
                                                               accelerator.num_processes, micro),
                        collate_fn=collate, num_workers=config.num_workers,
                        generator=torch.Generator().manual_seed(config.seed))
    model, optimizer = accelerator.prepare(objective, optimizer)
    names = [n for n, _ in trainable]

    writer = None
    log_file = out_dir / "losses.jsonl"
    if accelerator.is_main_process:
        out_dir.mkdir(parents=True, exist_ok=True)
        if run_config is not None:
            (out_dir / "run_config.json").write_text(json.dumps(run_config, indent=2, sort_keys=True, default=str))
        try:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(out_dir / "tensorboard"))
        except ImportError:  # tensorboard is a declared dependency; keep training without it anyway
            writer = None
        if start_step == 0 and log_file.exists():
            log_file.unlink()

    end_step = min(config.steps, config.stop_after) if config.stop_after else config.steps
    started = time.perf_counter()
    last: dict[str, float] = {}
    checkpoint = None
    bar = tqdm(total=end_step - start_step, desc=description, unit="step",
               disable=not accelerator.is_main_process)
    step = start_step
    model.train()
    micro_batches = iter(loader)
    last_saved = time.perf_counter()
    out_of_time = False
    while step < end_step:
        sums: dict[str, float] = {}
        for m in range(micro):
            batch = _to_device(next(micro_batches), accelerator.device)
            # Gradients add up over the micro-batches; DDP synchronises only on the last.
            sync = contextlib.nullcontext() if m == micro - 1 else accelerator.no_sync(model)
            with sync:
                terms = model(batch)
                loss = terms["loss"]
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"loss is {loss.item()} at step {step}; terms: "
                                             f"{ {k: float(v) for k, v in terms.items()} }")
                accelerator.backward(loss / micro)
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach()) / micro
        if config.optim.grad_clip:
            accelerator.clip_grad_norm_(model.parameters(), config.optim.grad_clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        last = sums
        bar.update()
        if accelerator.is_main_process:
            bar.set_postfix(loss=f"{last['loss']:.4f}")
            with log_file.open("a") as fh:
                fh.write(json.dumps({"step": step, "lr": scheduler.get_last_lr()[0], **last}) + "\n")
            if writer is not None and (step % config.log_every == 0 or step == end_step):
                for k, v in last.items():
                    writer.add_scalar(f"loss/{k}", v, step)
                writer.add_scalar("lr", scheduler.get_last_lr()[0], step)
        out_of_time = deadline is not None and time.time() >= deadline and step < end_step
        timed = bool(config.checkpoint_minutes) and time.perf_counter() - last_saved >= 60 * config.checkpoint_minutes
        if step % config.checkpoint_every == 0 or step == end_step or timed or out_of_time:
            accelerator.wait_for_everyone()
            if accelerator.is_main_process:
                checkpoint = _save_rotating(ckpt_dir, accelerator.unwrap_model(model), optimizer, scheduler, step,
                                            names, config.keep_checkpoints)
            last_saved = time.perf_counter()
        if out_of_time:
            accelerator.print(f"{description}: out of time at step {step} of {end_step}; checkpoint saved, run the "
                              "same command again to continue")
            break
    bar.close()
    if writer is not None:
        writer.close()
    return TrainResult(steps_done=step - start_step, seconds=time.perf_counter() - started, last_losses=last,
                       checkpoint=checkpoint, log_file=log_file, out_of_time=out_of_time)


def _save_rotating(ckpt_dir: Path, model, optimizer, scheduler, step: int, names: list[str], keep: int) -> Path:
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    name = f"step-{step:07d}"
    path = save_checkpoint(ckpt_dir / name, model, optimizer, scheduler, step, parameter_names=names)
    pointer = ckpt_dir / "latest.json"
    atomic_write(pointer, json.dumps({"name": name, "step": step}))
    old = sorted(p for p in ckpt_dir.glob("step-*") if p.is_dir() and p.name != name)
    for stale in old[:max(0, len(old) - (keep - 1))]:
        import shutil

        shutil.rmtree(stale, ignore_errors=True)
    return path
