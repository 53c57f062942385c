"""Design / try-on on a person image through the library, the CLI and the HTTP service."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from conftest import build_small_model
from unifashion.cli import main
from unifashion.pipelines import SearchPipeline
from unifashion.pipelines.tryon import design, generate_on_person, try_on
from unifashion.serving.app import ServiceSettings, create_app

PERSON_SIZE = (36, 40)  # not the model's 32 x 32: the result must come back at this size


@pytest.fixture(scope="module", autouse=True)
def one_thread(single_thread_module):
    """Every test and module fixture here on one thread (see conftest.single_thread)."""


@pytest.fixture(scope="module")
def model():
    return build_small_model().eval()


def person_and_mask():
    rng = np.random.default_rng(0)
    person = Image.fromarray(rng.integers(0, 256, (PERSON_SIZE[1], PERSON_SIZE[0], 3), dtype=np.uint8))
    mask = np.zeros((PERSON_SIZE[1], PERSON_SIZE[0]), dtype=np.uint8)
    mask[10:30, 8:28] = 255
    return person, Image.fromarray(mask)


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_pixels_outside_the_mask_are_the_persons(model):
    person, mask = person_and_mask()
    sketch = Image.new("L", PERSON_SIZE, 0)
    outside = np.asarray(mask) < 128
    designed = design(model, person, mask, sketch, "a red dress", steps=2, generator=torch.Generator().manual_seed(0))
    worn = try_on(model, person, mask, Image.new("RGB", (20, 24), (200, 20, 20)), steps=2)
    for image in (designed, worn):
        assert image.size == PERSON_SIZE
        assert (np.asarray(image)[outside] == np.asarray(person)[outside]).all()
        assert (np.asarray(image)[~outside] != np.asarray(person)[~outside]).any()  # something was drawn


def test_model_level_generate_keeps_outside_pixels_exactly(model):
    # The same promise one level down, at the model's own size (what the CLI and API build on).
    person = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    mask = torch.zeros(2, 1, 32, 32)
    mask[:, :, 8:24, 8:24] = 1
    out = model.generate(["a dress", "a shirt"], mask=mask, sketch=torch.zeros(2, 1, 32, 32), masked_image=person,
                         num_inference_steps=2, generator=torch.Generator().manual_seed(0))
    keep = mask.expand_as(out) < 0.5
    assert torch.equal(out[keep], person[keep])


def test_bad_person_inputs_are_named(model):
    person, mask = person_and_mask()
    with pytest.raises(ValueError, match="the mask is 20x20 but the person image is 36x40"):
        generate_on_person(model, person, mask.resize((20, 20)), text="a dress", steps=1)
    with pytest.raises(ValueError, match="the sketch is 10x10"):
        generate_on_person(model, person, mask, text="a dress", sketch=Image.new("L", (10, 10)), steps=1)
    with pytest.raises(ValueError, match="the mask is empty"):
        generate_on_person(model, person, Image.new("L", PERSON_SIZE, 0), text="a dress", steps=1)
    with pytest.raises(ValueError, match="got neither"):
        generate_on_person(model, person, mask, steps=1)


@pytest.fixture(scope="module")
def saved_model(model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("tryon-model")
    model.save_pretrained(folder)
    return folder


def test_cli_generate_on_person_and_its_errors(saved_model, tmp_path, capsys):
    person, mask = person_and_mask()
    person.save(tmp_path / "person.png")
    mask.save(tmp_path / "mask.png")
    mask.resize((20, 20)).save(tmp_path / "small_mask.png")
    Image.new("RGB", (20, 24), (0, 0, 200)).save(tmp_path / "garment.png")
    out = tmp_path / "out.png"
    args = ["generate", "--person", str(tmp_path / "person.png"), "--mask", str(tmp_path / "mask.png"),
            "--garment", str(tmp_path / "garment.png"), "--steps", "1", "--model", str(saved_model), "--out", str(out)]
    assert main(args) == 0
    result = np.asarray(Image.open(out))
    outside = np.asarray(mask) < 128
    assert result.shape[:2] == (PERSON_SIZE[1], PERSON_SIZE[0])
    assert (result[outside] == np.asarray(person)[outside]).all()

    missing = [*args[:2], str(tmp_path / "nobody.png"), *args[3:]]
    assert main(missing) == 2
    assert "nobody.png" in capsys.readouterr().err
    mismatch = [*args[:4], str(tmp_path / "small_mask.png"), *args[5:]]
    assert main(mismatch) == 2
    assert "the mask is 20x20 but the person image is 36x40" in capsys.readouterr().err


def test_api_try_on_and_design_multipart(model):
    person, mask = person_and_mask()
    settings = ServiceSettings(max_generation_steps=4, default_generation_steps=2, model_name="small-random")
    with TestClient(create_app(SearchPipeline(model, None), settings), base_url="http://localhost") as client:
        files = {"person": ("p.png", png(person), "image/png"), "mask": ("m.png", png(mask), "image/png"),
                 "garment": ("g.png", png(Image.new("RGB", (20, 24), (0, 160, 0))), "image/png")}
        response = client.post("/generate", data={"steps": "1", "seed": "3"}, files=files)
        assert response.status_code == 200, response.text
        result = np.asarray(Image.open(io.BytesIO(response.content)))
        outside = np.asarray(mask) < 128
        assert (result[outside] == np.asarray(person)[outside]).all()

        files = {"person": files["person"], "mask": files["mask"],
                 "sketch": ("s.png", png(Image.new("L", PERSON_SIZE, 0)), "image/png")}
        response = client.post("/generate", data={"text": "a red dress", "steps": "1"}, files=files)
        assert response.status_code == 200, response.text

        files["mask"] = ("m.png", png(mask.resize((20, 20))), "image/png")
        response = client.post("/generate", data={"text": "a red dress", "steps": "1"}, files=files)
        assert response.status_code == 422
        assert "the mask is 20x20 but the person image is 36x40" in response.json()["error"]["message"]
