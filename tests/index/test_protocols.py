"""The protocols the pipelines annotate with hold for the classes they are given: both index
backends satisfy :class:`CatalogueIndexProtocol` and the UniFashion model the pipelines' model
protocols, member by member and with the same method signatures (names, kinds, defaults)."""

from __future__ import annotations

import inspect
import typing

import pytest
from test_index import DIM, NUM_QUERIES, backend, create, milvus_uri  # noqa: F401 - the backend fixtures

from unifashion.index import CatalogueIndex, CatalogueIndexProtocol, MilvusCatalogueIndex
from unifashion.models import UniFashion
from unifashion.models.dual_encoder import DualEncoder
from unifashion.pipelines.protocols import CatalogueEmbedder, SearchModel

DUNDERS = ("__len__", "__contains__", "__enter__", "__exit__")


def protocol_members(protocol: type, kind) -> dict[str, object]:
    """The members of ``kind`` (functions or properties) a protocol declares, its bases' included."""
    found = {}
    for klass in reversed(protocol.__mro__):
        if klass in (object, typing.Protocol, typing.Generic):
            continue
        for name, member in vars(klass).items():
            if isinstance(member, kind) and (not name.startswith("_") or name in DUNDERS):
                found[name] = member
    return found


def protocol_methods(protocol: type) -> dict[str, object]:
    return protocol_members(protocol, type(lambda: None))


def shape(function) -> list[tuple[str, object, bool]]:
    """(name, kind, has a default) of each parameter, ``self`` left out."""
    parameters = list(inspect.signature(function).parameters.values())[1:]
    return [(p.name, p.kind, p.default is not inspect.Parameter.empty) for p in parameters]


def assert_implements(cls: type, protocol: type) -> None:
    for name, declared in protocol_methods(protocol).items():
        implemented = getattr(cls, name, None)
        assert callable(implemented), f"{cls.__name__} lacks {name}()"
        assert shape(implemented) == shape(declared), f"{cls.__name__}.{name} differs from {protocol.__name__}"
    for name in protocol_members(protocol, property):
        assert isinstance(inspect.getattr_static(cls, name, None), property), f"{cls.__name__}.{name} is no property"


@pytest.mark.parametrize("cls", [CatalogueIndex, MilvusCatalogueIndex])
def test_both_index_classes_have_the_protocols_methods_and_signatures(cls):
    assert protocol_methods(CatalogueIndexProtocol).keys() >= {"search", "add", "upsert", "delete", "get", "__len__"}
    assert_implements(cls, CatalogueIndexProtocol)


def test_open_indexes_of_both_backends_are_instances_of_the_protocol(tmp_path, backend):  # noqa: F811
    index = create(tmp_path / "index", backend)
    try:
        assert isinstance(index, CatalogueIndexProtocol)
        assert (index.dim, index.num_queries, index.captions, index.read_only) == (DIM, NUM_QUERIES, True, False)
    finally:
        index.close()


def test_the_unifashion_model_satisfies_both_model_protocols():
    assert_implements(UniFashion, CatalogueEmbedder)
    assert_implements(UniFashion, SearchModel)
    model = UniFashion.from_config("tiny")
    assert isinstance(model, CatalogueEmbedder) and isinstance(model, SearchModel)


def test_the_dual_encoder_is_not_a_pipeline_model():
    """It embeds one vector per image and neither captions nor generates: the pipelines take
    UniFashion models only, and the protocol says so."""
    assert "get_image_features" not in dir(DualEncoder) and "encode_captions" not in dir(DualEncoder)
    with pytest.raises(AssertionError, match="lacks|differs"):
        assert_implements(DualEncoder, CatalogueEmbedder)
