"""The image-to-text bank keeps its embeddings in the index folder: a new pipeline on the same
index embeds no text again, an index change embeds only the new texts, and a damaged or foreign
file is rebuilt rather than trusted."""

from __future__ import annotations

import numpy as np
import pytest
from serving_helpers import build_discriminative_model, build_test_catalogue, build_test_index, make_image

from unifashion.index import CatalogueIndex
from unifashion.pipelines import SearchPipeline
from unifashion.pipelines.text_bank import TEXT_EMBEDDINGS_DIR, TextEmbeddingFile


@pytest.fixture(scope="module", autouse=True)
def one_thread(single_thread_module):
    """Every test and module fixture here on one thread (see conftest.single_thread)."""


@pytest.fixture(scope="module")
def model():
    return build_discriminative_model()


@pytest.fixture(scope="module")
def catalogue_dir(tmp_path_factory):
    return build_test_catalogue(tmp_path_factory.mktemp("catalogue"))


@pytest.fixture
def folder(model, catalogue_dir, tmp_path):
    path = tmp_path / "index"
    build_test_index(model, catalogue_dir, path, split="test")
    return path


def counting(search: SearchPipeline) -> list[str]:
    """Make ``search`` record every text it embeds for the bank; returns the record."""
    embedded: list[str] = []
    embed = search._embed_texts

    def recorded(texts):
        embedded.extend(texts)
        return embed(texts)

    search._embed_texts = recorded
    return embedded


def results(search: SearchPipeline, seed: int = 4):
    return [(h.text, round(h.score, 6), h.sources) for h in search.image_to_texts(make_image(seed), top_k=50)]


def catalogue_texts(index) -> set[str]:
    texts = set()
    for metadata in index.all_metadata():
        texts.update(t for t in metadata.captions.values() if t.strip())
        texts.add(metadata.fusion_caption)
    return texts


def test_a_new_pipeline_embeds_no_text_again(model, folder):
    with SearchPipeline.open(model, folder, read_only=True) as first:
        embedded = counting(first)
        expected = results(first)
        assert set(embedded) == catalogue_texts(first.index) and len(embedded) == len(set(embedded))
    files = list((folder / TEXT_EMBEDDINGS_DIR).iterdir())
    assert len(files) == 1 and files[0].suffix == ".npz"
    with SearchPipeline.open(model, folder, read_only=True) as second:
        embedded = counting(second)
        assert results(second) == expected
        assert embedded == []


def test_an_index_change_embeds_only_the_new_texts(model, folder):
    with SearchPipeline.open(model, folder) as search:
        results(search)
        embedded = counting(search)
        search.add_item("new-1", make_image(21), category="dress", captions={"short": "a never seen teal gown"})
        after_add = results(search)
        fusion_caption = search.get("new-1").fusion_caption
        assert set(embedded) <= {"a never seen teal gown", fusion_caption} and "a never seen teal gown" in embedded
    # A new process finds the added texts in the file, and matches the in-memory bank.
    with SearchPipeline.open(model, folder, read_only=True) as reopened:
        embedded = counting(reopened)
        assert results(reopened) == after_add and embedded == []


def test_stored_vectors_equal_the_models_embeddings(model, folder):
    with SearchPipeline.open(model, folder, read_only=True) as search:
        search.prepare_texts()
        identity = search.builder.model_identity
    stored = TextEmbeddingFile(folder, identity).load()
    assert set(stored) == catalogue_texts(CatalogueIndex.open(folder, read_only=True))
    texts = sorted(stored)[:5]
    np.testing.assert_allclose(np.stack([stored[t] for t in texts]), model.encode_text(texts).numpy(), atol=1e-6)


def test_a_damaged_file_is_rebuilt(model, folder, caplog):
    with SearchPipeline.open(model, folder, read_only=True) as search:
        expected = results(search)
    (path,) = (folder / TEXT_EMBEDDINGS_DIR).iterdir()
    path.write_bytes(path.read_bytes()[:100])  # truncated, as by a full disk
    with SearchPipeline.open(model, folder, read_only=True) as search:
        embedded = counting(search)
        assert results(search) == expected
        assert set(embedded) == catalogue_texts(search.index)
    assert "unreadable text embedding file" in caplog.text
    with SearchPipeline.open(model, folder, read_only=True) as search:  # and written whole again
        embedded = counting(search)
        results(search)
        assert embedded == []


def test_another_models_embeddings_are_not_used(folder):
    file = TextEmbeddingFile(folder, "model-a")
    assert file.save({"a red dress": np.ones(4, np.float32), "ünïcode ✓": np.zeros(4, np.float32)}, dim=4)
    loaded = file.load()
    assert sorted(loaded) == ["a red dress", "ünïcode ✓"]
    np.testing.assert_array_equal(loaded["a red dress"], np.ones(4, np.float32))
    assert TextEmbeddingFile(folder, "model-b").load() == {}
    # A file renamed to another model's name is refused by the identity stored inside it.
    TextEmbeddingFile(folder, "model-a").path.rename(TextEmbeddingFile(folder, "model-b").path)
    assert TextEmbeddingFile(folder, "model-b").load() == {}


def test_a_folder_that_cannot_be_written_only_costs_the_embedding(model, folder, monkeypatch):
    def refuse(*args, **kwargs):
        raise PermissionError("read-only file system")

    monkeypatch.setattr("unifashion.pipelines.text_bank.tempfile.mkstemp", refuse)
    with SearchPipeline.open(model, folder, read_only=True) as search:
        assert results(search)
    assert not (folder / TEXT_EMBEDDINGS_DIR).exists() or not any((folder / TEXT_EMBEDDINGS_DIR).iterdir())
