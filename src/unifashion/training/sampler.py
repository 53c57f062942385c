"""A batch sampler whose order depends only on (seed, epoch), so training can resume mid-epoch."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np


class ResumableBatchSampler:
    """Yields index batches for ``num_steps`` steps, reshuffling every epoch with ``seed + epoch``.

    ``start_step`` skips the batches already trained on: resuming at step s yields exactly the
    batches a run that never stopped would see from step s on. Incomplete batches are dropped.
    """

    def __init__(self, dataset_size: int, batch_size: int, num_steps: int, seed: int = 0, start_step: int = 0):
        if batch_size > dataset_size:
            raise ValueError(f"batch size {batch_size} is larger than the dataset ({dataset_size} samples)")
        self.dataset_size = dataset_size
        self.batch_size = batch_size
        self.num_steps = num_steps
        self.seed = seed
        self.start_step = start_step
        self.steps_per_epoch = dataset_size // batch_size

    def batch_at(self, step: int) -> list[int]:
        epoch, offset = divmod(step, self.steps_per_epoch)
        order = np.random.default_rng([self.seed, epoch]).permutation(self.dataset_size)
        return order[offset * self.batch_size:(offset + 1) * self.batch_size].tolist()

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start_step, self.num_steps):
            yield self.batch_at(step)

    def __len__(self) -> int:
        return max(0, self.num_steps - self.start_step)
