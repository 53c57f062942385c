"""The models that ship with the package: whole, within budget, loaded offline from an empty cache,
with their measured numbers beside them."""

from __future__ import annotations

import torch

from conftest import requires
from unifashion.experiments import shipped
from unifashion.models import pretrained
from unifashion.models.artifact import DUAL_ENCODER_COMPONENTS, UNIFASHION_COMPONENTS, verify_folder

pytestmark = requires("shipped-models")


def test_both_shipped_tags_are_whole_per_component_and_within_budget():
    total = 0
    for tag, components in (("tiny-default", UNIFASHION_COMPONENTS), ("dual-encoder-default", DUAL_ENCODER_COMPONENTS)):
        folder = pretrained.packaged_model_dir(tag)
        manifest = verify_folder(folder, remedy="-", required=True)
        assert [c["file"] for c in manifest["components"]] == [c.file for c in components]
        assert {c["dtype"] for c in manifest["components"]} == {"int8"}
        assert not (folder / "model.safetensors").exists()
        total += pretrained.folder_bytes(folder)
    assert total <= pretrained.PACKAGED_MAX_BYTES


def test_the_shipped_default_loads_offline_from_an_empty_cache(tmp_path, monkeypatch, single_thread):
    from unifashion.models import UniFashion
    from unifashion.models.dual_encoder import DualEncoder

    monkeypatch.setenv("UNIFASHION_HOME", str(tmp_path / "empty"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = UniFashion.from_pretrained("tiny-default").eval()
    baseline = DualEncoder.from_pretrained("dual-encoder-default")
    texts = ["a red dress", "a navy striped shirt"]
    with torch.no_grad():
        assert model.encode_text(texts).shape == (2, model.config.embed_dim)
        assert baseline.encode_text(texts).shape[0] == 2
    assert not (tmp_path / "empty").exists()  # nothing written to, or trained into, the cache


def test_the_results_file_says_how_it_was_trained_and_what_it_scores():
    for tag in shipped.SHIPPED_TAGS:
        results = shipped.load_results(shipped.results_path(tag))
        assert results["tag"] == tag and results["training"]["code_commit"]
        own = [r for r in results["rows"] if shipped.tag_of_method(r["method"]) == tag]
        catalogues = {r["catalogue"] for r in own}
        assert any(c.startswith(shipped.DEMO_SPLIT.name) for c in catalogues)
        assert any(c.startswith(shipped.HELD_OUT.name) for c in catalogues)
        assert all(r["protocol"] and isinstance(r["value"], float) for r in own)
        assert results["noise"]["rows"], "the seed noise is recorded"
    stages = shipped.load_results(shipped.results_path("tiny-default"))["training"]["stages"]
    assert sorted(stages) == ["phase1-autoencoder", "phase1-generators", "phase1-qformer", "phase2"]
    assert all(stage["steps"] > 0 and stage["seconds"] > 0 for stage in stages.values())


def test_the_documented_results_table_is_the_one_the_results_files_render():
    from pathlib import Path

    from unifashion.experiments import tables

    root = Path(__file__).parents[2]
    results = [shipped.load_results(shipped.results_path(tag)) for tag in shipped.SHIPPED_TAGS]
    rendered = shipped.results_table(results, shipped.results_pick)
    assert tables.block("shipped-results", rendered) in (root / "docs" / "results.md").read_text()
