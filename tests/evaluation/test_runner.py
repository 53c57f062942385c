"""The evaluation runner on a small random model: every task's rows, the report files."""

from __future__ import annotations

import json
import shutil

import pytest

from conftest import build_small_model
from unifashion.data.synthetic.catalogue import CatalogueConfig, build_catalogue_files, load_catalogue
from unifashion.evaluation.report import write_report
from unifashion.evaluation.results import ResultTable
from unifashion.evaluation.runner import (
    EvalArtifacts,
    EvalConfig,
    SplitData,
    evaluate_random,
    evaluate_unifashion,
)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("evalcat")
    build_catalogue_files(root, CatalogueConfig(n_items=150, seed=9, split_fractions=(0.2, 0.1, 0.7)),
                          progress=False)
    return SplitData(load_catalogue(root), "test")


@pytest.mark.skipif(shutil.which("java") is None, reason="captioning metrics need Java")
def test_every_task_writes_rows_and_pictures(data, tmp_path, single_thread):
    model = build_small_model().eval()
    cfg = EvalConfig(fig_max_items=4, fig_steps=2, itm_rerank_k=3, fic_styles=("short",), n_candidates=20)
    table, art = ResultTable(), EvalArtifacts()
    evaluate_random(data, cfg, table, art)
    evaluate_unifashion(model, data, cfg, table, art)
    rows = table.rows
    methods = {r.method for r in rows}
    assert {"random", "UniFashion", "UniFashion (caption fusion)", "UniFashion (no caption fusion)"} <= methods
    assert any(r.method.endswith("ITM re-rank top-3") for r in rows)
    tasks = {(r.task, r.metric) for r in rows}
    for expected in [("cmr", "i2t_R@1"), ("cmr", "mean_R"), ("cir", "avg_(R@10+R@50)/2"), ("fic", "CIDEr"),
                     ("fig", "UniFashion image-text score x100")]:
        assert expected in tasks, expected
    assert all(0 <= r.value <= 100 for r in rows if r.task == "cmr")
    protocols = {r.protocol for r in rows if r.task == "cmr"}
    assert any(p.startswith("random-20 same-category") for p in protocols)
    paths = write_report(table, art, tmp_path, cfg, notes=["a note"])
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved[0].keys() == {"task", "protocol", "method", "metric", "value", "split", "seed"}
    assert "| metric |" in (tmp_path / "results.md").read_text()
    for name in ("recall_curves.png", "cir_examples.png", "generated.png"):
        assert paths[name].stat().st_size > 5_000


def test_random_baseline_is_near_chance(data):
    cfg = EvalConfig(tasks=("cir",))
    table, art = ResultTable(), EvalArtifacts()
    evaluate_random(data, cfg, table, art)
    groups = data.cir_groups()
    r10 = {r.metric: r.value for r in table.rows}["avg_R@10"]
    chance = 100 * sum(min(10, len(g[0])) / len(g[0]) for g in groups.values()) / len(groups)
    assert abs(r10 - chance) < 25


def test_markdown_table_reports_mean_and_std_over_seeds():
    table = ResultTable()
    for seed, value in enumerate([10.0, 20.0, 30.0]):
        table.add("cir", "p", "m", "R@10", value, "test", seed)
    assert "20.00 ± 8.16" in table.to_markdown()


def test_merging_one_run_per_seed_gives_mean_and_std(tmp_path, capsys):
    from unifashion.cli import main

    files = []
    for seed, value in enumerate([10.0, 20.0, 30.0]):
        table = ResultTable()
        table.add("cir", "p", "m", "R@10", value, "test", seed)
        table.add("cir", "p", "baseline", "R@10", 5.0, "test", seed)
        files.append(str(table.save_json(tmp_path / f"seed{seed}" / "results.json")))
    assert main(["results", "merge", *files, "--out", str(tmp_path / "merged")]) == 0
    merged = ResultTable.load_json(tmp_path / "merged" / "results.json")
    assert sorted(r.seed for r in merged.rows if r.method == "m") == [0, 1, 2]
    markdown = (tmp_path / "merged" / "results.md").read_text()
    assert "20.00 ± 8.16" in markdown and "5.00 ± 0.00" in markdown and "seeds 0, 1, 2" in markdown


def test_merging_the_same_seed_twice_is_an_error(tmp_path, capsys):
    from unifashion.cli import main

    table = ResultTable()
    table.add("cir", "p", "m", "R@10", 1.0, "test", 0)
    path = str(table.save_json(tmp_path / "results.json"))
    assert main(["results", "merge", path, path, "--out", str(tmp_path / "merged")]) == 2
    assert "give each run its own --seed" in capsys.readouterr().err
    assert main(["results", "merge", str(tmp_path / "missing.json"), "--out", str(tmp_path / "m2")]) == 2
    assert "results file not found" in capsys.readouterr().err
    assert not (tmp_path / "merged").exists()


def test_each_task_alone_gives_the_rows_of_the_whole_run(data, single_thread):
    from unifashion.evaluation.runner import CIRVariant, UniFashionFeatures, evaluate_cir, evaluate_cmr

    model = build_small_model().eval()
    cfg = EvalConfig(tasks=("cmr", "cir"), itm_rerank_k=0, n_candidates=20)
    whole = ResultTable()
    evaluate_unifashion(model, data, cfg, whole, EvalArtifacts())
    parts, art = ResultTable(), EvalArtifacts()
    features = UniFashionFeatures(model, data, cfg.batch_size)  # shared: the captions are made once
    evaluate_cmr(model, data, cfg, parts, art, features=features)
    evaluate_cir(model, data, cfg, parts, art, features=features)
    assert parts.rows == whole.rows
    assert set(art.cmr_t2i_ranks) == {"UniFashion"}
    assert set(art.cir_ranks) == {"UniFashion (no caption fusion)", "UniFashion (caption fusion)"}
    # A variant is data: one without fusion, under its own name, scores as "no caption fusion" does.
    plain = ResultTable()
    evaluate_cir(model, data, cfg, plain, EvalArtifacts(), method="M", features=features,
                 variants=(CIRVariant(" (plain)", fusion=False, rerank=False, examples=False),))
    assert {r.method for r in plain.rows} == {"M (plain)"}
    assert [r.value for r in plain.rows] == [r.value for r in whole.rows
                                             if r.method == "UniFashion (no caption fusion)"]


def test_every_method_reports_cmr_through_one_protocol(data):
    from unifashion.evaluation.runner import record_cmr
    from unifashion.evaluation.scoring import RandomScorer

    cfg = EvalConfig(tasks=("cmr",), n_candidates=20)
    by_random, by_matrix = ResultTable(), ResultTable()
    evaluate_random(data, cfg, by_random, EvalArtifacts())
    record_cmr(RandomScorer(len(data.items), len(data.items), cfg.seed), data, cfg, by_matrix, EvalArtifacts(),
               "random")
    assert by_matrix.rows == by_random.rows
    with pytest.raises(ValueError, match="unknown tasks"):
        EvalConfig(tasks=("cmr", "retrieval"))
