"""The issue-6 commands: ``triplets mine``, ``cir-train``, ``cir-recipe``: bad input is one clear
error line and exit status 2; mining a folder writes a triplet file and its report."""

from __future__ import annotations

import json

import pytest

from conftest import build_small_model
from unifashion.cli import main
from unifashion.data.synthetic.catalogue import (
    CatalogueConfig,
    build_catalogue_files,
    load_catalogue,
    read_triplets_jsonl,
)


@pytest.fixture(scope="module")
def tiny_catalogue(tmp_path_factory):
    root = tmp_path_factory.mktemp("catalogue")
    build_catalogue_files(root, CatalogueConfig(n_items=24, image_size=32, seed=2), progress=False)
    return root


def _fails(capsys, argv, *fragments):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("unifashion: error:") and len(err.strip().splitlines()) == 1, err
    for fragment in fragments:
        assert fragment in err, err


def test_bad_input_is_one_error_line(tmp_path, capsys, tiny_catalogue):
    _fails(capsys, ["triplets", "mine", "--images", str(tmp_path / "missing"), "--out", str(tmp_path / "t.jsonl")],
           "missing")
    _fails(capsys, ["triplets", "mine", "--images", str(tiny_catalogue), "--split", "train", "--out",
                    str(tmp_path / "t.txt")], ".jsonl")
    _fails(capsys, ["triplets", "mine", "--images", str(tiny_catalogue), "--out", str(tmp_path / "t.jsonl"),
                    "--agreement-quantile", "1.5"], "agreement_quantile")
    _fails(capsys, ["cir-recipe", "--out", str(tmp_path / "r"), "--runs", "everything"], "--runs")
    _fails(capsys, ["cir-train", "--catalogue", str(tmp_path / "nowhere"), "--output-dir", str(tmp_path / "o")],
           "catalogue.json")
    foreign = tmp_path / "foreign.jsonl"
    row = {"split": "train", "reference": "x-1", "target": "x-2", "captions": ["is red"]}
    foreign.write_text(json.dumps(row) + "\n")
    _fails(capsys, ["cir-train", "--catalogue", str(tiny_catalogue), "--triplets", str(foreign), "--output-dir",
                    str(tmp_path / "o")], "x-1")
    not_json = tmp_path / "broken.jsonl"
    not_json.write_text("{not json\n")
    _fails(capsys, ["cir-train", "--catalogue", str(tiny_catalogue), "--triplets", str(not_json), "--output-dir",
                    str(tmp_path / "o")], "line 1")
    with pytest.raises(SystemExit):
        main(["cir-train", "--stages", "decoder"])
    capsys.readouterr()


def test_mine_writes_a_triplet_file_and_a_report(tmp_path, capsys, tiny_catalogue, single_thread):
    model_dir = tmp_path / "model"
    build_small_model().save_pretrained(model_dir)
    out = tmp_path / "mined" / "triplets.jsonl"
    assert main(["triplets", "mine", "--images", str(tiny_catalogue), "--split", "train", "--out", str(out),
                 "--model", str(model_dir)]) == 0
    assert "mined" in capsys.readouterr().out
    report = json.loads(out.with_suffix(".report.json").read_text())
    n_train = len(load_catalogue(tiny_catalogue).item_records("train"))
    assert report["counts"]["images"] == n_train and report["captioner"] == str(model_dir)
    # An untrained captioner writes nothing the grammar accepts: every image is filtered, none paired,
    # and the (empty) file still reads back.
    assert report["counts"]["unparsed"] == n_train
    assert report["triplets"] == 0 and read_triplets_jsonl(out) == []


def test_cir_train_on_a_clip_vit_from_a_local_directory(tmp_path, capsys, tiny_catalogue, single_thread):
    import torch
    from transformers import CLIPVisionConfig, CLIPVisionModel

    from unifashion.training.two_stage_cir import load_two_stage_cir

    torch.manual_seed(0)
    clip = tmp_path / "clip-vit"
    CLIPVisionModel(CLIPVisionConfig(hidden_size=24, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                                     image_size=32, patch_size=8)).save_pretrained(clip, safe_serialization=True)
    out = tmp_path / "run"
    assert main(["cir-train", "--catalogue", str(tiny_catalogue), "--vision-path", str(clip), "--no-prompts",
                 "--stage1-steps", "1", "--stage2-steps", "2", "--batch-size", "4", "--output-dir", str(out)]) == 0
    assert "two-stage CIR model" in capsys.readouterr().out
    model, method = load_two_stage_cir(out / "final")
    assert type(model.vision.model).__name__ == "CLIPVisionModel" and model.config.vision.image_size == 32
    assert not method.sentence_prompts and method.combiner == "learned"
    capsys.readouterr()
    _fails(capsys, ["cir-train", "--catalogue", str(tiny_catalogue), "--vision-path", str(tmp_path), "--no-prompts",
                    "--output-dir", str(tmp_path / "o")], "config.json")
