"""``unifashion train --from``: which stages and groups a warm start trains, and its errors."""

from __future__ import annotations

import pytest

from unifashion.cli import main
from unifashion.cli.train import warm_start
from unifashion.configuration import ConfigError
from unifashion.training.recipe import default_recipe


def test_warm_start_runs_the_chosen_stages_from_the_shipped_model():
    recipe = default_recipe("runs/x")
    warm_start(recipe, "tiny-default", "phase1-generators", "unet,diffusion_adapter", 40)
    assert recipe.model == "tiny-default" and recipe.model_overrides == {}
    assert [s.name for s in recipe.stages] == ["phase1-generators"]
    assert recipe.stages[0].learns == ["unet", "diffusion_adapter"] and recipe.stages[0].loop.steps == 40


def test_warm_start_names_an_unknown_stage_or_group():
    with pytest.raises(ConfigError, match="unknown stage 'phase3'; the recipe's stages: phase1-qformer"):
        warm_start(default_recipe(), "tiny-default", "phase3", None, None)
    with pytest.raises(ConfigError, match=r"--learn: unknown parameter groups \['wings'\]"):
        warm_start(default_recipe(), "tiny-default", None, "unet,wings", None)


def test_stage_choices_without_from_are_refused(capsys):
    assert main(["train", "--stages", "phase2", "--print-recipe"]) == 2
    assert "give --from TAG too" in capsys.readouterr().err


def test_print_recipe_shows_the_warm_start(capsys):
    import json

    assert main(["train", "--from", "tiny-default", "--stages", "phase2", "--steps", "7", "--print-recipe"]) == 0
    recipe = json.loads(capsys.readouterr().out)
    assert recipe["model"] == "tiny-default" and [s["loop"]["steps"] for s in recipe["stages"]] == [7]


def test_warm_start_terms_replace_the_stages_own_and_are_checked():
    recipe = default_recipe()
    warm_start(recipe, "tiny-default", "phase1-generators", "unet", None, terms="q2i")
    assert recipe.stages[0].terms == ["q2i"]
    with pytest.raises(ConfigError, match="unknown loss term 'l2'; terms: itc, itm, itg, q2i, vae, cir"):
        warm_start(default_recipe(), "tiny-default", None, None, None, terms="q2i,l2")
