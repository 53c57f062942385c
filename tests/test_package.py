"""The package's top level: the main classes import from ``unifashion`` itself, lazily."""

from __future__ import annotations

import subprocess
import sys

import pytest

import unifashion


def test_main_classes_import_from_the_top():
    from unifashion import CatalogueIndex, DualEncoder, SearchPipeline, UniFashion, build_index
    from unifashion.index import CatalogueIndex as index_class
    from unifashion.models import UniFashion as model_class
    from unifashion.models.dual_encoder import DualEncoder as dual_class
    from unifashion.pipelines import SearchPipeline as pipeline_class
    from unifashion.pipelines import build_index as build_function

    assert (UniFashion, DualEncoder, CatalogueIndex, SearchPipeline, build_index) == (
        model_class, dual_class, index_class, pipeline_class, build_function)


def test_every_exported_name_resolves():
    for name in unifashion.__all__:
        assert getattr(unifashion, name) is not None, name
    assert set(unifashion.__all__) <= set(dir(unifashion))


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'NoSuchThing'"):
        _ = unifashion.NoSuchThing


def test_importing_the_package_does_not_load_torch():
    code = "import sys, unifashion; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_all_lists_exactly_the_lazy_exports():
    assert set(unifashion.__all__) == {"__version__", *unifashion._EXPORTS}
