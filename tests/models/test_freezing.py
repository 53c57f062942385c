"""Each training phase (unifashion.objectives.phases.PHASES) as UniFashion.set_phase applies it:
exactly the parameters of the phase's groups can learn, the phase's loss sums exactly its terms and
reaches every group that learns, an optimiser step moves nothing else, and fully frozen components
run in eval mode, both right after set_phase and after a later model.train()."""

from __future__ import annotations

import pytest
import torch

from conftest import CAPTIONS, MODIFICATIONS, SMALL_CONFIG, build_small_model, random_images
from unifashion.configuration import ConfigError
from unifashion.objectives.phases import LOSS_TERMS, PARAMETER_GROUPS, PHASES, Phase, paper_terms, phase_of

pytestmark = pytest.mark.usefixtures("single_thread")

# Each group's parameters by name, written out independently of UniFashion.parameter_group.
GROUP_PREFIXES = {
    "qformer": ("qformer.",),
    "heads": ("vision_projection.", "text_projection.", "itm_head.", "temperature"),
    "llm_adapter": ("caption_lm.adapter.",),
    "llm": ("caption_lm.lm.",),
    "diffusion_adapter": ("diffusion.adapter.",),
    "unet": ("diffusion.unet.", "diffusion.null_condition"),
    "vae": ("diffusion.vae.",),
}
# The output field of each loss term.
TERM_FIELDS = {"itc": "loss_itc", "itm": "loss_itm", "itg": "loss_itg", "q2i": "loss_q2i", "vae": "loss_vae",
               "cir": "loss_cir"}


def components(model) -> dict:
    return {"vision": model.vision, "qformer": model.qformer, "caption_lm": model.caption_lm,
            "caption_lm.lm": model.caption_lm.lm, "diffusion": model.diffusion,
            "diffusion.vae": model.diffusion.vae, "diffusion.unet": model.diffusion.unet}


def assert_frozen_components_in_eval(model) -> None:
    for name, module in components(model).items():
        if any(p.requires_grad for p in module.parameters()):
            assert module.training, f"{name} learns but is in eval mode"
        else:
            assert not module.training, f"{name} is fully frozen but in training mode"


def in_groups(name: str, groups) -> bool:
    return name.startswith(tuple(prefix for g in groups for prefix in GROUP_PREFIXES[g]))


def phase_loss(model, spec: Phase):
    """The phase's loss on a small batch: phase 2 on triplets, the others on pairs (a phase outside
    the paper's names its terms; phase 1's loss has no L_cir)."""
    generator = torch.Generator().manual_seed(0)
    if spec.phase == 2:
        batch = {"reference_images": random_images(3, seed=1), "texts": MODIFICATIONS,
                 "target_images": random_images(3, seed=2), "target_captions": CAPTIONS,
                 "target_generated_captions": CAPTIONS[::-1]}
        return model.phase2_loss(batch, generator=generator)
    batch = {"images": random_images(3, seed=1), "captions": CAPTIONS}
    terms = None if spec.phase == 1 else tuple(t for t in spec.terms if t != "cir")
    return model.phase1_loss(batch, generator=generator, terms=terms)


@pytest.fixture(scope="module")
def model():
    """freeze_vae off, so that every group has parameters in every phase."""
    return build_small_model(seed=7, diffusion={**SMALL_CONFIG["diffusion"], "freeze_vae": False})


def test_phases_are_well_formed():
    keys = [(spec.phase, spec.stage) for spec in PHASES]
    assert len(set(keys)) == len(keys) and len({spec.name for spec in PHASES}) == len(PHASES)
    assert set(GROUP_PREFIXES) == set(PARAMETER_GROUPS) and set(TERM_FIELDS) == set(LOSS_TERMS)
    for spec in PHASES:
        assert set(spec.trains) | set(spec.frozen) == set(PARAMETER_GROUPS)
        assert not set(spec.trains) & set(spec.frozen)
    # Outside phase 1, its loss sums every term of its paper stages (not the autoencoder's).
    assert paper_terms(1) == ("itc", "itm", "itg", "q2i") and paper_terms(2) == ("cir", "itg", "q2i")


@pytest.mark.parametrize("spec", PHASES, ids=[spec.name for spec in PHASES])
def test_set_phase_trains_exactly_the_phase_groups_and_its_loss_reaches_them(model, spec):
    model.train()
    model.set_phase(spec.phase, spec.stage)
    assert (model.phase, model.stage) == (spec.phase, spec.stage)
    assert model.trainable_groups(spec.phase, spec.stage) == list(spec.trains)
    names = [name for name, _ in model.named_parameters()]
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {name for name in names if in_groups(name, spec.trains)}
    assert not any(name.startswith("vision.") for name in trainable)

    # The phase's loss sums exactly the phase's terms ...
    out = phase_loss(model, spec)
    if spec.phase is not None:
        assert {t for t, field in TERM_FIELDS.items() if getattr(out, field, None) is not None} == set(spec.terms)
    # ... and its backward pass reaches every group that learns, and nothing else.
    model.zero_grad(set_to_none=True)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    buffers_before = {name: b.clone() for name, b in model.named_buffers()}
    out.loss.backward()
    reached = {name for name, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert reached <= trainable
    for group in spec.trains:
        assert any(in_groups(name, [group]) for name in reached), f"{spec.name}: no gradient reaches {group}"
    torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-2).step()
    moved = {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
    assert moved <= reached and all(any(in_groups(name, [group]) for name in moved) for group in spec.trains)
    for name, buffer in model.named_buffers():
        assert torch.equal(buffer, buffers_before[name]), name
    model.zero_grad(set_to_none=True)

    # set_phase itself put frozen components in eval mode (the model was training already) ...
    assert_frozen_components_in_eval(model)
    # ... and a later train() keeps them there.
    model.eval()
    model.train()
    assert_frozen_components_in_eval(model)
    model.eval()
    assert not any(module.training for module in components(model).values())


def test_freeze_flags_hold_except_where_the_phase_overrides_them():
    model = build_small_model(seed=8)  # freeze_vae on, as in the presets
    assert model.config.diffusion.freeze_vae
    for spec in PHASES:
        model.set_phase(spec.phase, spec.stage)
        vae_learns = any(p.requires_grad for p in model.diffusion.vae.parameters())
        assert vae_learns == ("vae" in spec.despite_freeze_flags), spec.name
    assert any("vae" in spec.despite_freeze_flags for spec in PHASES)
    frozen_unet = build_small_model(seed=8, diffusion={**SMALL_CONFIG["diffusion"], "freeze_unet": True})
    frozen_unet.set_phase(None, "tryon")
    assert not any(p.requires_grad for p in frozen_unet.diffusion.unet.parameters())


def test_learns_replaces_the_phase_groups():
    model = build_small_model(seed=8)  # freeze_vae on
    model.set_phase(2, None, learns=["diffusion_adapter"])
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {
        n for n, _ in model.named_parameters() if in_groups(n, ["diffusion_adapter"])}
    # The autoencoder stage's exception to freeze_vae holds for the groups that still learn.
    model.set_phase(1, "autoencoder", learns=["vae", "unet"])
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n, _ in model.named_parameters() if in_groups(n, ["vae", "unet"])}
    with pytest.raises(ValueError, match="unknown parameter groups"):
        model.set_phase(2, None, learns=["decoder"])


def test_phase_and_stage_names():
    assert (phase_of(1).phase, phase_of(1).stage) == (1, "qformer")
    assert phase_of(2, "all") is phase_of(2)
    model = build_small_model(seed=9)
    assert model.trainable_groups(1, None) == ["qformer", "heads"]
    with pytest.raises(ConfigError, match="phase 1 stages"):
        model.set_phase(1, "everything")
    with pytest.raises(ConfigError, match="phase 2 stages"):
        model.set_phase(2, "qformer")
    with pytest.raises(ConfigError, match="phase None stages"):
        model.set_phase(None, "tryonn")
    with pytest.raises(ConfigError, match="phase must be"):
        model.set_phase(3)
    with pytest.raises(ValueError, match="unknown parameter group"):
        model.parameter_group("decoder")
    with pytest.raises(ValueError, match="unknown loss term 'l2'"):
        model.phase1_loss({"images": random_images(3), "captions": CAPTIONS}, terms=("l2",))
