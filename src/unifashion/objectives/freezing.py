"""What learns in each training phase: one table from (phase, stage) to the parameter groups.

The groups are named parts of UniFashion (:meth:`UniFashion.parameter_group` turns a name into
parameters):

=====================  =====================================================================
``qformer``            the Q-Former (with its learnable queries)
``heads``              the ITC projections, the ITM head and the temperature
``llm_adapter``        TSA_llm
``llm``                the caption LM (its LoRA weights when it has them)
``diffusion_adapter``  TSA_diff
``unet``               the UNet (with the learned null condition)
``vae``                the VAE
=====================  =====================================================================

Everything not in a stage's groups is frozen, and the vision encoder always is.
:meth:`UniFashion.set_phase` is the one method that applies the table (try-on included), so a
trainer never sets ``requires_grad`` itself. A component's own freeze flags
(``caption_lm.freeze_lm``, ``diffusion.freeze_unet`` / ``freeze_vae``) still hold, except where a
stage lists a group in ``despite_freeze_flags``: the autoencoder stage exists to train the VAE
that ``freeze_vae`` keeps frozen everywhere else.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from torch import nn

from unifashion.configuration import ConfigError

PARAMETER_GROUPS = ("qformer", "heads", "llm_adapter", "llm", "diffusion_adapter", "unet", "vae")

PHASE1_STAGES = ("qformer", "autoencoder", "generators")
TRYON_STAGE = "tryon"  # design + try-on: the UNet and TSA_diff learn (training.tryon's default)
TRYON_QFORMER_STAGE = "tryon_qformer"  # design + try-on, the paper's way: the Q-Former and TSA_diff


@dataclass(frozen=True)
class Learns:
    """The parameter groups that learn in one (phase, stage); the rest of the model is frozen."""

    groups: tuple[str, ...]
    despite_freeze_flags: tuple[str, ...] = ()  # groups that learn even where their config freezes them
    what: str = ""

    def __post_init__(self):
        unknown = [g for g in (*self.groups, *self.despite_freeze_flags) if g not in PARAMETER_GROUPS]
        if unknown:
            raise ValueError(f"unknown parameter groups {unknown}; groups: {PARAMETER_GROUPS}")


#: (phase, stage) -> what learns. Phase 1 is cross-modal pre-training on pairs, phase 2 CIR
#: tuning on triplets; phase None trains outside the paper's phases (everything, or try-on).
FREEZE_TABLE: dict[tuple[int | None, str | None], Learns] = {
    (1, "qformer"): Learns(("qformer", "heads"), what="the Q-Former and the ITC/ITM heads (ITC + ITM)"),
    (1, "autoencoder"): Learns(("vae",), despite_freeze_flags=("vae",),
                               what="the VAE alone (reconstruction + KL; not a paper stage)"),
    (1, "generators"): Learns(("llm_adapter", "llm", "diffusion_adapter", "unet"),
                              what="TSA_llm + the LLM and TSA_diff + the UNet (ITG + q2I)"),
    (2, None): Learns(("qformer", "heads", "llm_adapter", "diffusion_adapter"),
                      what="the Q-Former, the heads and both adapters (L_cir + ITG + q2I)"),
    (None, None): Learns(PARAMETER_GROUPS, what="everything but the vision encoder"),
    (None, TRYON_STAGE): Learns(("unet", "diffusion_adapter"), what="design + try-on: the UNet and TSA_diff"),
    (None, TRYON_QFORMER_STAGE): Learns(("qformer", "diffusion_adapter"),
                                        what="design + try-on: the Q-Former and TSA_diff"),
}


def check_phase(phase: int | None, stage: str | None) -> tuple[int | None, str | None]:
    """The table's key for ``(phase, stage)``; a :class:`ConfigError` for one it does not have.

    Phase 1 without a stage is its first stage (``qformer``); phase 2 has no stages (``"all"``
    is accepted for it)."""
    if phase == 1 and stage is None:
        stage = PHASE1_STAGES[0]
    elif phase == 2 and stage == "all":
        stage = None
    if (phase, stage) not in FREEZE_TABLE:
        if phase not in {p for p, _ in FREEZE_TABLE}:
            raise ConfigError(f"phase must be 1, 2 or None, got {phase!r}")
        stages = [s for p, s in FREEZE_TABLE if p == phase]
        raise ConfigError(f"phase {phase} stages are {stages}, got {stage!r}")
    return phase, stage


def learns(phase: int | None, stage: str | None) -> Learns:
    """The table's entry for ``(phase, stage)`` (see :func:`check_phase`)."""
    return FREEZE_TABLE[check_phase(phase, stage)]


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
