"""Every training phase and stage in one place: its name, the loss terms it trains on, and which
parameter groups learn (the rest is frozen).

The model's phase losses take their default terms from here, :meth:`UniFashion.set_phase`
freezes by it (:func:`unifashion.objectives.freezing.apply_phase`), the recipe names and checks
its stages by it, and the CLI checks ``--learn`` / ``--terms`` against it.

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

The vision encoder is always frozen. A component's own freeze flags (``caption_lm.freeze_lm``,
``diffusion.freeze_unet`` / ``freeze_vae``) still hold, except for the groups a phase lists in
``despite_freeze_flags``: the autoencoder stage exists to train the VAE that ``freeze_vae`` keeps
frozen everywhere else.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from unifashion.configuration import ConfigError

LOSS_TERMS = ("itc", "itm", "itg", "q2i", "vae", "cir")  # every loss term a stage can train on
PARAMETER_GROUPS = ("qformer", "heads", "llm_adapter", "llm", "diffusion_adapter", "unet", "vae")

TRYON_STAGE = "tryon"  # design + try-on: the UNet and TSA_diff learn (training.tryon's default)
TRYON_QFORMER_STAGE = "tryon_qformer"  # design + try-on, the paper's way: the Q-Former and TSA_diff


def check_groups(groups: Iterable[str]) -> tuple[str, ...]:
    """``groups`` as a tuple; a ``ValueError`` naming the first unknown parameter group."""
    groups = tuple(groups)
    unknown = [g for g in groups if g not in PARAMETER_GROUPS]
    if unknown:
        raise ValueError(f"unknown parameter groups {unknown}; groups: {PARAMETER_GROUPS}")
    return groups


def check_terms(terms: Iterable[str]) -> tuple[str, ...]:
    """``terms`` as a tuple; a ``ValueError`` naming the first unknown loss term."""
    terms = tuple(terms)
    unknown = [t for t in terms if t not in LOSS_TERMS]
    if unknown:
        raise ValueError(f"unknown loss term {unknown[0]!r}; terms: {', '.join(LOSS_TERMS)}")
    return terms


@dataclass(frozen=True)
class Phase:
    """One training phase (or one stage of phase 1): what it trains on and what learns."""

    name: str  # the default recipe's name for the stage (its output folder)
    phase: int | None  # 1: pre-training on pairs, 2: CIR tuning on triplets, None: outside the paper's phases
    stage: str | None
    terms: tuple[str, ...]  # the loss terms the phase's loss sums
    trains: tuple[str, ...]  # the parameter groups that learn; every other group is frozen
    despite_freeze_flags: tuple[str, ...] = ()  # groups that learn even where their config freezes them
    paper: bool = True  # a stage of the paper's method (its terms are the phase's defaults outside it)
    what: str = ""

    def __post_init__(self):
        check_groups((*self.trains, *self.despite_freeze_flags))
        check_terms(self.terms)

    @property
    def frozen(self) -> tuple[str, ...]:
        """The parameter groups that do not learn (the vision encoder, in no group, never does)."""
        return tuple(g for g in PARAMETER_GROUPS if g not in self.trains)

    def training(self, groups: Iterable[str]) -> Phase:
        """This phase with ``groups`` learning instead (a recipe's own reading of the paper's
        freezing); the freeze-flag exceptions it keeps are those of ``groups``."""
        groups = check_groups(groups)
        return replace(self, trains=groups,
                       despite_freeze_flags=tuple(g for g in self.despite_freeze_flags if g in groups))


#: Phase 1's stages in the default recipe's order (the first is phase 1's stage when none is named),
#: then phase 2, then the phases outside the paper's.
PHASES: tuple[Phase, ...] = (
    Phase("phase1-qformer", 1, "qformer", ("itc", "itm"), ("qformer", "heads"),
          what="the Q-Former and the ITC/ITM heads (ITC + ITM)"),
    Phase("phase1-autoencoder", 1, "autoencoder", ("vae",), ("vae",), despite_freeze_flags=("vae",),
          paper=False, what="the VAE alone (reconstruction + KL; not a paper stage)"),
    Phase("phase1-generators", 1, "generators", ("itg", "q2i"), ("llm_adapter", "llm", "diffusion_adapter", "unet"),
          what="TSA_llm + the LLM and TSA_diff + the UNet (ITG + q2I)"),
    Phase("phase2", 2, None, ("cir", "itg", "q2i"), ("qformer", "heads", "llm_adapter", "diffusion_adapter"),
          what="the Q-Former, the heads and both adapters (L_cir + ITG + q2I)"),
    Phase("all", None, None, LOSS_TERMS, PARAMETER_GROUPS, paper=False, what="everything but the vision encoder"),
    # Try-on's loss is L_q2I of each task (unifashion.training.tryon), through the UNet's mask channels.
    Phase(TRYON_STAGE, None, TRYON_STAGE, ("q2i",), ("unet", "diffusion_adapter"), paper=False,
          what="design + try-on: the UNet and TSA_diff"),
    Phase(TRYON_QFORMER_STAGE, None, TRYON_QFORMER_STAGE, ("q2i",), ("qformer", "diffusion_adapter"), paper=False,
          what="design + try-on: the Q-Former and TSA_diff"),
)


def phase_of(phase: int | None, stage: str | None = None) -> Phase:
    """The :class:`Phase` of ``(phase, stage)``; a :class:`ConfigError` for one that does not exist.

    Phase 1 without a stage is its first stage (``qformer``); phase 2 has no stages (``"all"``
    is accepted for it)."""
    if phase == 1 and stage is None:
        stage = next(p.stage for p in PHASES if p.phase == 1)
    elif phase == 2 and stage == "all":
        stage = None
    for candidate in PHASES:
        if (candidate.phase, candidate.stage) == (phase, stage):
            return candidate
    if phase not in {p.phase for p in PHASES}:
        raise ConfigError(f"phase must be 1, 2 or None, got {phase!r}")
    raise ConfigError(f"phase {phase} stages are {[p.stage for p in PHASES if p.phase == phase]}, got {stage!r}")


def paper_terms(phase: int) -> tuple[str, ...]:
    """Every loss term of the paper's stages of ``phase`` (phase 1: ITC, ITM, ITG, q2I), in order:
    what a phase loss trains on when the model is not in that phase."""
    terms: list[str] = []
    for spec in PHASES:
        if spec.phase == phase and spec.paper:
            terms += [t for t in spec.terms if t not in terms]
    return tuple(terms)
