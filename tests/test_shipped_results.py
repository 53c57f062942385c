"""The shipped models' numbers: seed noise, the rule for a new version, the README table."""

from __future__ import annotations

import json

import pytest

from unifashion.experiments import shipped


def _row(method, metric, value, task="cmr", catalogue="held-out catalogue (10,000 items, seed 1)"):
    return {"catalogue": catalogue, "task": task, "protocol": "full gallery", "method": method, "metric": metric,
            "value": value, "split": "test", "seed": 0}


def test_seed_noise_is_the_sample_std_over_seeds():
    by_seed = {1: [_row("UniFashion", "mean R", 90.0)], 2: [_row("UniFashion", "mean R", 92.0)],
               3: [_row("UniFashion", "mean R", 94.0)]}
    (entry,) = shipped.seed_noise(by_seed)
    assert entry["values"] == [90.0, 92.0, 94.0] and entry["std"] == pytest.approx(2.0)
    # A number missing from one seed has no noise estimate.
    by_seed[3] = []
    assert shipped.seed_noise(by_seed) == []


def test_binomial_noise_of_a_percentage():
    assert shipped.binomial_noise(50.0, 100) == pytest.approx(5.0)
    assert shipped.binomial_noise(0.0, 64) > 0  # never zero: an estimate at the edge is still uncertain


@pytest.fixture
def results():
    return {"format": shipped.RESULTS_FORMAT, "tag": "tiny-default",
            "test_items": {"demo test split (2,000 items, seed 0)": 100},
            "noise": {"rows": [{"task": "cmr", "protocol": "full gallery", "method": "UniFashion", "metric": "mean R",
                                "std": 1.0}]},
            "rows": [_row("UniFashion", "mean R", 90.0), _row("random", "mean R", 1.0),
                     _row("UniFashion", "FID-EffLite0", 700.0, task="fig",
                          catalogue="demo test split (2,000 items, seed 0)"),
                     _row("UniFashion", "colour (%)", 20.0, task="fig",
                          catalogue="demo test split (2,000 items, seed 0)")]}


def test_a_new_version_replaces_only_when_better_beyond_noise_and_worse_nowhere(results):
    fig = "demo test split (2,000 items, seed 0)"
    small_gain = [_row("UniFashion", "mean R", 90.5)]
    assert not shipped.judge(shipped.compare(results, small_gain, "tiny-default"))["replace"]
    real_gain = [_row("UniFashion", "mean R", 91.5), _row("UniFashion", "FID-EffLite0", 650.0, "fig", fig)]
    comparison = shipped.compare(results, real_gain, "tiny-default")
    # FID is no percentage: no binomial noise applies and none was measured, so it decides nothing.
    assert [c["verdict"] for c in comparison] == ["better", "no noise measured"]
    assert comparison[1]["noise_from"] == "none" and comparison[1]["gain"] == pytest.approx(50.0)  # lower is better
    assert shipped.judge(comparison)["replace"]
    fid_only = shipped.compare(results, [_row("UniFashion", "FID-EffLite0", 100.0, "fig", fig)], "tiny-default")
    assert not shipped.judge(fid_only)["replace"]
    colour = shipped.compare(results, [_row("UniFashion", "colour (%)", 40.0, "fig", fig)], "tiny-default")
    assert colour[0]["noise_from"] == "binomial" and colour[0]["noise"] == pytest.approx(5.0)  # 20% over 64
    assert colour[0]["verdict"] == "better"
    # Better on one number, worse beyond noise on another (colour: binomial noise of 20% over 64 prompts).
    mixed = [_row("UniFashion", "mean R", 93.0), _row("UniFashion", "colour (%)", 5.0, "fig", fig)]
    verdict = shipped.judge(shipped.compare(results, mixed, "tiny-default"))
    assert not verdict["replace"] and verdict["worse"] == 1
    # Random's rows are the reference, never judged.
    assert shipped.compare(results, [_row("random", "mean R", 50.0)], "tiny-default") == []


def test_comparison_files_say_the_verdict(tmp_path, results):
    verdict = shipped.write_comparison(tmp_path, shipped.compare(results, [_row("UniFashion", "mean R", 95.0)],
                                                                 "tiny-default"), "warm start")
    assert verdict["replace"]
    assert json.loads((tmp_path / "comparison.json").read_text())["numbers"][0]["gain"] == pytest.approx(5.0)
    assert "**Verdict: replace the shipped version**" in (tmp_path / "comparison.md").read_text()


def test_results_round_trip_and_keep_each_tags_own_rows(tmp_path):
    rows = [_row("UniFashion, caption fusion", "mean R", 90.0), _row("dual-encoder (CLIP4CIR)", "mean R", 92.0),
            _row("random", "mean R", 1.0)]
    (tmp_path / "tiny-default").mkdir()
    (tmp_path / "dual-encoder-default").mkdir()
    path = shipped.write_results("tiny-default", rows, [], {"code_commit": "abc"}, {}, root=tmp_path)
    data = shipped.load_results(path)
    assert [r["method"] for r in data["rows"]] == ["UniFashion, caption fusion", "random"]
    assert data["training"]["code_commit"] == "abc"
    other = shipped.load_results(shipped.write_results("dual-encoder-default", rows, [], {}, {}, root=tmp_path))
    assert [r["method"] for r in other["rows"]] == ["dual-encoder (CLIP4CIR)", "random"]
    (tmp_path / "bad.json").write_text("[]")
    with pytest.raises(ValueError, match="not a unifashion-shipped-results file"):
        shipped.load_results(tmp_path / "bad.json")


def test_the_results_table_has_a_row_per_number_and_a_column_per_method():
    table = shipped.results_table([{"rows": [_row("UniFashion", "mean R", 91.5), _row("random", "mean R", 0.6)]}])
    lines = table.splitlines()
    assert lines[0] == "| catalogue | task | protocol | metric | UniFashion | random |"
    assert lines[2] == "| held-out catalogue (10,000 items, seed 1) | cmr | full gallery | mean R | 91.50 | 0.60 |"
    assert len(lines) == 3
