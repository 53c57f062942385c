"""The command line: help, the data commands, the demo, and errors that name the problem."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from unifashion.cli import main


def test_help_lists_the_commands(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for command in ("demo", "data"):
        assert command in out


def test_entry_point_is_installed():
    result = subprocess.run([sys.executable, "-m", "unifashion.cli", "data", "--help"], capture_output=True,
                            text=True, check=True)
    assert "build" in result.stdout and "check" in result.stdout


def test_build_show_check(tmp_path, capsys):
    out = tmp_path / "cat"
    assert main(["data", "build", "--out", str(out), "--n-items", "24", "--workers", "1"]) == 0
    assert "wrote 24 items" in capsys.readouterr().out
    assert main(["data", "show", str(out)]) == 0
    assert (out / "contact_sheet.png").stat().st_size > 10_000
    capsys.readouterr()
    assert main(["data", "check", "embedded", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["items"] == 24 and summary["triplets"] > 0


def test_demo_writes_contact_sheet_and_reuses_catalogue(tmp_path, capsys):
    assert main(["demo", "--output", str(tmp_path), "--n-items", "30", "--workers", "1", "--catalogue-only"]) == 0
    first = capsys.readouterr().out
    assert "contact_sheet.png" in first and (tmp_path / "contact_sheet.png").is_file()
    assert main(["demo", "--output", str(tmp_path), "--n-items", "30", "--workers", "1", "--catalogue-only"]) == 0
    assert "reusing the embedded catalogue" in capsys.readouterr().out


def test_missing_dataset_is_a_clear_error(tmp_path, capsys):
    assert main(["data", "check", "embedded", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert "catalogue.json" in err and "unifashion data build" in err
    assert main(["data", "check", "fashion-mnist", str(tmp_path)]) == 2
    assert "apt-get install dataset-fashion-mnist" in capsys.readouterr().err


@pytest.fixture
def no_packaged_models(tmp_path, monkeypatch):
    """No model ships with the package: what a checkout without packaged weights meets."""
    from unifashion.models import pretrained

    monkeypatch.setattr(pretrained, "packaged_root", lambda: tmp_path / "no-packaged-models")


def test_demo_evaluates_the_installed_default_model(tmp_path, capsys, monkeypatch, single_thread, no_packaged_models):
    from conftest import build_small_model
    from unifashion.models import pretrained

    monkeypatch.setenv("UNIFASHION_HOME", str(tmp_path / "home"))
    assert not pretrained.is_trained("tiny-default")
    assert main(["demo", "--output", str(tmp_path / "demo"), "--n-items", "330", "--no-train"]) == 0
    assert "is not in" in capsys.readouterr().out  # says how to train it, trains nothing
    saved = tmp_path / "small"
    build_small_model().save_pretrained(saved)
    pretrained.install("tiny-default", saved)
    assert main(["demo", "--output", str(tmp_path / "demo"), "--n-items", "330", "--no-train",
                 "--eval-tasks", "cmr", "cir"]) == 0
    out = capsys.readouterr().out
    assert "loading the trained default model" in out and "avg_(R@10+R@50)/2" in out
    # Non-interactive: the last step answers sample queries and prints how to serve the page.
    assert "sample query" in out and "sample composed query" in out
    assert "unifashion serve --index" in out and "http://127.0.0.1:8000/" in out
    assert (tmp_path / "demo" / "index" / "catalogue.sqlite").is_file()
    rows = json.loads((tmp_path / "demo" / "eval" / "results.json").read_text())
    assert {r["method"] for r in rows} >= {"random", "UniFashion (caption fusion)"}
    assert (tmp_path / "demo" / "eval" / "recall_curves.png").is_file()


def test_unknown_trained_tag_message(tmp_path, monkeypatch, no_packaged_models):
    from unifashion.models import UniFashion

    monkeypatch.setenv("UNIFASHION_HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="trained here, not downloaded"):
        UniFashion.from_pretrained("tiny-default")


def test_eval_with_model_none_measures_only_the_baselines(tmp_path, capsys):
    from unifashion.data.synthetic.catalogue import CatalogueConfig, build_catalogue_files

    build_catalogue_files(tmp_path / "cat", CatalogueConfig(n_items=60, seed=3, split_fractions=(0.2, 0.1, 0.7)),
                          progress=False)
    assert main(["eval", "--model", "none", "--catalogue", str(tmp_path / "cat"), "--tasks", "cir",
                 "--seed", "4", "--cir-ks", "1", "10", "--out", str(tmp_path / "eval")]) == 0
    rows = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert {r["method"] for r in rows} == {"random"}
    assert {r["seed"] for r in rows} == {4}
    assert {"avg_R@1", "avg_R@10"} <= {r["metric"] for r in rows}


class _StopAfterRecipe(Exception):
    pass


def test_demo_trains_without_fashion_mnist_when_it_is_not_installed(tmp_path, monkeypatch, no_packaged_models):
    """A new user has no root, so no Debian package: the demo's training must not need Fashion-MNIST."""
    from unifashion.data import fashion_mnist
    from unifashion.experiments.demo import DemoConfig, demo_fashion_mnist_pairs, run_demo
    from unifashion.training import recipe as recipe_module

    monkeypatch.setenv("UNIFASHION_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(fashion_mnist, "DEFAULT_FASHION_MNIST_DIR", tmp_path / "no-fashion-mnist")
    seen = {}

    def fake_run_recipe(recipe, progress=True):
        seen["pairs"] = recipe.data.fashion_mnist_pairs
        raise _StopAfterRecipe

    monkeypatch.setattr(recipe_module, "run_recipe", fake_run_recipe)
    lines: list[str] = []
    with pytest.raises(_StopAfterRecipe):
        run_demo(DemoConfig(output=str(tmp_path / "demo"), n_items=30, workers=1), echo=lines.append)
    assert seen["pairs"] == 0
    said = "\n".join(lines)
    assert "Fashion-MNIST is not in" in said and "apt-get install dataset-fashion-mnist" in said
    # With the dataset there, the demo's training adds its 1,000 pairs as before.
    folder = tmp_path / "fashion-mnist"
    folder.mkdir()
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"):
        (folder / name).write_bytes(b"")
    monkeypatch.setattr(fashion_mnist, "DEFAULT_FASHION_MNIST_DIR", folder)
    assert demo_fashion_mnist_pairs(echo=lines.append) == 1000


def test_train_package_flag_writes_a_checked_packaged_folder(tmp_path, monkeypatch, capsys):
    from conftest import build_small_model
    from unifashion.cli.train import install_model
    from unifashion.models import pretrained
    from unifashion.models.artifact import verify_folder

    monkeypatch.setenv("UNIFASHION_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(pretrained, "packaged_root", lambda: tmp_path / "weights")
    saved = tmp_path / "final"
    build_small_model().save_pretrained(saved)
    with pytest.raises(ValueError, match="--package needs --install-as"):
        install_model(saved, None, True)
    install_model(saved, "tiny-default", True)
    out = capsys.readouterr().out
    assert "installed as 'tiny-default'" in out and "packaged as 'tiny-default'" in out
    verify_folder(tmp_path / "weights" / "tiny-default", remedy="retrain", required=True)
    assert pretrained.locate("tiny-default") == tmp_path / "weights" / "tiny-default"



def test_any_error_is_one_line_and_debug_shows_the_traceback(capsys, monkeypatch):
    from unifashion.cli import build_parser

    def broken(args):
        raise RuntimeError("the store is\nlocked by another process")

    args = build_parser().parse_args(["data", "show", "nowhere"])
    args.func = broken
    monkeypatch.setattr("unifashion.cli.build_parser", lambda: _FixedParser(args))
    assert main([]) == 2
    err = capsys.readouterr().err
    assert err.strip() == ("unifashion: error: RuntimeError: the store is locked by another process "
                           "(run with --debug for the traceback)")
    args.debug = True
    with pytest.raises(RuntimeError, match="locked"):
        main([])


class _FixedParser:
    """Hands ``main`` parsed arguments whose command raises."""

    def __init__(self, args):
        self.args = args

    def parse_args(self, argv):
        return self.args
