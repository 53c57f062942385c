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


class WeightedBatchSampler:
    """Yields index batches drawn with per-item ``weights`` (a weighted mixture of datasets): each
    batch is ``batch_size`` distinct indices drawn without replacement with probabilities
    proportional to ``weights``, from a generator seeded by ``(seed, step)``, so the batch at a
    step never depends on the batches before it and a resumed run continues exactly."""

    def __init__(self, weights, batch_size: int, num_steps: int, seed: int = 0, start_step: int = 0):
        weights = np.asarray(weights, dtype=np.float64)
        if weights.ndim != 1 or not len(weights) or (weights < 0).any() or not weights.sum() > 0:
            raise ValueError("sampling weights must be a non-empty vector of non-negative numbers, not all zero")
        if batch_size > np.count_nonzero(weights):
            raise ValueError(f"batch size {batch_size} is larger than the items that can be drawn "
                             f"({np.count_nonzero(weights)})")
        self.p = weights / weights.sum()
        self.batch_size = batch_size
        self.num_steps = num_steps
        self.seed = seed
        self.start_step = start_step

    def batch_at(self, step: int) -> list[int]:
        rng = np.random.default_rng([self.seed, step, 1])
        return rng.choice(len(self.p), size=self.batch_size, replace=False, p=self.p).tolist()

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start_step, self.num_steps):
            yield self.batch_at(step)

    def __len__(self) -> int:
        return max(0, self.num_steps - self.start_step)
