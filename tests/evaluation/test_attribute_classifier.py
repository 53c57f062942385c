"""The attribute classifier that judges generated images: labels, training signal, save/load, accuracy."""

from __future__ import annotations

import pytest
import torch

from unifashion.data.synthetic.catalogue import CatalogueConfig, make_catalogue
from unifashion.data.synthetic.render import render_garment
from unifashion.evaluation.attribute_classifier import (
    NOT_APPLICABLE,
    AttributeClassifier,
    attribute_accuracy,
    train_attribute_classifier,
)


def test_labels_cover_categories_without_sleeves():
    model = AttributeClassifier()
    skirt = {"category": "skirt", "colour": "red", "lightness": "medium", "pattern": "solid", "length": "mini",
             "fit": "tight"}
    labels = model.labels_of(skirt)
    assert model.vocab["sleeve"][labels["sleeve"]] == NOT_APPLICABLE
    assert model.vocab["colour"][labels["colour"]] == "red"


def test_training_learns_colour_and_round_trips(tmp_path, single_thread):
    catalogue = make_catalogue(CatalogueConfig(n_items=240, seed=5, categories=("dress",)))
    images = [render_garment(it.attributes, 64, it.seed).image for it in catalogue.items]
    attrs = [it.attributes for it in catalogue.items]
    model = train_attribute_classifier(images[:200], attrs[:200], steps=60, batch_size=32, progress=False)
    acc = attribute_accuracy(model.predict(images[:200]), attrs[:200], names=("category", "colour"))
    assert acc["category"] == 100.0  # one category
    assert acc["colour"] > 100 / 15 * 2  # well above chance (6.7%) after 60 steps
    model.save(tmp_path)
    again = AttributeClassifier.load(tmp_path)
    x = model.to_tensor(images[200:204])
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(model(x).values(), again(x).values(), strict=True))


def test_accuracy_counts_each_attribute_and_all():
    predicted = [{"category": "dress", "colour": "red"}, {"category": "shirt", "colour": "red"}]
    expected = [{"category": "dress", "colour": "red"}, {"category": "dress", "colour": "red"}]
    assert attribute_accuracy(predicted, expected, names=("category", "colour")) == {
        "category": 50.0, "colour": 100.0, "all": 50.0}
    with pytest.raises(ValueError, match="2 predictions for 1"):
        attribute_accuracy(predicted, expected[:1])
