"""The ``backend`` fixture: behaviour tests of the index run against the local index (None) and
the Milvus backend (a :class:`MilvusBackend` on milvus-lite, FLAT: exact grouping search), which
is skipped where milvus-lite is not installed (an optional extra: ``pip install
'unifashion[milvus]'``). The Milvus tests share one milvus-lite database per session (starting
one costs seconds), each test in collections of its own."""

from __future__ import annotations

import importlib.util
import itertools

import pytest

from unifashion.index import MilvusBackend

MILVUS_MISSING = "the Milvus backend's tests need pymilvus and milvus-lite: pip install 'unifashion[milvus]'"
_collections = itertools.count()


@pytest.fixture(scope="session")
def milvus_uri(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("milvus") / "tests.db")


@pytest.fixture(params=["faiss", "milvus"])
def backend(request) -> MilvusBackend | None:
    if request.param == "faiss":
        return None
    if not all(importlib.util.find_spec(m) for m in ("pymilvus", "milvus_lite")):
        pytest.skip(MILVUS_MISSING)
    uri = request.getfixturevalue("milvus_uri")
    return MilvusBackend(uri=uri, collection=f"test_{next(_collections)}", index_type="FLAT")
