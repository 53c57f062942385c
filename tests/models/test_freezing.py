"""The freeze table (unifashion.objectives.freezing) as UniFashion.set_phase applies it: for every
(phase, stage), exactly the table's parameter groups learn, and fully frozen components run in eval
mode, both right after set_phase and after a later model.train()."""

from __future__ import annotations

import pytest

from conftest import SMALL_CONFIG, build_small_model
from unifashion.configuration import ConfigError
from unifashion.objectives.freezing import FREEZE_TABLE, PARAMETER_GROUPS, check_phase, learns

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


@pytest.fixture(scope="module")
def model():
    """freeze_vae off, so that every group of the table has parameters in every stage."""
    return build_small_model(seed=7, diffusion={**SMALL_CONFIG["diffusion"], "freeze_vae": False})


def test_the_table_has_every_stage():
    assert set(FREEZE_TABLE) == {(1, "qformer"), (1, "autoencoder"), (1, "generators"), (2, None), (None, None),
                                 (None, "tryon"), (None, "tryon_qformer")}
    assert learns(None, None).groups == PARAMETER_GROUPS  # everything but the vision encoder
    assert set(GROUP_PREFIXES) == set(PARAMETER_GROUPS)


@pytest.mark.parametrize("phase, stage", list(FREEZE_TABLE))
def test_set_phase_trains_exactly_the_table_groups(model, phase, stage):
    model.train()
    model.set_phase(phase, stage)
    assert (model.phase, model.stage) == (phase, stage)
    groups = FREEZE_TABLE[(phase, stage)].groups
    assert model.trainable_groups(phase, stage) == list(groups)
    prefixes = tuple(p for g in groups for p in GROUP_PREFIXES[g])
    names = [name for name, _ in model.named_parameters()]
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {name for name in names if name.startswith(prefixes)}
    assert all(any(name.startswith(GROUP_PREFIXES[g]) for name in trainable) for g in groups)
    assert not any(name.startswith("vision.") for name in trainable)
    # set_phase itself puts frozen components in eval mode (the model was training already) ...
    assert_frozen_components_in_eval(model)
    # ... and a later train() keeps them there.
    model.eval()
    model.train()
    assert_frozen_components_in_eval(model)
    model.eval()
    assert not any(module.training for module in components(model).values())


def test_freeze_flags_hold_except_where_the_table_overrides_them():
    model = build_small_model(seed=8)  # freeze_vae on, as in the presets
    assert model.config.diffusion.freeze_vae
    for phase, stage in FREEZE_TABLE:
        model.set_phase(phase, stage)
        vae_learns = any(p.requires_grad for p in model.diffusion.vae.parameters())
        assert vae_learns == ((phase, stage) == (1, "autoencoder")), (phase, stage)
    frozen_unet = build_small_model(seed=8, diffusion={**SMALL_CONFIG["diffusion"], "freeze_unet": True})
    frozen_unet.set_phase(None, "tryon")
    assert not any(p.requires_grad for p in frozen_unet.diffusion.unet.parameters())


def test_phase_and_stage_names():
    assert check_phase(1, None) == (1, "qformer")
    assert check_phase(2, "all") == (2, None)
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
