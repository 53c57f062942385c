"""Z_C (caption fusion) is made by one function, so training, evaluation, mining and the index
produce the same captions and vectors for the same image, and the index's fused score is
``UniFashion.score`` with caption embeddings."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from serving_helpers import build_discriminative_model, build_test_catalogue

from unifashion.data.synthetic.catalogue import load_catalogue
from unifashion.evaluation.runner import caption_images
from unifashion.pipelines import SearchPipeline, build_index
from unifashion.pipelines.mining import caption_collection
from unifashion.training.data import ImageBank
from unifashion.training.recipe import caption_bank


@pytest.fixture(scope="module", autouse=True)
def one_thread(single_thread_module):
    """One intra-op thread (see conftest.single_thread)."""


@pytest.fixture(scope="module")
def model():
    return build_discriminative_model(seed=3)


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    return load_catalogue(build_test_catalogue(tmp_path_factory.mktemp("catalogue"))).item_records()[:12]


@pytest.fixture(scope="module")
def index_dir(model, records, tmp_path_factory):
    folder = tmp_path_factory.mktemp("index") / "index"
    build_index(model, records, folder, batch_size=5, progress=False)
    return folder


def test_the_fusion_settings_come_from_the_model_config(model):
    assert model.config.fusion_caption_style == "detailed"
    pixel_values = model.processor.preprocess_images([torch.rand(3, 40, 36)])
    expected = model.caption(pixel_values=pixel_values, style="detailed",
                             max_new_tokens=model.config.fusion_caption_tokens)
    assert model.fusion_captions(pixel_values=pixel_values) == expected


def test_training_evaluation_mining_and_index_make_the_same_captions(model, records, index_dir):
    ids = [r.item_id for r in records]
    bank = ImageBank(records, model, batch_size=4, progress=False, with_generation_images=False)
    training = caption_bank(model, bank, batch_size=7, progress=False)
    with torch.no_grad():
        vision = model.vision(model.processor.preprocess_images([r.load_image() for r in records])).features
    evaluation = dict(zip(ids, caption_images(model, vision, None, bs=3), strict=True))
    mining, _ = caption_collection(model, records, batch_size=6, progress=False)
    with SearchPipeline.open(model, index_dir, read_only=True) as pipeline:
        index = {i: pipeline.index.get(i).fusion_caption for i in ids}
    assert all(index.values()), "the index stores every item's fusion caption"
    assert training == evaluation == mining == index


def test_the_index_fused_score_is_the_model_score(model, records, index_dir):
    images = [r.load_image() for r in records]
    z = model.encode_image(images)
    _, zc = model.encode_captions(images)
    reference = records[0].load_image()
    text = "is red with white stripes"
    e = model.encode_composed([reference], [text])
    expected = model.score(e, z, zc)[0].numpy()
    with SearchPipeline.open(model, index_dir, read_only=True) as pipeline:
        hits = pipeline.composed(reference, text, top_k=len(records))
    got = {h.item_id: h.score for h in hits}
    for i, record in enumerate(records):
        # The index stores fp16 vectors: unit vectors of dim 16 lose ~1e-3 in an inner product.
        assert got[record.item_id] == pytest.approx(float(expected[i]), abs=5e-3)
    order = [records[i].item_id for i in np.argsort(-expected, kind="stable")]
    assert [h.item_id for h in hits][:3] == order[:3]
