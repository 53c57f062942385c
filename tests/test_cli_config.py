"""``--config FILE`` on the long commands: a config file in is the run_config.json out, a flag
given on the command line overrides the file, a misspelt key is one clear error line."""

from __future__ import annotations

import json

import pytest

from unifashion.cli import main
from unifashion.configuration import to_dict

LONG_COMMANDS = ["train", "train-baseline", "eval", "cir-train", "cir-recipe", "tryon"]


def _write(path, data) -> str:
    path.write_text(json.dumps(data))
    return str(path)


def _printed_config(capsys, argv) -> dict:
    capsys.readouterr()
    assert main([*argv, "--print-recipe" if argv[0] == "train" else "--print-config"]) == 0
    return json.loads(capsys.readouterr().out)


def _config_class(command):
    from unifashion.experiments.baseline import BaselineRunConfig
    from unifashion.experiments.cir_recipe import CIRRecipeConfig
    from unifashion.experiments.cir_train import CIRTrainConfig
    from unifashion.experiments.evaluate import EvalRunConfig
    from unifashion.experiments.tryon import TryOnRunConfig
    from unifashion.training.recipe import default_recipe

    if command == "train":
        return lambda: default_recipe("runs/x", scale=0.5, seed=2)
    return {"train-baseline": BaselineRunConfig, "eval": EvalRunConfig, "cir-train": CIRTrainConfig,
            "cir-recipe": CIRRecipeConfig, "tryon": TryOnRunConfig}[command]


@pytest.mark.parametrize("command", LONG_COMMANDS)
def test_a_config_file_is_the_run_config(command, tmp_path, capsys):
    config = to_dict(_config_class(command)())
    path = _write(tmp_path / "run.json", config)
    assert _printed_config(capsys, [command, "--config", path]) == json.loads(json.dumps(config))


@pytest.mark.parametrize(("command", "typo", "key"), [
    ("train", {"seeed": 1}, "seeed"),
    ("train-baseline", {"data": {"catalouge": "x"}}, "data.catalouge"),
    ("eval", {"eval": {"sede": 1}}, "eval.sede"),
    ("cir-train", {"method": {"stage1_stesp": 1}}, "method.stage1_stesp"),
    ("cir-recipe", {"mining": {"min_chnages": 1}}, "mining.min_chnages"),
    ("tryon", {"train": {"loop": {"stpes": 1}}}, "train.loop.stpes"),
])
def test_a_misspelt_key_is_one_error_line_naming_it(command, typo, key, tmp_path, capsys):
    assert main([command, "--config", _write(tmp_path / "typo.json", typo)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("unifashion: error:") and len(err.strip().splitlines()) == 1, err
    assert f"unknown config key {key!r}" in err


@pytest.mark.parametrize("command", LONG_COMMANDS)
def test_a_missing_config_file_is_a_clear_error(command, tmp_path, capsys):
    assert main([command, "--config", str(tmp_path / "missing.json")]) == 2
    assert "missing.json" in capsys.readouterr().err


def test_flags_given_override_the_file_and_only_those(tmp_path, capsys):
    path = _write(tmp_path / "tryon.json", {"out": "from-file", "model": "m", "eval": {"seed": 4, "guidance": 1.5},
                                            "train": {"loop": {"steps": 500, "optim": {"warmup_steps": 30}}}})
    printed = _printed_config(capsys, ["tryon", "--config", path, "--train-steps", "100", "--seed", "9",
                                       "--eval-items", "0", "--paper-freezing"])
    assert printed["out"] == "from-file" and printed["model"] == "m" and printed["eval"]["guidance"] == 1.5
    assert printed["train"]["loop"]["steps"] == 100 and printed["train"]["loop"]["optim"]["warmup_steps"] == 10
    assert printed["train"]["loop"]["seed"] == printed["eval"]["seed"] == 9
    assert printed["eval"]["max_items"] is None and printed["train"]["train_unet"] is False

    path = _write(tmp_path / "recipe.json", {"seeds": [5], "heldout_catalogue": "h", "mining": {"seed": 3}})
    printed = _printed_config(capsys, ["cir-recipe", "--config", path, "--heldout", "none", "--no-pair-agreement"])
    assert printed["seeds"] == [5] and printed["heldout_catalogue"] is None
    assert printed["mining"]["seed"] == 3 and printed["mining"]["pair_agreement"] is False

    path = _write(tmp_path / "cir.json", {"method": {"stage2_steps": 7, "seed": 1}, "triplets": ["a.jsonl"]})
    printed = _printed_config(capsys, ["cir-train", "--config", path, "--seed", "2", "--no-prompts"])
    assert printed["method"]["stage2_steps"] == 7 and printed["method"]["seed"] == 2
    assert printed["method"]["sentence_prompts"] is False and printed["triplets"] == ["a.jsonl"]

    path = _write(tmp_path / "eval.json", {"eval": {"tasks": ["cir"], "seed": 4}, "ablations": {"a": "p"}})
    printed = _printed_config(capsys, ["eval", "--config", path, "--cir-ks", "1", "10", "--ablation", "b=q"])
    assert printed["eval"]["tasks"] == ["cir"] and printed["eval"]["seed"] == 4
    assert printed["eval"]["cir_ks"] == [1, 10] and printed["ablations"] == {"b": "q"}


def test_a_bad_value_from_a_flag_is_a_clear_error(tmp_path, capsys):
    assert main(["cir-recipe", "--agreement-quantile", "1.5", "--print-config"]) == 2
    assert "agreement_quantile" in capsys.readouterr().err
    assert main(["eval", "--ablation", "no-path", "--print-config"]) == 2
    assert "NAME=PATH" in capsys.readouterr().err


def test_eval_writes_the_config_it_ran_with(tmp_path, capsys):
    from unifashion.data.synthetic.catalogue import CatalogueConfig, build_catalogue_files
    from unifashion.experiments.evaluate import EvalRunConfig

    build_catalogue_files(tmp_path / "cat", CatalogueConfig(n_items=60, seed=3, split_fractions=(0.2, 0.1, 0.7)),
                          progress=False)
    config = to_dict(EvalRunConfig(model="none", catalogue=str(tmp_path / "cat"), out=str(tmp_path / "eval")))
    config["eval"].update(tasks=["cir"], seed=4, cir_ks=[1, 10])
    path = _write(tmp_path / "eval.json", config)
    assert main(["eval", "--config", path]) == 0
    assert json.loads((tmp_path / "eval" / "run_config.json").read_text()) == config
    assert json.loads((tmp_path / "eval" / "eval_config.json").read_text()) == config["eval"]
    # A flag on top: the run and its run_config.json say seed 5; everything else is the file's.
    assert main(["eval", "--config", path, "--seed", "5", "--out", str(tmp_path / "eval5")]) == 0
    written = json.loads((tmp_path / "eval5" / "run_config.json").read_text())
    assert written == {**config, "out": str(tmp_path / "eval5"), "eval": {**config["eval"], "seed": 5}}
    rows = json.loads((tmp_path / "eval5" / "results.json").read_text())
    assert {r["seed"] for r in rows} == {5} and {r["method"] for r in rows} == {"random"}


def test_cir_runs_write_their_config_before_they_start(tmp_path, capsys):
    from unifashion.experiments.cir_recipe import CIRRecipeConfig
    from unifashion.experiments.cir_train import CIRTrainConfig

    # The catalogue is missing: the run stops at once, after writing the config it was given.
    recipe = to_dict(CIRRecipeConfig(catalogue=str(tmp_path / "nowhere"), seeds=(3,), runs=("mined",)))
    assert main(["cir-recipe", "--config", _write(tmp_path / "r.json", recipe), "--out", str(tmp_path / "r")]) == 2
    assert "catalogue.json" in capsys.readouterr().err
    assert json.loads((tmp_path / "r" / "run_config.json").read_text()) == recipe
    train = to_dict(CIRTrainConfig(catalogue=str(tmp_path / "nowhere"), output_dir=str(tmp_path / "t")))
    assert main(["cir-train", "--config", _write(tmp_path / "t.json", train)]) == 2
    assert json.loads((tmp_path / "t" / "run_config.json").read_text()) == train


def test_tryon_and_baseline_write_their_config(tmp_path, capsys, monkeypatch):
    from unifashion.experiments.baseline import BaselineRunConfig
    from unifashion.experiments.tryon import TryOnRunConfig

    class Stop(Exception):
        pass

    def stop(*args, **kwargs):
        raise Stop

    monkeypatch.setattr("unifashion.experiments.tryon._ensure_worn_data", stop)
    monkeypatch.setattr("unifashion.experiments.baseline.train_dual_encoder", stop)
    tryon = to_dict(TryOnRunConfig(out=str(tmp_path / "tryon"), n_items=50))
    with pytest.raises(Stop):
        main(["--debug", "tryon", "--config", _write(tmp_path / "tryon.json", tryon), "--guidance", "2"])
    tryon["eval"]["guidance"] = 2.0
    assert json.loads((tmp_path / "tryon" / "run_config.json").read_text()) == tryon
    baseline = to_dict(BaselineRunConfig(output_dir=str(tmp_path / "de"), encoder_steps=3))
    with pytest.raises(Stop):
        main(["--debug", "train-baseline", "--config", _write(tmp_path / "de.json", baseline)])
    assert json.loads((tmp_path / "de" / "run_config.json").read_text()) == baseline


def test_train_takes_its_recipe_as_config_and_flags_on_top(tmp_path, capsys, monkeypatch):
    from unifashion.training.recipe import default_recipe

    ran = []
    monkeypatch.setattr("unifashion.training.recipe.run_recipe",
                        lambda recipe, deadline=None: ran.append(recipe) or tmp_path)
    recipe = default_recipe(str(tmp_path / "run"), scale=0.01, seed=1).to_dict()
    path = _write(tmp_path / "recipe.json", recipe)
    assert main(["train", "--config", path, "--seed", "4", "--fashion-mnist-pairs", "5"]) == 0
    assert "trained model" in capsys.readouterr().out
    got = ran[0].to_dict()
    assert got["seed"] == 4 and {s["loop"]["seed"] for s in got["stages"]} == {4}
    assert got["data"]["fashion_mnist_pairs"] == 5
    for key in ("seed", "data", "stages"):
        got.pop(key), recipe.pop(key)
    assert got == recipe  # the rest as the file says
    assert main(["train", "--recipe", path, "--scale", "2"]) == 2
    assert "--scale" in capsys.readouterr().err
