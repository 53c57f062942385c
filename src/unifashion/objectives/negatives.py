"""Static negatives: gallery embeddings from a frozen (or slowly refreshed) image side, used as
extra negatives in the composed-retrieval contrastive loss.

Once the image side no longer learns, every gallery image's embedding is a constant. It is
computed once and every one of them joins each query's softmax as a negative: thousands of
negatives per step for the cost of one batch. While the image side still learns (stage 1 of the
two-stage recipe; UniFashion's phase 2), the bank is recomputed every ``refresh_every`` steps, so
its entries are at most that many steps stale (the memory-bank reading of the idea).

The loss (:func:`contrastive_loss_with_bank`), for query ``i`` with in-batch target logits
``logits[i, :]`` (positive on the diagonal) and bank logits ``bank_logits[i, :]``::

    L_q2t(i) = -log softmax([logits[i, :], bank_logits[i, k] for k not positive for i])_i
    L_t2q(j) = -log softmax(logits[:, j])_j                     (in-batch only: the bank has no queries)
    L        = 1/2 (mean_i L_q2t(i) + mean_j L_t2q(j))

Bank entries that *are* query ``i``'s target (the same item id) are masked out: the positive is
already in the batch columns, and a stale copy of it must not count as a negative.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from unifashion.objectives.losses import max_query_similarity


def contrastive_loss_with_bank(logits: torch.Tensor, bank_logits: torch.Tensor | None = None,
                               bank_is_positive: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric InfoNCE over ``logits`` (B queries x B targets, positives on the diagonal) with
    ``bank_logits`` (B x M) as extra negatives of the query-to-target direction; entries where
    ``bank_is_positive`` (B x M, bool) is True are left out. Without a bank: CLIP's loss."""
    targets = torch.arange(logits.shape[0], device=logits.device)
    t2q = F.cross_entropy(logits.t(), targets)
    if bank_logits is None:
        return 0.5 * (F.cross_entropy(logits, targets) + t2q)
    if bank_is_positive is not None:
        bank_logits = bank_logits.masked_fill(bank_is_positive, float("-inf"))
    q2t = F.cross_entropy(torch.cat([logits, bank_logits], dim=1), targets)
    return 0.5 * (q2t + t2q)


def bank_positive_mask(target_ids: torch.Tensor, bank_ids: torch.Tensor) -> torch.Tensor:
    """(B, M) True where bank entry k is the same item as query i's target."""
    return target_ids.view(-1, 1).to(bank_ids.device) == bank_ids.view(1, -1)


def unifashion_bank_itc(logits_per_target: torch.Tensor, composed: torch.Tensor, bank_embeds: torch.Tensor,
                        temperature: torch.Tensor | float, target_ids: torch.Tensor,
                        bank_ids: torch.Tensor) -> torch.Tensor:
    """UniFashion's ``ITC(e_cls, Z_T)`` with static negatives: ``logits_per_target`` (B targets x B
    queries, as :func:`unifashion.objectives.losses.itc_loss` returns it), ``composed`` e_cls (B, D),
    ``bank_embeds`` the bank's Z (M, Q, D); scores are ``max_q <e, Z_q> / tau`` as in-batch."""
    bank_logits = max_query_similarity(bank_embeds.to(composed.dtype), composed).t() / temperature  # (B, M)
    return contrastive_loss_with_bank(logits_per_target.t(), bank_logits, bank_positive_mask(target_ids, bank_ids))


class StaticNegativeBank:
    """Embeddings of a fixed gallery, recomputed by ``embed()`` every ``refresh_every`` steps.

    ``embed`` returns the embeddings of every gallery item (row k = item ``ids[k]``), without
    gradients. ``refresh_every=None`` computes them once (a frozen image side). ``step`` counts
    the training steps seen; a resumed run sets it to the checkpoint's step, so the bank is
    refreshed on the same steps as in a run that never stopped (exactly when checkpoints fall on
    refresh steps).
    """

    def __init__(self, embed: Callable[[], torch.Tensor], ids: torch.Tensor, refresh_every: int | None = None):
        if refresh_every is not None and refresh_every < 1:
            raise ValueError(f"refresh_every must be a positive number of steps or None, got {refresh_every}")
        self.embed = embed
        self.ids = ids
        self.refresh_every = refresh_every
        self.step = 0
        self.embeddings: torch.Tensor | None = None
        self.refreshes = 0

    def __len__(self) -> int:
        return len(self.ids)

    def current(self) -> torch.Tensor:
        """The bank for this step (recomputed first when due); call once per training step."""
        due = self.embeddings is None or (self.refresh_every is not None and self.step % self.refresh_every == 0)
        if due:
            with torch.no_grad():
                self.embeddings = self.embed().detach()
            self.refreshes += 1
        self.step += 1
        return self.embeddings
