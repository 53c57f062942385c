"""The documentation's tables are rendered from the committed result files and stay current, and
every decimal number the prose quotes can be found in a result, config or recipe file."""

import json
import shutil
from pathlib import Path

import pytest

from unifashion.cli import main
from unifashion.experiments import tables

ROOT = Path(__file__).parents[1]


def test_every_rendered_table_in_the_repository_is_current():
    stale = tables.render_tree(ROOT, check=True)
    assert not stale, f"stale tables in {[str(p.relative_to(ROOT)) for p in stale]}: run `unifashion docs render`"


def test_every_number_the_documentation_quotes_has_a_source():
    assert tables.unsourced_numbers(ROOT) == {}


def test_the_readme_uses_rendered_tables_and_stays_short():
    readme = (ROOT / "README.md").read_text()
    assert "<!-- table:shipped-headline" in readme
    assert len(readme.splitlines()) <= 250


def _copy_of_repository(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    for folder in ("docs", "benchmarks/results", "src/unifashion/configs", "recipes", "benchmarks/recipes"):
        shutil.copytree(ROOT / folder, root / folder)
    for tag in ("tiny-default", "dual-encoder-default"):
        target = root / tables.WEIGHTS / tag
        target.mkdir(parents=True)
        for name in ("results.json", "config.json", "manifest.json"):
            if (ROOT / tables.WEIGHTS / tag / name).is_file():
                shutil.copy(ROOT / tables.WEIGHTS / tag / name, target / name)
    shutil.copy(ROOT / "README.md", root / "README.md")
    return root


def test_an_edited_number_in_a_rendered_table_is_stale_and_rendering_restores_it(tmp_path):
    root = _copy_of_repository(tmp_path)
    readme = root / "README.md"
    original = readme.read_text()
    value = tables.render_shipped_headline(root).splitlines()[2].split(" | ")[2]  # UniFashion's first number
    assert f"| {value} |" in original
    readme.write_text(original.replace(f"| {value} |", "| 99.99 |", 1))
    assert tables.render_tree(root, check=True) == [readme]
    assert main(["docs", "render", "--root", str(root), "--check"]) == 1
    assert readme.read_text() != original  # --check writes nothing
    assert tables.render_tree(root) == [readme]
    assert readme.read_text() == original
    assert main(["docs", "render", "--root", str(root), "--check"]) == 0


def test_a_changed_result_file_makes_its_table_stale(tmp_path):
    root = _copy_of_repository(tmp_path)
    path = root / "benchmarks/results/generation.json"
    data = json.loads(path.read_text())
    data["samplers"][0]["seconds_per_image_batch_1"] = 123.456
    path.write_text(json.dumps(data))
    assert tables.render_tree(root, check=True) == [root / "docs/benchmarks.md"]
    tables.render_tree(root)
    assert "| 123.46 |" in (root / "docs/benchmarks.md").read_text()


def test_a_quoted_number_without_a_source_is_reported(tmp_path):
    root = _copy_of_repository(tmp_path)
    page = root / "docs/getting-started.md"
    page.write_text(page.read_text() + "\nThe model scores 12.3456 on nothing at all.\n")
    assert tables.unsourced_numbers(root) == {"docs/getting-started.md": ["12.3456"]}


def test_quoted_numbers_skip_code_links_versions_and_rendered_blocks():
    text = ("Mean R is 91.14, torch 2.13.0, [arXiv 2408.11305](https://arxiv.org/abs/2408.11305),\n"
            "`x = 3.5`, <!-- 7.25 -->\n```\ny = 8.5\n```\n" + tables.block("search", "| 4.4 |") + "\nand 1,554.5 s")
    assert tables.quoted_numbers(text) == ["91.14", "1554.5"]


def test_an_unknown_table_name_is_an_error_naming_it(tmp_path):
    with pytest.raises(ValueError, match="unknown table 'nonsense'"):
        tables.render_text(tables.block("nonsense", ""), tmp_path, "page.md")


def test_a_missing_result_file_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="generation.json"):
        tables.render_text(tables.block("generation", ""), tmp_path, "page.md")
