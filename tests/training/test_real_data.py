"""Every supported dataset layout trains and evaluates from the command line (`--data KIND:PATH`),
on tiny fixtures written in exactly that layout, with a small random model and a few steps."""

from __future__ import annotations

import json

import pytest

from conftest import build_small_model
from dataset_layouts import WRITERS
from unifashion.cli import main

TRIPLET_KINDS = {"fashioniq", "embedded"}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "small"
    build_small_model().save_pretrained(path)
    return path


def _recipe(path, model_dir, phase2: bool, generators: bool = False) -> str:
    def stage(name, phase, stage=None, steps=2):
        return {"name": name, "phase": phase, "stage": stage,
                "loop": {"steps": steps, "batch_size": 4, "checkpoint_every": 2,
                         "optim": {"lr": 1e-3, "warmup_steps": 1}}}
    stages = [stage("p1-qformer", 1, "qformer")]
    if generators:
        stages.append(stage("p1-generators", 1, "generators"))
    if phase2:
        stages.append(stage("p2", 2))
    path.write_text(json.dumps({"model": str(model_dir), "stages": stages}))
    return str(path)


@pytest.mark.parametrize("kind", ["fashiongen", "fashiongen-jsonl", "fashioniq", "fashion200k", "viton",
                                  "imagefolder", "embedded"])
def test_each_format_trains_and_evaluates_from_the_cli(kind, model_dir, tmp_path, single_thread, capsys):
    root = WRITERS[kind](tmp_path / "data")
    spec_kind = "fashiongen" if kind == "fashiongen-jsonl" else kind
    spec = f"{spec_kind}:{root}" + ("?holdout=0.5" if kind == "imagefolder" else "")
    recipe = _recipe(tmp_path / "recipe.json", model_dir, phase2=kind in TRIPLET_KINDS,
                     generators=kind == "fashiongen")
    run = tmp_path / "run"
    # FashionGen also runs the generators stage (pixels read lazily from the h5 rows) with the scale flags.
    extra = ["--grad-accum", "2", "--activation-checkpointing", "--precision", "bf16"] if kind == "fashiongen" else []
    assert main(["train", "--recipe", recipe, "--data", spec, "--output-dir", str(run), "--device", "cpu",
                 *extra]) == 0
    if extra:
        stage = json.loads((run / "p1-generators" / "run_config.json").read_text())["stage"]["loop"]
        assert (stage["gradient_accumulation"], stage["activation_checkpointing"], stage["mixed_precision"]) == (
            2, True, "bf16")
        assert set(json.loads((run / "timings.json").read_text())["p1-generators"]["last_losses"]) >= {"itg", "q2i"}
    data = json.loads((run / "data.json").read_text())
    assert data["pairs"] > 0 and data["sources"][0].startswith(spec_kind)
    final = run / ("p2" if kind in TRIPLET_KINDS else "p1-qformer") / "final"
    assert (final / "model.safetensors").is_file()
    # The frozen features were cached on disk, one shard folder for this data and encoder.
    caches = list((run / "feature-cache").iterdir())
    assert len(caches) == 1 and (caches[0] / "meta.json").is_file()
    if kind in TRIPLET_KINDS:
        assert json.loads((run / "timings.json").read_text())["p2"]["steps"] == 2
        captions = json.loads((run / "generated_captions.json").read_text())
        if kind == "fashioniq":
            assert all(key.split("/")[0] in ("dress", "shirt") for key in captions)
    capsys.readouterr()
    out = tmp_path / "eval"
    assert main(["eval", "--model", str(final), "--data", spec, "--tasks", "cmr", "cir", "--out", str(out),
                 "--device", "cpu", "--itm-rerank", "0"]) == 0
    rows = json.loads((out / "results.json").read_text())
    tasks = {r["task"] for r in rows}
    assert "cmr" in tasks
    assert ("cir" in tasks) == (kind in TRIPLET_KINDS)
    assert {r["method"] for r in rows} >= {"random", "UniFashion"} | (
        {"UniFashion (caption fusion)"} if kind in TRIPLET_KINDS else set())
    expected_split = {"fashiongen": "validation", "fashiongen-jsonl": "validation", "fashioniq": "val",
                      "fashion200k": "test", "viton": "test", "imagefolder": "test", "embedded": "test"}[kind]
    assert {r["split"] for r in rows} == {expected_split}
    assert "Data: `" in (out / "results.md").read_text()


def test_a_weighted_mixture_trains_and_records_its_sources(model_dir, tmp_path, single_thread):
    fg = WRITERS["fashiongen"](tmp_path / "fg")
    f200k = WRITERS["fashion200k"](tmp_path / "f200k")
    fiq = WRITERS["fashioniq"](tmp_path / "fiq")
    recipe = _recipe(tmp_path / "recipe.json", model_dir, phase2=True)
    run = tmp_path / "run"
    spec = f"fashiongen:{fg}@0.5,fashion200k:{f200k}@0.3,fashioniq:{fiq}@0.2"
    assert main(["train", "--recipe", recipe, "--data", spec, "--output-dir", str(run)]) == 0
    data = json.loads((run / "data.json").read_text())
    assert [s.split(":")[0] for s in data["sources"]] == ["fashiongen", "fashion200k", "fashioniq"]
    assert "professional" in data["sources"][0] and "(short)" in data["sources"][1] and "detailed" in data["sources"][2]
    assert data["pairs"] == 12 + 12 + 24 and data["triplets"] == 24
    assert (run / "p2" / "final" / "model.safetensors").is_file()


@pytest.mark.parametrize(("spec", "message"), [
    ("shopify:{root}", "unknown kind 'shopify'"),
    ("fashiongen:{root}/nowhere.h5", "nowhere.h5"),
    ("fashiongen:{root}@heavy", "the weight 'heavy' is not a number"),
    ("fashiongen:{root}@-1", "the weight must be a positive number"),
    ("fashiongen:{root}@0.5,fashion200k:{root}", "give every source a weight"),
    ("imagefolder:{root}?colour=red", "unknown option 'colour=red'"),
    ("fashiongen", "expected KIND:PATH"),
])
def test_a_bad_data_spec_is_a_clear_error(spec, message, tmp_path, capsys):
    for command in (["train", "--output-dir", str(tmp_path / "run")], ["eval", "--out", str(tmp_path / "ev")]):
        assert main([*command, "--data", spec.format(root=tmp_path)]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err
    assert not (tmp_path / "run").exists() and not (tmp_path / "ev" / "results.json").exists()


def test_phase_2_without_triplets_and_without_captions_are_named(model_dir, tmp_path, capsys):
    root = WRITERS["fashion200k"](tmp_path / "f200k")
    recipe = _recipe(tmp_path / "recipe.json", model_dir, phase2=True)
    assert main(["train", "--recipe", recipe, "--data", f"fashion200k:{root}", "--output-dir",
                 str(tmp_path / "run")]) == 2
    assert "needs CIR triplets, and no data source has any" in capsys.readouterr().err
    fiq = WRITERS["fashioniq"](tmp_path / "fiq")
    for cap in (fiq / "captions").glob("imgcap.*"):
        cap.unlink()
    assert main(["train", "--recipe", recipe, "--data", f"fashioniq:{fiq}", "--output-dir",
                 str(tmp_path / "run2")]) == 2
    assert "Fashion-IQ-cap" in capsys.readouterr().err


def test_cuda_without_a_gpu_says_so(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is here")
    root = WRITERS["imagefolder"](tmp_path / "shop")
    assert main(["eval", "--model", "none", "--data", f"imagefolder:{root}", "--device", "cuda", "--out",
                 str(tmp_path / "ev")]) == 2
    assert "no CUDA device is available" in capsys.readouterr().err
    assert main(["train", "--data", f"imagefolder:{root}", "--device", "cuda", "--output-dir",
                 str(tmp_path / "run")]) == 2
    assert "no CUDA device is available" in capsys.readouterr().err and not (tmp_path / "run").exists()
