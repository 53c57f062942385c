"""Freezing a model by a :class:`~unifashion.objectives.phases.Phase`: only its groups learn, and
components none of whose parameters learn run in eval mode.

:meth:`UniFashion.set_phase` is the one method that calls :func:`apply_phase` (try-on included), so
a trainer never sets ``requires_grad`` itself; which groups learn in which phase is
:data:`unifashion.objectives.phases.PHASES`.
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn

from unifashion.objectives.phases import Phase


def apply_phase(model: nn.Module, phase: Phase) -> None:
    """Freeze every parameter of ``model`` but those of ``phase.trains``: ``model.parameter_group``
    gives a group's parameters, respecting the components' freeze flags except for the groups of
    ``phase.despite_freeze_flags``."""
    train_only(model, [parameter for group in phase.trains
                       for parameter in model.parameter_group(group, group not in phase.despite_freeze_flags)])


def train_only(module: nn.Module, parameters: Iterable[nn.Parameter]) -> None:
    """Freeze every parameter of ``module`` but ``parameters``."""
    module.requires_grad_(False)
    for parameter in parameters:
        parameter.requires_grad_(True)


def eval_frozen(modules: Iterable[nn.Module | None]) -> None:
    """Put each module none of whose parameters learn in eval mode (no dropout noise, no batch
    statistics in what trains downstream of it); None entries (absent components) are skipped."""
    for module in modules:
        if module is not None and not any(p.requires_grad for p in module.parameters()):
            module.eval()
