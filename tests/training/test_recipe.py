"""The two-phase recipe end to end on a small random model and a tiny catalogue."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import build_small_model
from unifashion.data.synthetic.catalogue import CatalogueConfig, build_catalogue_files
from unifashion.training.recipe import DataSpec, PhaseObjective, StageSpec, TrainRecipe, run_recipe
from unifashion.training.trainer import LoopConfig, OptimConfig


def _recipe(tmp_path, model_dir, catalogue):
    def loop(steps):
        return LoopConfig(steps=steps, batch_size=4, checkpoint_every=2, optim=OptimConfig(lr=1e-3, warmup_steps=1))
    return TrainRecipe(model=str(model_dir), output_dir=str(tmp_path / "run"),
                       data=DataSpec(catalogue=str(catalogue)),
                       stages=[StageSpec("p1-qformer", 1, "qformer", loop=loop(3)),
                               StageSpec("p1-vae", 1, "autoencoder", loop=loop(2)),
                               StageSpec("p1-generators", 1, "generators", loop=loop(2)),
                               StageSpec("p2", 2, None, loop=loop(3))])


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("recipe")
    build_catalogue_files(root / "catalogue", CatalogueConfig(n_items=45, seed=4), progress=False)
    model = build_small_model()
    model.save_pretrained(root / "model")
    return root


def test_recipe_runs_every_stage_and_resumes_by_skipping(setup, single_thread):
    recipe = _recipe(setup, setup / "model", setup / "catalogue")
    final = run_recipe(recipe, progress=False)
    run = setup / "run"
    assert final == run / "p2" / "final" and (final / "model.safetensors").is_file()
    timings = json.loads((run / "timings.json").read_text())
    assert list(timings) == ["p1-qformer", "p1-vae", "p1-generators", "p2"]
    assert set(timings["p2"]["last_losses"]) >= {"cir", "itg", "q2i", "loss"}
    assert set(timings["p1-qformer"]["last_losses"]) == {"itc", "itm", "loss"}
    captions = json.loads((run / "generated_captions.json").read_text())
    assert len(captions) > 10 and all(isinstance(c, str) for c in captions.values())
    # Every stage's losses were logged, one line a step.
    assert len((run / "p2" / "losses.jsonl").read_text().splitlines()) == 3
    # Running it again finds every stage finished and trains nothing.
    before = (final / "model.safetensors").stat().st_mtime_ns
    assert run_recipe(recipe, progress=False) == final
    assert (final / "model.safetensors").stat().st_mtime_ns == before


def test_phase_objective_returns_named_terms(single_thread):
    model = build_small_model()
    model.set_phase(1, "qformer")
    batch = {"images": torch.rand(3, 3, 32, 32), "captions": ["a red dress", "a blue shirt", "green pants"]}
    terms = PhaseObjective(model, 1)(batch)
    assert set(terms) == {"loss", "itc", "itm"}
    assert torch.allclose(terms["loss"], terms["itc"] + terms["itm"])


def test_recipe_errors_name_the_key(tmp_path):
    with pytest.raises(ValueError, match="'stages.a.loop.stepz'"):
        TrainRecipe.from_dict({"stages": [{"name": "a", "phase": 1, "loop": {"stepz": 1}}]})
    with pytest.raises(ValueError, match="'data.catalog'"):
        TrainRecipe.from_dict({"data": {"catalog": "x"}})
    with pytest.raises(FileNotFoundError, match="recipe not found"):
        TrainRecipe.load(tmp_path / "none.json")


def test_a_stage_stopped_early_is_not_final_and_the_next_run_resumes_it(setup, tmp_path, single_thread, capsys):
    recipe = _recipe(tmp_path, setup / "model", setup / "catalogue")
    recipe.stages = recipe.stages[:1]
    recipe.stages[0].loop.stop_after = 2
    stopped = run_recipe(recipe, progress=False)
    stage_dir = tmp_path / "run" / "p1-qformer"
    assert stopped == stage_dir / "checkpoints" and not (stage_dir / "final").exists()
    recipe.stages[0].loop.stop_after = None
    final = run_recipe(recipe, progress=False)
    assert final == stage_dir / "final" and "resumed from" in capsys.readouterr().out
    assert len((stage_dir / "losses.jsonl").read_text().splitlines()) == 3


def test_a_wall_time_budget_saves_the_model_as_it_stands_and_the_rerun_continues(setup, tmp_path, single_thread):
    import time

    recipe = _recipe(tmp_path, setup / "model", setup / "catalogue")
    recipe.stages = recipe.stages[:2]
    partial = run_recipe(recipe, progress=False, deadline=time.time() - 1)
    stage_dir = tmp_path / "run" / "p1-qformer"
    assert partial == stage_dir / "out-of-time" and (partial / "config.json").is_file()
    assert not (stage_dir / "final").exists() and not (tmp_path / "run" / "p1-vae").exists()
    timings = json.loads((tmp_path / "run" / "timings.json").read_text())
    assert timings["p1-qformer"]["out_of_time"] and timings["p1-qformer"]["steps"] == 1
    final = run_recipe(recipe, progress=False)
    assert final == tmp_path / "run" / "p1-vae" / "final"
    timings = json.loads((tmp_path / "run" / "timings.json").read_text())
    assert timings["p1-qformer"]["steps"] == 3 and "out_of_time" not in timings["p1-qformer"]
