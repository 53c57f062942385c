"""UniFashion's phase 2 with static negatives through the recipe (``static_negatives_every``)."""

from __future__ import annotations

import json

import pytest

from conftest import build_small_model
from unifashion.data.synthetic.catalogue import CatalogueConfig, build_catalogue_files
from unifashion.training.recipe import DataSpec, StageSpec, TrainRecipe, run_recipe
from unifashion.training.trainer import LoopConfig, OptimConfig


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("negatives-recipe")
    build_catalogue_files(root / "catalogue", CatalogueConfig(n_items=30, seed=6), progress=False)
    build_small_model().save_pretrained(root / "model")
    return root


def _run(root, name: str, every: int) -> list[dict]:
    recipe = TrainRecipe(model=str(root / "model"), output_dir=str(root / name), caption_fusion=False,
                         data=DataSpec(catalogue=str(root / "catalogue")), static_negatives_every=every,
                         stages=[StageSpec("p2", 2, None, terms=["cir"],
                                           loop=LoopConfig(steps=3, batch_size=4, checkpoint_every=3,
                                                           optim=OptimConfig(lr=1e-3, warmup_steps=1)))])
    run_recipe(recipe, progress=False)
    return [json.loads(line) for line in (root / name / "p2" / "losses.jsonl").read_text().splitlines()]


def test_phase2_with_static_negatives_runs_and_raises_the_target_itc(setup, single_thread):
    assert TrainRecipe().static_negatives_every == 0  # off by default
    plain = _run(setup, "plain", 0)
    banked = _run(setup, "banked", 2)
    assert len(plain) == len(banked) == 3
    # Same weights, same batch at step 1: the only difference is the bank's extra negatives.
    assert banked[0]["cir_itc_target"] > plain[0]["cir_itc_target"]
    assert banked[0]["cir_itm"] == pytest.approx(plain[0]["cir_itm"], rel=1e-5)
