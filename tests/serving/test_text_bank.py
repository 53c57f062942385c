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

    monkeypatch.setattr("unifashion.pipelines.text_bank.atomic_writer", refuse)  # as opening a file there would
    with SearchPipeline.open(model, folder, read_only=True) as search:
        assert results(search)
    assert not (folder / TEXT_EMBEDDINGS_DIR).exists() or not any((folder / TEXT_EMBEDDINGS_DIR).iterdir())


# ---------------------------------------------------------------------------- the saved text IVF
class BankIndex:
    """What TextBank.refresh reads of an index: its generation, dim and items' metadata."""

    def __init__(self, count: int, generation: int = 0, dim: int = 16):
        from unifashion.index.store import ItemMetadata

        self.generation, self.dim = generation, dim
        self.metadata = [ItemMetadata(item_id=f"item-{i}", category="dress", captions={"short": f"text {i}"})
                         for i in range(count)]

    def all_metadata(self):
        return self.metadata


def text_vectors(texts, dim: int = 16) -> np.ndarray:
    """A unit vector per text, the same for the same text (a stand-in for the model)."""
    rows = [np.random.default_rng(int(t.split()[-1])).standard_normal(dim) for t in texts]
    matrix = np.array(rows, dtype=np.float32)
    return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)


def refreshed_bank(folder, index, monkeypatch, brute_force: int = 2_000):
    from unifashion.pipelines.text_bank import TextBank

    # Small banks stand for large ones: the IVF starts above `brute_force` texts.
    monkeypatch.setattr("unifashion.index.text_ann.BRUTE_FORCE_TEXTS", brute_force)
    monkeypatch.setattr("unifashion.pipelines.text_bank.BRUTE_FORCE_TEXTS", brute_force)
    bank = TextBank(TextEmbeddingFile(folder, "model-a"))
    bank.refresh(index, text_vectors)
    return bank


def finds_itself(bank, rows) -> bool:
    """Each text's own vector (as every query vector of an image) finds that text first."""
    for row in rows:
        found, _scores = bank.text_index.search(np.repeat(bank.text_index.matrix[row][None], 4, axis=0), top_k=1)
        if bank.texts[found[0]] != bank.texts[row]:
            return False
    return True


def test_a_new_bank_reads_the_saved_ivf_back_instead_of_training_it(tmp_path, monkeypatch):
    first = refreshed_bank(tmp_path, BankIndex(6_000), monkeypatch)
    assert first.text_index.ann is not None and first.text_index.retrained
    ann_file = TextEmbeddingFile(tmp_path, "model-a").ann_path
    assert ann_file.is_file()
    written = ann_file.stat().st_mtime_ns

    def no_training(*args, **kwargs):
        raise AssertionError("trained an IVF that was saved")

    monkeypatch.setattr("unifashion.index.text_ann._ivf", no_training)
    again = refreshed_bank(tmp_path, BankIndex(6_000), monkeypatch)
    assert not again.text_index.retrained and again.text_index.ann.ntotal == 6_000
    assert ann_file.stat().st_mtime_ns == written  # the same texts: nothing to write
    image = text_vectors([f"text {i}" for i in (5, 77, 4_000, 5_999)])
    for bank_search in (first.text_index.search, again.text_index.search):
        np.testing.assert_array_equal(bank_search(image, top_k=20)[0], first.text_index.search(image, top_k=20)[0])
    assert finds_itself(again, [0, 123, 5_999])


def test_changed_texts_refill_the_saved_ivf_and_growth_past_twice_trains_a_new_one(tmp_path, monkeypatch):
    refreshed_bank(tmp_path, BankIndex(6_000), monkeypatch)
    grown = refreshed_bank(tmp_path, BankIndex(9_000, generation=1), monkeypatch)
    # The trained quantisers are kept; the IVF now holds every text, the new ones included.
    assert not grown.text_index.retrained and grown.text_index.trained_on == 6_000
    assert grown.text_index.ann.ntotal == 9_000
    assert finds_itself(grown, [10, 6_500, 8_999])
    same = refreshed_bank(tmp_path, BankIndex(9_000, generation=1), monkeypatch)
    assert not same.text_index.retrained and same.text_index.ann.ntotal == 9_000  # saved refilled
    doubled = refreshed_bank(tmp_path, BankIndex(12_001, generation=2), monkeypatch)
    assert doubled.text_index.retrained and doubled.text_index.trained_on == 12_001
    assert finds_itself(doubled, [0, 12_000])


def test_a_damaged_ivf_file_is_trained_again(tmp_path, monkeypatch, caplog):
    refreshed_bank(tmp_path, BankIndex(6_000), monkeypatch)
    ann_file = TextEmbeddingFile(tmp_path, "model-a").ann_path
    ann_file.write_bytes(ann_file.read_bytes()[:500])
    bank = refreshed_bank(tmp_path, BankIndex(6_000), monkeypatch)
    assert "unreadable text IVF file" in caplog.text
    assert bank.text_index.retrained and finds_itself(bank, [1, 5_000])
    assert not refreshed_bank(tmp_path, BankIndex(6_000), monkeypatch).text_index.retrained  # written whole again
