"""``unifashion train-baseline``: the CLIP-style dual-encoder baseline (CLIP4CIR's two stages) as a run
with its own config, written beside the model as ``run_config.json``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from unifashion.experiments import write_run_config
from unifashion.training.baselines import train_dual_encoder
from unifashion.training.recipe import DataSpec


@dataclass
class BaselineRunConfig:
    output_dir: str = "runs/dual-encoder"
    data: DataSpec = field(default_factory=lambda: DataSpec(catalogue="outputs/demo/catalogue",
                                                            fashion_mnist_pairs=1000))
    encoder_steps: int = 400  # stage 1: ITC on image-caption pairs
    combiner_steps: int = 300  # stage 2: the combiner on CIR triplets
    batch_size: int = 32
    seed: int = 0


def run_baseline(config: BaselineRunConfig) -> Path:
    """Train (or reuse) the baseline of ``config``; returns the final model's folder."""
    write_run_config(config, config.output_dir)
    return train_dual_encoder(config.output_dir, config.data, encoder_steps=config.encoder_steps,
                              combiner_steps=config.combiner_steps, batch_size=config.batch_size, seed=config.seed)
