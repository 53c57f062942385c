"""Pipelines: building an index from a catalogue, and search results against a brute-force
max-sim over the model's own embeddings; adding and deleting items; reopening; metadata files;
generation; the CLI commands that use them.

Everything runs on the tiny random model of conftest.py and a 30-item embedded catalogue.
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image
from serving_helpers import (
    N_ITEMS,
    SCORE_TOL,
    assert_same_ranking,
    build_discriminative_model,
    build_test_catalogue,
    build_test_index,
    make_image,
)

from conftest import build_small_model, requires
from unifashion.data.errors import DatasetFormatError
from unifashion.data.synthetic.catalogue import load_catalogue
from unifashion.index import CatalogueIndex, DuplicateItemError, UnknownItemError
from unifashion.pipelines import GENERATED_STYLE, SearchPipeline, build_index, read_metadata_file


@pytest.fixture(scope="module", autouse=True)
def one_thread(single_thread_module):
    """Every test and module fixture here on one thread (see conftest.single_thread)."""


@pytest.fixture(scope="module")
def model():
    return build_discriminative_model()


@pytest.fixture(scope="module")
def catalogue_dir(tmp_path_factory):
    return build_test_catalogue(tmp_path_factory.mktemp("catalogue"))


@pytest.fixture(scope="module")
def built(model, catalogue_dir, tmp_path_factory):
    """An index of the whole catalogue (read by the tests; the mutating ones build their own)."""
    folder = tmp_path_factory.mktemp("index") / "index"
    report = build_test_index(model, catalogue_dir, folder)
    return folder, report


@pytest.fixture(scope="module")
def pipeline(model, built):
    with SearchPipeline.open(model, built[0], read_only=True) as search:
        yield search


@pytest.fixture(scope="module")
def reference(model, catalogue_dir, pipeline):
    """The brute-force side: the model's embeddings of every catalogue image and stored caption."""
    records = load_catalogue(catalogue_dir).item_records()
    images = [r.load_image() for r in records]
    z = model.encode_image(images).numpy()
    fusion_captions = [pipeline.get(r.item_id).fusion_caption for r in records]
    return {"ids": [r.item_id for r in records], "records": records, "images": images, "z": z,
            "zc": model.encode_text(fusion_captions).numpy(), "fusion_captions": fusion_captions}


def test_build_reports_and_stores_every_item(built, pipeline, reference, model):
    folder, report = built
    assert report.added == N_ITEMS and report.skipped == 0 and report.total == N_ITEMS
    assert len(pipeline.index) == N_ITEMS
    record = reference["records"][3]
    stored = pipeline.get(record.item_id)
    assert stored.category == record.category and stored.captions == record.captions
    assert stored.attributes == record.attributes
    assert pipeline.image_path(record.item_id) == record.image.resolve()
    # The fusion caption is the model's fusion caption (one function everywhere), the fusion vector its embedding.
    assert stored.fusion_caption == model.fusion_captions([reference["images"][3]])[0]
    multi, fusion = pipeline.index.vectors(record.item_id)
    np.testing.assert_allclose(multi, reference["z"][3], atol=SCORE_TOL)
    np.testing.assert_allclose(fusion, model.encode_text([stored.fusion_caption])[0].numpy(), atol=SCORE_TOL)


@pytest.mark.parametrize("text", ["a red floral dress", "navy shirt with long sleeves"])
def test_text_to_images_equals_brute_force_maxsim(pipeline, reference, model, text):
    e = model.encode_text([text])[0].numpy()
    brute = (reference["z"] @ e).max(axis=1)
    assert_same_ranking(pipeline.text_to_images(text, top_k=7), reference["ids"], brute, 7)


def test_text_to_images_category_filter(pipeline, reference):
    category = reference["records"][0].category
    hits = pipeline.text_to_images("a garment", top_k=N_ITEMS, category=category)
    expected = {r.item_id for r in reference["records"] if r.category == category}
    assert {h.item_id for h in hits} == expected
    with pytest.raises(ValueError, match="unknown category"):
        pipeline.text_to_images("a garment", category="spacesuit")


@pytest.mark.parametrize("fusion", [True, False])
def test_composed_equals_brute_force_with_caption_fusion(pipeline, reference, model, fusion):
    image, text = make_image(5), "is blue and has no sleeves"
    e = model.encode_composed([image], [text])[0].numpy()
    brute = (reference["z"] @ e).max(axis=1) + (reference["zc"] @ e if fusion else 0.0)
    hits = pipeline.composed(image, text, top_k=5, fusion=fusion)
    assert_same_ranking(hits, reference["ids"], brute, 5)
    for hit in hits:
        assert (hit.fusion != 0.0) == fusion


def test_image_to_texts_ranks_every_catalogue_text(pipeline, reference, model):
    sources: dict[str, set] = {}
    for record, generated in zip(reference["records"], reference["fusion_captions"], strict=True):
        for style, text in [*record.captions.items(), (GENERATED_STYLE, generated)]:
            sources.setdefault(text, set()).add((record.item_id, style))
    texts = list(sources)
    image = reference["images"][7]
    z = model.encode_image([image])[0].numpy()
    brute = (model.encode_text(texts).numpy() @ z.T).max(axis=1)
    hits = pipeline.image_to_texts(image, top_k=len(texts) + 5)
    assert len(hits) == len(texts)  # each distinct text once
    assert_same_ranking([_AsHit(h) for h in hits], texts, brute, len(texts))
    for hit in hits:
        assert {(s.item_id, s.style) for s in hit.sources} == sources[hit.text]
    assert len(pipeline.image_to_texts(image, top_k=3)) == 3


class _AsHit:
    """A text hit seen as an item hit whose id is its text (for assert_same_ranking)."""

    def __init__(self, hit):
        self.item_id, self.score, self.rank = hit.text, hit.score, hit.rank


def test_add_delete_and_reopen(model, catalogue_dir, tmp_path):
    folder = tmp_path / "index"
    build_test_index(model, catalogue_dir, folder, split="test")
    with SearchPipeline.open(model, folder) as search:
        before = len(search.index)
        image = make_image(11, size=(50, 60))
        added = search.add_item("new-1", image, category="dress", captions={"short": "a brand new dress"},
                                attributes={"colour": "teal"})
        assert added.fusion_caption and added.category == "dress"
        assert len(search.index) == before + 1
        saved = search.image_path("new-1")
        assert saved.parent == (folder / "images").resolve() and saved.is_file()
        assert np.array_equal(np.asarray(Image.open(saved)), np.asarray(image))
        multi, _ = search.index.vectors("new-1")
        np.testing.assert_allclose(multi, model.encode_image([image])[0].numpy(), atol=SCORE_TOL)
        # The new item and its texts are searchable at once.
        hits = search.text_to_images("a brand new dress", top_k=before + 1)
        assert "new-1" in {h.item_id for h in hits}
        assert any(s.item_id == "new-1" for h in search.image_to_texts(image, top_k=100) for s in h.sources)
        with pytest.raises(DuplicateItemError):
            search.add_item("new-1", image)
        search.add_item("new-1", make_image(12), category="skirt", replace=True)
        assert search.get("new-1").category == "skirt" and len(search.index) == before + 1
        replaced = search.image_path("new-1")
        assert replaced.is_file() and not saved.exists()  # the replaced image's file is gone
        search.add_item("new-2", make_image(13))

        search.delete_items(["new-1"])
        assert not replaced.exists()
        assert sorted(p.name for p in (folder / "images").iterdir()) == [search.image_path("new-2").name]
        with pytest.raises(UnknownItemError):
            search.get("new-1")
        with pytest.raises(UnknownItemError):
            search.delete_items(["new-1"])
        assert "new-1" not in {h.item_id for h in search.text_to_images("a brand new dress", top_k=before + 1)}
        assert all(s.item_id != "new-1" for h in search.image_to_texts(image, top_k=100) for s in h.sources)
        expected = [(h.item_id, h.score) for h in search.text_to_images("a red dress", top_k=5)]

    with SearchPipeline.open(model, folder, read_only=True) as reopened:
        assert len(reopened.index) == before + 1 and "new-2" in reopened.index
        assert [(h.item_id, h.score) for h in reopened.text_to_images("a red dress", top_k=5)] == expected
        with pytest.raises(PermissionError):
            reopened.add_item("new-3", make_image(14))


def test_build_resumes_and_refuses_other_models(model, catalogue_dir, tmp_path):
    folder = tmp_path / "index"
    records = load_catalogue(catalogue_dir).item_records()
    first = build_index(model, records[:10], folder, progress=False)
    assert (first.added, first.skipped, first.total) == (10, 0, 10)
    second = build_index(model, records, folder, progress=False)
    assert (second.added, second.skipped, second.total) == (N_ITEMS - 10, 10, N_ITEMS)
    with pytest.raises(FileExistsError):
        build_index(model, records, folder, progress=False, resume=False)
    other = build_small_model(embed_dim=8)
    with pytest.raises(ValueError, match="build a new index for this model"):
        build_index(other, records, folder, progress=False)


@pytest.mark.parametrize("kind", ["jsonl", "csv"])
def test_image_folder_with_metadata_file(model, tmp_path, kind):
    images = tmp_path / "photos"
    images.mkdir()
    for i in range(3):
        make_image(i).save(images / f"p{i}.png")
    rows = [{"id": f"p{i}", "path": f"p{i}.png", "category": "shirt", "caption": f"shirt number {i}",
             "colour": "red"} for i in range(3)]
    if kind == "jsonl":
        rows[0]["captions"] = {"detailed": "a red shirt with a collar"}
        (tmp_path / "photos" / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    else:
        with open(images / "metadata.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    report = build_index(model, images, tmp_path / "index", progress=False)
    assert report.added == 3
    with SearchPipeline.open(model, tmp_path / "index", read_only=True) as search:
        item = search.get("p0")
        assert item.category == "shirt" and item.attributes == {"colour": "red"}
        assert item.captions["caption"] == "shirt number 0"
        if kind == "jsonl":
            assert item.captions["detailed"] == "a red shirt with a collar"
        assert search.image_path("p0") == (images / "p0.png").resolve()


def test_metadata_file_errors_name_the_problem(tmp_path):
    bad = tmp_path / "metadata.jsonl"
    bad.write_text('{"id": "a", "path": "a.png"}\n{"id": "a", "path": "b.png"}\n')
    with pytest.raises(DatasetFormatError, match="more than once"):
        read_metadata_file(bad)
    bad.write_text('{"path": "a.png"}\n')
    with pytest.raises(DatasetFormatError, match="line 1 needs an 'id'"):
        read_metadata_file(bad)
    bad.write_text("not json\n")
    with pytest.raises(DatasetFormatError, match="line 1 is not valid JSON"):
        read_metadata_file(bad)


def test_caption_and_generate(pipeline):
    image = make_image(3)
    assert isinstance(pipeline.caption(image, "short"), str)
    with pytest.raises(ValueError, match="unknown caption style"):
        pipeline.caption(image, "poetic")
    first = pipeline.generate("a red dress", steps=2, seed=7)
    again = pipeline.generate("a red dress", steps=2, seed=7)
    assert len(first) == 1 and first[0].size == (32, 32)
    assert np.array_equal(np.asarray(first[0]), np.asarray(again[0]))
    assert len(pipeline.generate("is shorter", image=image, steps=1, num_images=2, scheduler="dpmsolver++")) == 2
    person, mask = make_image(4).resize((40, 36)), Image.new("L", (40, 36), 0)
    mask.paste(255, (10, 10, 30, 30))
    sketch = make_image(6).convert("L").resize((40, 36))
    design = pipeline.generate("a dress", mask=mask, sketch=sketch, person=person, steps=1)[0]
    # Design comes back at the person's size; outside the mask the person is kept, pixel for pixel.
    outside = np.asarray(mask) < 128
    assert design.size == (40, 36)
    assert np.array_equal(np.asarray(design)[outside], np.asarray(person.convert("RGB"))[outside])
    with pytest.raises(ValueError, match="must be the same size"):
        pipeline.generate("a dress", mask=mask.resize((20, 20)), person=person, steps=1)
    with pytest.raises(ValueError, match="both a person image and a mask"):
        pipeline.generate("a dress", mask=mask, steps=1)
    with pytest.raises(ValueError, match="needs a text, a reference image"):
        pipeline.generate(None, steps=1)
    with pytest.raises(ValueError, match="unknown scheduler"):
        pipeline.generate("a dress", steps=1, scheduler="ddim")


def test_cli_index_search_caption_generate(model, catalogue_dir, tmp_path, capsys):
    from unifashion.cli import main

    model_dir = tmp_path / "model"
    model.save_pretrained(model_dir)
    index_dir = tmp_path / "index"
    common = ["--model", str(model_dir)]
    assert main(["index", "--catalogue", str(catalogue_dir), "--split", "test", "--index", str(index_dir),
                 "--no-progress", *common]) == 0
    assert "indexed" in capsys.readouterr().out
    assert main(["search", "a red dress", "--index", str(index_dir), "--top-k", "2", "--json", *common]) == 0
    hits = json.loads(capsys.readouterr().out)["results"]
    assert len(hits) == 2 and hits[0]["rank"] == 1
    image = tmp_path / "query.png"
    make_image(1).save(image)
    assert main(["search", "--image", str(image), "--index", str(index_dir), "--top-k", "3", *common]) == 0
    assert "score" in capsys.readouterr().out
    assert main(["search", "--image", str(image), "--text", "is darker", "--index", str(index_dir), *common]) == 0
    assert "score" in capsys.readouterr().out
    assert main(["caption", str(image), "--style", "short", *common]) == 0
    assert capsys.readouterr().out.strip()
    out = tmp_path / "generated.png"
    assert main(["generate", "--text", "a red dress", "--steps", "2", "--out", str(out), *common]) == 0
    assert Image.open(out).size == (32, 32)
    # Errors are one line that names the problem, exit status 2.
    assert main(["search", "--index", str(index_dir), *common]) == 2
    assert "give a text" in capsys.readouterr().err
    assert main(["generate", "--text", "x", "--mask", str(image), "--out", str(out), *common]) == 2
    assert "person" in capsys.readouterr().err


def test_index_built_for_split_only(model, catalogue_dir, tmp_path):
    report = build_test_index(model, catalogue_dir, tmp_path / "index", split="test")
    expected = {r.item_id for r in load_catalogue(catalogue_dir).item_records("test")}
    with CatalogueIndex.open(tmp_path / "index", read_only=True) as index:
        assert set(index.ids()) == expected and report.added == len(expected)


@requires("milvus")
def test_cli_index_and_search_on_milvus_match_the_local_index(model, catalogue_dir, tmp_path, capsys):
    """`unifashion index --backend milvus` (milvus-lite in the folder) and `search` over it give
    the local index's results: text -> images, composed with caption fusion, image -> texts."""
    from unifashion.cli import main

    model_dir = tmp_path / "model"
    model.save_pretrained(model_dir)
    common = ["--model", str(model_dir)]
    image = tmp_path / "query.png"
    make_image(1).save(image)
    results = {}
    for name, extra in (("local", []), ("milvus", ["--backend", "milvus", "--milvus-index-type", "FLAT"])):
        index_dir = tmp_path / name
        assert main(["index", "--catalogue", str(catalogue_dir), "--split", "test", "--index", str(index_dir),
                     "--no-progress", *extra, *common]) == 0
        assert "indexed" in capsys.readouterr().out
        found = []
        for query in (["a red dress"], ["--image", str(image), "--text", "is darker"], ["--image", str(image)]):
            assert main(["search", *query, "--index", str(index_dir), "--top-k", "5", "--json", *common]) == 0
            hits = json.loads(capsys.readouterr().out)["results"]
            found.append([(h.get("item_id", h.get("text")), h["score"]) for h in hits])
        results[name] = found
    assert (tmp_path / "milvus" / "backend.json").is_file() and (tmp_path / "milvus" / "milvus.db").exists()
    assert not (tmp_path / "milvus" / "catalogue.sqlite").exists()
    for local, milvus in zip(results["local"], results["milvus"], strict=True):
        assert [i for i, _ in milvus] == [i for i, _ in local] and len(local) == 5
        np.testing.assert_allclose([s for _, s in milvus], [s for _, s in local], atol=1e-5)
    # Pointing at the same milvus-lite file explicitly works too; a collection that is not there is a clear error.
    milvus_file = str(tmp_path / "milvus" / "milvus.db")
    assert main(["search", "a red dress", "--index", str(tmp_path / "milvus"), "--milvus-uri", milvus_file,
                 "--top-k", "1", *common]) == 0
    capsys.readouterr()
    assert main(["search", "a red dress", "--index", str(tmp_path / "milvus"), "--milvus-collection", "other",
                 *common]) == 2
    assert "no collection other_meta" in capsys.readouterr().err


def test_the_builder_embeds_as_the_model_does_with_one_vision_and_qformer_pass(model, catalogue_dir, monkeypatch):
    """CatalogueBuilder.embed runs the vision encoder and the Q-Former's image path once per batch
    (the text encoder then embeds the captions) and gives what encode_image and encode_captions
    of the images give."""
    from unifashion.pipelines.indexing import CatalogueBuilder

    images = [r.load_image() for r in load_catalogue(catalogue_dir).item_records()[:6]]
    expected_z = model.encode_image(images).numpy()
    expected_captions, expected_zc = model.encode_captions(images)
    calls = []
    vision_forward = model.vision.forward
    monkeypatch.setattr(model.vision, "forward", lambda pixels: calls.append(len(pixels)) or vision_forward(pixels))
    qformer_calls = []
    qformer_forward = model.qformer.forward

    def counted_qformer(*args, **kwargs):
        qformer_calls.append("image" if kwargs.get("image_features") is not None else "text")
        return qformer_forward(*args, **kwargs)

    monkeypatch.setattr(model.qformer, "forward", counted_qformer)
    embedded = CatalogueBuilder(model, progress=False).embed(images)
    assert calls == [6]
    assert qformer_calls == ["image", "text"]
    np.testing.assert_allclose(embedded.multi_vectors, expected_z, atol=1e-6)
    assert embedded.fusion_captions == expected_captions
    np.testing.assert_allclose(embedded.fusion_vectors, expected_zc.numpy(), atol=1e-6)


def test_an_index_built_without_captions_holds_the_models_image_vectors_and_searches_without_fusion(
        model, catalogue_dir, reference, tmp_path, monkeypatch):
    """build_index(captions=False) never captions (the slow part), stores encode_image's vectors,
    and composed search on it runs without caption fusion; the captioned builder refuses to add
    to it (and the reverse), naming the mismatch."""
    records = reference["records"]

    def no_captioning(*args, **kwargs):
        raise AssertionError("captioned while indexing without captions")

    with monkeypatch.context() as patch:
        patch.setattr(model, "encode_captions", no_captioning)
        report = build_index(model, records, tmp_path / "bare", progress=False, captions=False)
    assert report.added == N_ITEMS
    index = CatalogueIndex.open(tmp_path / "bare", read_only=True)
    assert index.captions is False and index.stats()["captions"] is False
    stored, _fusion = index.vectors(records[3].item_id)
    np.testing.assert_allclose(stored, reference["z"][3], atol=2e-3)
    index.close()
    with SearchPipeline.open(model, tmp_path / "bare", read_only=True) as search:
        assert search.get(records[0].item_id).fusion_caption == ""
        image, text = reference["images"][2], "is red with long sleeves"
        query = model.encode_composed([image], [text])[0].numpy()
        scores = (reference["z"] @ query).max(axis=1)  # max-sim alone: no fusion term
        hits = search.composed(image, text, top_k=5, fusion=True)
        assert_same_ranking(hits, reference["ids"], scores, 5)
        assert search.uses_fusion(True) is False
    with pytest.raises(ValueError, match="built without captions; this builder indexes with them"):
        build_index(model, records, tmp_path / "bare", progress=False)
    build_index(model, records[:3], tmp_path / "captioned", progress=False)
    with pytest.raises(ValueError, match="built with captions; this builder indexes without them"):
        build_index(model, records, tmp_path / "captioned", progress=False, captions=False)


def test_sharded_embedding_over_two_processes_then_indexing_stores_what_a_direct_build_stores(
        model, catalogue_dir, built, tmp_path):
    """embed_catalogue as process 0 and 1 of 2 splits the shards between them; the index built
    from the shards holds the vectors and captions of a direct build, and searches alike; a
    resumed process skips its written shards; missing shards, another list of items and another
    run's folder are errors that say so."""
    from unifashion.pipelines import CatalogueBuilder, embed_catalogue

    records = load_catalogue(catalogue_dir).item_records()
    folder = tmp_path / "embeddings"
    builder = CatalogueBuilder(model, batch_size=4, progress=False)
    first = embed_catalogue(builder, catalogue_dir, folder, shard_size=7, rank=0, world_size=2, progress=False)
    assert (first.embedded, first.shards, first.skipped_shards) == (7 + 7 + 2, 5, 0)  # shards 0, 2, 4
    with pytest.raises(FileNotFoundError, match=r"lack 2 of 5 shards \(shard-000001.npz, shard-000003.npz\)"):
        build_index(model, catalogue_dir, tmp_path / "early", embeddings=folder, progress=False)
    second = embed_catalogue(builder, catalogue_dir, folder, shard_size=7, rank=1, world_size=2, progress=False)
    assert second.embedded == 14
    (folder / "shard-000002.npz").unlink()
    again = embed_catalogue(builder, catalogue_dir, folder, shard_size=7, rank=0, world_size=2, progress=False)
    assert (again.embedded, again.skipped_shards) == (7, 2)  # only the lost shard is embedded again

    report = build_index(model, catalogue_dir, tmp_path / "index", embeddings=folder, progress=False)
    assert (report.added, report.total) == (N_ITEMS, N_ITEMS)
    direct = CatalogueIndex.open(built[0], read_only=True)
    with CatalogueIndex.open(tmp_path / "index", read_only=True) as index:
        assert index.ids() == direct.ids()
        for record in records[::5]:
            for ours, theirs in zip(index.vectors(record.item_id), direct.vectors(record.item_id), strict=True):
                np.testing.assert_allclose(ours, theirs, atol=2e-3)
            assert index.get(record.item_id).fusion_caption == direct.get(record.item_id).fusion_caption
        query = direct.vectors(records[4].item_id)[0][0]
        assert ([h.item_id for h in index.search(query, 5, fusion_weight=1.0)]
                == [h.item_id for h in direct.search(query, 5, fusion_weight=1.0)])
    direct.close()
    resumed = build_index(model, catalogue_dir, tmp_path / "index", embeddings=folder, progress=False)
    assert (resumed.added, resumed.skipped, resumed.total) == (0, N_ITEMS, N_ITEMS)  # held items are skipped

    with pytest.raises(ValueError, match="another list of items"):
        build_index(model, records[:10], tmp_path / "subset", embeddings=folder, progress=False)
    with pytest.raises(ValueError, match="holds embeddings of another run .*shard_size"):
        embed_catalogue(builder, catalogue_dir, folder, shard_size=8, progress=False)
    with pytest.raises(ValueError, match="made with captions; this builder indexes without"):
        build_index(model, catalogue_dir, tmp_path / "bare", embeddings=folder, captions=False, progress=False)


def test_cli_embed_then_index_from_the_embeddings(model, catalogue_dir, tmp_path, capsys):
    from unifashion.cli import main

    model_dir = tmp_path / "model"
    model.save_pretrained(model_dir)
    common = ["--catalogue", str(catalogue_dir), "--split", "test", "--model", str(model_dir), "--no-progress"]
    assert main(["embed", *common, "--out", str(tmp_path / "emb"), "--shard-size", "4", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "process 1/1: embedded" in out and "next: unifashion index" in out
    assert main(["index", *common, "--index", str(tmp_path / "index"), "--embeddings", str(tmp_path / "emb")]) == 0
    assert "indexed" in capsys.readouterr().out
    with CatalogueIndex.open(tmp_path / "index", read_only=True) as index:
        assert len(index) == len(load_catalogue(catalogue_dir).item_records("test"))
    assert main(["index", "--catalogue", str(catalogue_dir), "--model", str(model_dir), "--no-progress",
                 "--index", str(tmp_path / "other"), "--embeddings", str(tmp_path / "missing")]) == 2
    assert "no catalogue embeddings at" in capsys.readouterr().err


def test_embed_under_a_distributed_launcher_divides_the_shards_between_its_processes(model, catalogue_dir, tmp_path):
    """Two CPU processes under torch's launcher (what `accelerate launch` runs on GPUs): each
    embeds its own shards, and together they write every one."""
    import os
    import subprocess
    import sys

    model_dir = tmp_path / "model"
    model.save_pretrained(model_dir)
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
               "-m", "unifashion.cli", "embed", "--catalogue", str(catalogue_dir), "--out", str(tmp_path / "emb"),
               "--model", str(model_dir), "--shard-size", "4", "--no-progress", "--device", "cpu"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "process 1/2: embedded 16 items" in done.stdout and "process 2/2: embedded 14 items" in done.stdout
    assert len(list((tmp_path / "emb").glob("shard-*.npz"))) == 8
