"""Caption fusion's score: the one place the sum is formed.

A composed query e scores an item by max-sim plus its caption term, ``max_q <e, Z_q> + w <e, Z_C>``
(the paper's caption fusion: w = 1), with Z_C the embedding of the caption the model generated
for the item. The model's :meth:`~unifashion.models.UniFashion.score`, the evaluation's scorers,
the catalogue index's kernels and both of its backends' fused vectors call :func:`fused_score`,
so a change of the rule changes every one of them.
"""

from __future__ import annotations

from typing import TypeVar

Scores = TypeVar("Scores")  # a numpy array or a torch tensor


def fused_score(maxsim: Scores, fusion: Scores, fusion_weight: float = 1.0) -> Scores:
    """``maxsim + fusion_weight * fusion``, for numpy arrays and torch tensors alike.

    The weight is applied as a Python float, which takes the arrays' precision (float32 stays
    float32). The sum is linear, so applied to vectors it gives the fused vectors
    ``Z_q + w Z_C``, whose inner product with a query is that vector's fused score (what the
    index's fused ANN stage searches).
    """
    return maxsim + float(fusion_weight) * fusion
