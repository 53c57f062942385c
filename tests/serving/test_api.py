"""The HTTP API contract, endpoint by endpoint: the happy path and bad input (corrupt image, wrong
content type, oversized upload, too many pixels, unknown item, top_k out of range, too many
generation steps, missing / wrong API key), with FastAPI's TestClient over the small random model
and an index of a 30-item embedded catalogue.

What the endpoints answer is checked against what the model computes directly (brute-force
max-sim over its embeddings of the catalogue, its captions, its generations), so that the tests
cover the service's plumbing end to end, not only its agreement with the pipeline it wraps.
"""

from __future__ import annotations

import io
from collections import Counter
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image
from serving_helpers import (
    N_ITEMS,
    assert_same_ranking,
    build_discriminative_model,
    build_test_catalogue,
    build_test_index,
    make_image,
    png_bytes,
)

from conftest import requires
from unifashion.data.synthetic.catalogue import load_catalogue
from unifashion.pipelines import GENERATED_STYLE, SearchPipeline
from unifashion.serving.app import ServiceSettings, create_app

API_KEY = "test-key"
SETTINGS = dict(api_key=API_KEY, max_upload_bytes=200_000, max_image_pixels=300 * 300, max_top_k=20,
                max_generation_steps=4, default_generation_steps=2, max_text_chars=200, model_name="small-random")
AUTH = {"X-API-Key": API_KEY}


@pytest.fixture(scope="module", autouse=True)
def one_thread(single_thread_module):
    """Every test and module fixture here on one thread (see conftest.single_thread)."""


@pytest.fixture(scope="module")
def model():
    return build_discriminative_model()


@pytest.fixture(scope="module")
def catalogue_dir(tmp_path_factory):
    return build_test_catalogue(tmp_path_factory.mktemp("api") / "catalogue")


@pytest.fixture(scope="module")
def pipeline(model, catalogue_dir, tmp_path_factory):
    index_dir = tmp_path_factory.mktemp("api-index") / "index"
    build_test_index(model, catalogue_dir, index_dir)
    with SearchPipeline.open(model, index_dir) as search:
        yield search


@pytest.fixture(scope="module")
def reference(model, catalogue_dir):
    """The brute-force side, from the model alone: its embeddings of every catalogue image
    (``z``), its fusion captions of them and their embeddings (``zc``)."""
    records = load_catalogue(catalogue_dir).item_records()
    images = [r.load_image() for r in records]
    with torch.no_grad():
        fusion_captions = model.fusion_captions(images)
        return {"ids": [r.item_id for r in records], "records": records, "images": images,
                "z": model.encode_image(images).numpy(), "fusion_captions": fusion_captions,
                "zc": model.encode_text(fusion_captions).numpy()}


def as_hits(results):
    """JSON results as objects with attributes, for assert_same_ranking."""
    return [SimpleNamespace(**r) for r in results]


@pytest.fixture(scope="module")
def client(pipeline):
    app = create_app(pipeline, ServiceSettings(**SETTINGS))
    with TestClient(app, base_url="http://localhost") as test_client:
        yield test_client


def image_part(data: bytes | None = None, name: str = "q.png", content_type: str = "image/png"):
    return (name, data if data is not None else png_bytes(), content_type)


def assert_error(response, status: int, code: str | None = None, mentions: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["status"] == status and error["message"]
    if code is not None:
        assert error["code"] == code, error
    if mentions is not None:
        assert mentions in error["message"], error
    return error


# -- service ---------------------------------------------------------------------------------


def test_health_reports_catalogue_and_limits(client, reference):
    body = client.get("/health").json()
    assert body["status"] == "ok" and body["items"] == N_ITEMS and body["model"] == "small-random"
    assert body["categories"] == dict(Counter(r.category for r in reference["records"]))
    assert body["writes_need_api_key"] is True and body["limits"]["max_top_k"] == 20
    assert body["caption_styles"] == ["short", "professional", "detailed"]


def test_openapi_lists_every_endpoint(client):
    spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    for path, method in [("/health", "get"), ("/search/text", "post"), ("/search/image-to-text", "post"),
                         ("/search/composed", "post"), ("/caption", "post"), ("/generate", "post"),
                         ("/items", "post"), ("/items/{item_id}", "get"), ("/items/{item_id}", "delete"),
                         ("/items/{item_id}/image", "get")]:
        assert method in paths[path], (path, method)
    assert "multipart/form-data" in paths["/search/composed"]["post"]["requestBody"]["content"]
    assert "413" in paths["/search/composed"]["post"]["responses"]


def test_web_page_is_served(client):
    response = client.get("/")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    for element_id in ("text-query", "composed-image", "composed-text", "results", "caption-btn", "generate-btn"):
        assert f'id="{element_id}"' in response.text
    assert "http://" not in response.text and "https://" not in response.text  # nothing loaded from elsewhere


def test_unknown_route_is_a_json_404(client):
    assert_error(client.get("/nowhere"), 404, "not_found")


def test_wrong_method_is_a_json_405_listing_the_paths_methods(client):
    # The routes live in routers included into the app: Allow lists every method of the path.
    assert_error(client.put("/items/some-id"), 405, "method_not_allowed")
    assert client.put("/items/some-id").headers["allow"] == "DELETE, GET"
    assert client.post("/health").headers["allow"] == "GET"


# -- text search -----------------------------------------------------------------------------


def test_text_search(client, model, reference):
    response = client.post("/search/text", json={"text": "a red floral dress", "top_k": 5})
    assert response.status_code == 200
    body = response.json()
    assert body["query"] == {"text": "a red floral dress", "top_k": 5, "category": None}
    with torch.no_grad():
        query = model.encode_text(["a red floral dress"])[0].numpy()
    maxsim = (reference["z"] @ query).max(axis=1)  # each item's best query-token match
    assert_same_ranking(as_hits(body["results"]), reference["ids"], maxsim, 5)
    first = body["results"][0]
    assert first["maxsim"] == pytest.approx(first["score"]) and first["fusion"] == 0
    record = reference["records"][reference["ids"].index(first["item_id"])]
    assert first["item"]["captions"] == record.captions and first["item"]["category"] == record.category
    assert first["item"]["fusion_caption"] == reference["fusion_captions"][reference["ids"].index(first["item_id"])]
    assert "image_path" not in first["item"]  # server paths stay on the server
    image = client.get(first["item"]["image_url"])
    assert image.status_code == 200 and image.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(image.content)).size == (128, 128)


def test_text_search_category(client, reference):
    category = reference["records"][0].category
    body = client.post("/search/text", json={"text": "a garment", "top_k": 20, "category": category}).json()
    expected = {r.item_id for r in reference["records"] if r.category == category}
    assert {r["item_id"] for r in body["results"]} == expected and len(expected) < N_ITEMS
    assert_error(client.post("/search/text", json={"text": "x", "category": "spacesuit"}), 422, "invalid_value",
                 "unknown category")


@pytest.mark.parametrize("top_k", [0, -1, 21])
def test_text_search_top_k_out_of_range(client, top_k):
    error = assert_error(client.post("/search/text", json={"text": "a dress", "top_k": top_k}), 422)
    assert "top_k" in error["message"]


def test_text_search_bad_bodies(client):
    assert_error(client.post("/search/text", content=b"a dress", headers={"Content-Type": "text/plain"}), 415,
                 "unsupported_media_type", "application/json")
    assert_error(client.post("/search/text", data={"text": "a dress"}), 415)  # a form instead of JSON
    assert_error(client.post("/search/text", json={"top_k": 3}), 422, "invalid_request", "text")
    assert_error(client.post("/search/text", json={"text": "   "}), 422, "text_missing")
    assert_error(client.post("/search/text", json={"text": "a" * 201}), 422, "text_too_long")
    assert_error(client.post("/search/text", json={"text": "a", "top_k": "many"}), 422, "invalid_request")
    assert_error(client.post("/search/text", content=b"{not json", headers={"Content-Type": "application/json"}),
                 422)


# -- image uploads ---------------------------------------------------------------------------


def test_image_to_text(client, model, reference):
    response = client.post("/search/image-to-text", files={"image": image_part()}, data={"top_k": "4"})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    # Every catalogue text (stored captions and the model's fusion captions), once, with its sources.
    sources: dict[str, set] = {}
    for record, generated in zip(reference["records"], reference["fusion_captions"], strict=True):
        for style, text in [*record.captions.items(), (GENERATED_STYLE, generated)]:
            sources.setdefault(text, set()).add((record.item_id, style))
    texts = list(sources)
    with torch.no_grad():
        query = model.encode_image([make_image(0)])[0].numpy()
        maxsim = (model.encode_text(texts).numpy() @ query.T).max(axis=1)
    hits = [SimpleNamespace(item_id=r["text"], score=r["score"], rank=r["rank"]) for r in results]
    assert_same_ranking(hits, texts, maxsim, 4)
    for result in results:
        assert {(s["item_id"], s["style"]) for s in result["sources"]} == sources[result["text"]]


@pytest.mark.parametrize("fusion", [True, False])
def test_composed_search_with_and_without_fusion(client, model, reference, fusion):
    data = {"text": "is blue and has no sleeves", "top_k": "6", "fusion": str(fusion).lower()}
    body = client.post("/search/composed", files={"image": image_part()}, data=data).json()
    assert body["query"]["fusion"] is fusion
    with torch.no_grad():
        query = model.encode_composed([make_image(0)], [data["text"]])[0].numpy()
    maxsim = (reference["z"] @ query).max(axis=1)
    fused = reference["zc"] @ query  # <e, Z_C>: the query against each item's fusion caption
    assert_same_ranking(as_hits(body["results"]), reference["ids"], maxsim + fused if fusion else maxsim, 6)
    for hit in body["results"]:
        position = reference["ids"].index(hit["item_id"])
        assert hit["maxsim"] == pytest.approx(maxsim[position], abs=5e-3)
        assert hit["fusion"] == (pytest.approx(fused[position], abs=5e-3) if fusion else 0)


@pytest.mark.parametrize("style", ["short", "detailed"])
def test_caption_is_the_models_caption(client, model, style):
    response = client.post("/caption", files={"image": image_part(png_bytes(4))}, data={"style": style})
    assert response.status_code == 200, response.text
    with torch.no_grad():
        expected = model.caption([make_image(4)], style=style)[0]
    assert response.json() == {"caption": expected, "style": style}


def test_caption_bad_style(client):
    assert_error(client.post("/caption", files={"image": image_part()}, data={"style": "poetic"}), 422,
                 "invalid_request", "style")


@pytest.mark.parametrize("endpoint,data", [("/search/image-to-text", {}), ("/search/composed", {"text": "is red"}),
                                           ("/caption", {})])
def test_bad_uploads(client, endpoint, data):
    # Corrupt image: the error names the part, the file and the problem.
    assert_error(client.post(endpoint, files={"image": image_part(b"not an image at all", "bad.png")}, data=data),
                 400, "invalid_image", "'image' (bad.png) is not a readable image")
    truncated = png_bytes(1)[:200]
    assert_error(client.post(endpoint, files={"image": image_part(truncated, "cut.png")}, data=data), 400,
                 "invalid_image")
    assert_error(client.post(endpoint, files={"image": image_part(b"", "empty.png")}, data=data), 400,
                 "invalid_image")
    # A part declared as something other than an image; a request that is not multipart.
    assert_error(client.post(endpoint, files={"image": ("q.txt", b"hello", "text/plain")}, data=data), 415,
                 "unsupported_media_type", "text/plain")
    assert_error(client.post(endpoint, json={"image": "aGVsbG8=", **data}), 415, "unsupported_media_type")
    # Too many bytes (refused before parsing), too many pixels (refused before decoding).
    noise = png_bytes(2, size=(300, 300))
    assert len(noise) > SETTINGS["max_upload_bytes"]
    assert_error(client.post(endpoint, files={"image": image_part(noise)}, data=data), 413, "upload_too_large")
    big = io.BytesIO()
    Image.new("RGB", (400, 400), "white").save(big, format="PNG")  # small file, 160,000 pixels
    assert_error(client.post(endpoint, files={"image": image_part(big.getvalue())}, data=data), 413,
                 "image_too_large", "400 x 400")
    # The image part missing.
    assert_error(client.post(endpoint, data={**data, "top_k": "3"}, files={"other": image_part()}), 422)


def test_undeclared_image_type_is_decoded(client):
    response = client.post("/caption", files={"image": ("q", png_bytes(), "application/octet-stream")})
    assert response.status_code == 200, response.text


def test_chunked_upload_over_the_limit_is_refused(client):
    def chunks():
        for _ in range(30):
            yield b"x" * 10_000

    response = client.post("/caption", content=chunks(), headers={"Content-Type": "multipart/form-data; boundary=b"})
    assert_error(response, 413, "upload_too_large")


def test_image_to_text_top_k_out_of_range(client):
    assert_error(client.post("/search/image-to-text", files={"image": image_part()}, data={"top_k": "21"}), 422,
                 "top_k_out_of_range")


# -- generation ------------------------------------------------------------------------------


def test_generate_returns_the_models_image_as_png(client, model):
    request = {"text": "a red dress", "steps": "2", "seed": "5", "guidance": "3.0", "scheduler": "dpmsolver++"}
    first = client.post("/generate", data=request)
    assert first.status_code == 200, first.text
    assert first.headers["content-type"] == "image/png" and first.headers["x-seed"] == "5"
    with torch.no_grad():
        pixels = model.generate(["a red dress"], num_inference_steps=2, scheduler="dpmsolver++", guidance_scale=3.0,
                                generator=torch.Generator().manual_seed(5))
    expected = np.asarray(model.processor.postprocess_images(pixels)[0])
    assert expected.shape == (32, 32, 3) and np.ptp(expected) > 0
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(first.content))), expected)  # PNG is lossless
    # Defaults (steps from the settings, here 2): the same seed gives the same image.
    default = client.post("/generate", data={"text": "a red dress", "seed": "5"})
    assert client.post("/generate", data={"text": "a red dress", "seed": "5"}).content == default.content
    composed = client.post("/generate", data={"text": "is shorter", "steps": "1"}, files={"image": image_part()})
    assert composed.status_code == 200 and int(composed.headers["x-seed"]) >= 0
    mask = io.BytesIO()
    Image.new("L", (40, 36), 255).save(mask, format="PNG")
    tryon = client.post("/generate", data={"text": "a dress", "steps": "1"},
                        files={"person": image_part(png_bytes(3)), "mask": image_part(mask.getvalue())})
    assert tryon.status_code == 200, tryon.text


def test_generate_bad_input(client):
    assert_error(client.post("/generate", data={"text": "a dress", "steps": "5"}), 422, "too_many_steps", "4")
    assert_error(client.post("/generate", data={"text": "a dress", "steps": "0"}), 422, "invalid_steps")
    assert_error(client.post("/generate", data={"steps": "1"}), 422, "text_missing")
    assert_error(client.post("/generate", data={"text": "a dress", "scheduler": "ddim"}), 422, "invalid_request")
    assert_error(client.post("/generate", data={"text": "a dress", "steps": "1"},
                             files={"mask": image_part()}), 422, "invalid_value", "person")
    assert_error(client.post("/generate", json={"text": "a dress"}), 415)
    assert_error(client.post("/generate", data={"text": "a dress"}, files={"image": image_part(b"junk")}), 400,
                 "invalid_image")


# -- items -----------------------------------------------------------------------------------


def test_get_item_and_unknown_ids(client, pipeline):
    item_id = pipeline.index.ids()[0]
    body = client.get(f"/items/{item_id}").json()
    assert body["item_id"] == item_id and body["image_url"] == f"/items/{item_id}/image"
    assert_error(client.get("/items/no-such-item"), 404, "unknown_item", "no-such-item")
    assert_error(client.get("/items/no-such-item/image"), 404, "unknown_item")
    assert_error(client.delete("/items/no-such-item", headers=AUTH), 404, "unknown_item")


def test_writes_need_the_api_key(client):
    files = {"image": image_part()}
    assert_error(client.post("/items", data={"item_id": "k1"}, files=files), 401, "api_key_missing")
    assert_error(client.post("/items", data={"item_id": "k1"}, files=files, headers={"X-API-Key": "nope"}), 403,
                 "api_key_wrong")
    assert_error(client.delete("/items/k1"), 401)
    assert_error(client.delete("/items/k1", headers={"Authorization": "Bearer nope"}), 403)
    assert client.get("/items/k1").status_code == 404  # nothing was added


def test_add_search_and_delete_an_item(client, pipeline, model):
    image = png_bytes(21, size=(48, 64))
    response = client.post("/items", headers=AUTH, files={"image": image_part(image, "new.png")},
                           data={"item_id": "api-item-1", "category": "dress", "caption": "a shiny new dress",
                                 "attributes": '{"colour": "teal"}', "captions": '{"detailed": "a teal dress"}'})
    assert response.status_code == 201, response.text
    item = response.json()
    assert item["item_id"] == "api-item-1" and item["category"] == "dress"
    assert item["captions"] == {"short": "a shiny new dress", "detailed": "a teal dress"}
    assert item["attributes"] == {"colour": "teal"}
    with torch.no_grad():
        assert item["fusion_caption"] == model.fusion_captions([Image.open(io.BytesIO(image)).convert("RGB")])[0]
    stored = client.get(item["image_url"])
    assert stored.status_code == 200
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(stored.content))), np.asarray(Image.open(io.BytesIO(image))))
    assert client.get("/health").json()["items"] == N_ITEMS + 1
    hits = client.post("/search/text", json={"text": "a shiny new dress", "top_k": 20}).json()["results"]
    assert len(hits) == 20  # the index now holds 31 items
    texts = client.post("/search/image-to-text", files={"image": image_part(image)}, data={"top_k": "20"})
    assert texts.status_code == 200  # the new item's texts join the ranked texts:
    assert any(s.item_id == "api-item-1" for h in pipeline.image_to_texts(image, top_k=1000) for s in h.sources)

    duplicate = client.post("/items", headers=AUTH, files={"image": image_part()}, data={"item_id": "api-item-1"})
    assert_error(duplicate, 409, "duplicate_item")
    replaced = client.post("/items", headers={"Authorization": f"Bearer {API_KEY}"}, files={"image": image_part()},
                           data={"item_id": "api-item-1", "category": "skirt", "replace": "true"})
    assert replaced.status_code == 201 and replaced.json()["category"] == "skirt"

    deleted = client.delete("/items/api-item-1", headers=AUTH)
    assert deleted.status_code == 200 and deleted.json() == {"deleted": "api-item-1"}
    assert_error(client.get("/items/api-item-1"), 404)
    assert_error(client.get(item["image_url"]), 404)
    assert client.get("/health").json()["items"] == N_ITEMS


def test_add_item_bad_input(client):
    def add(data, files=None, headers=AUTH):
        return client.post("/items", headers=headers, data=data, files=files or {"image": image_part()})

    assert_error(add({"item_id": "../etc/passwd"}), 422, "invalid_item_id")
    assert_error(add({"item_id": "ok-id", "attributes": "[1, 2]"}), 422, "invalid_json", "attributes")
    assert_error(add({"item_id": "ok-id", "captions": "{bad"}), 422, "invalid_json", "captions")
    assert_error(add({"item_id": "ok-id"}, files={"image": image_part(b"garbage")}), 400, "invalid_image")
    assert_error(add({"item_id": "ok-id"}, files={"image": ("a.json", b"{}", "application/json")}), 415)
    assert_error(add({}), 422, "invalid_request", "item_id")
    assert_error(client.post("/items", headers=AUTH, json={"item_id": "ok-id"}), 415)
    assert client.get("/items/ok-id").status_code == 404


def test_writes_are_open_without_a_configured_key(pipeline):
    app = create_app(pipeline, ServiceSettings(max_top_k=5))
    with TestClient(app, base_url="http://localhost") as open_client:
        response = open_client.post("/items", files={"image": image_part()}, data={"item_id": "open-1"})
        assert response.status_code == 201, response.text
        assert open_client.delete("/items/open-1").status_code == 200
        assert open_client.get("/health").json()["writes_need_api_key"] is False


def test_settings_are_checked():
    with pytest.raises(ValueError, match="max_top_k"):
        ServiceSettings(max_top_k=0)
    with pytest.raises(ValueError, match="default_generation_steps"):
        ServiceSettings(max_generation_steps=2, default_generation_steps=3)


@requires("milvus")
def test_the_service_over_a_milvus_backed_index(tmp_path):
    """The same API over an index in Milvus (milvus-lite in the index folder): health, search,
    adding (the image kept in the folder), replacing and deleting an item."""
    from unifashion.index import MilvusBackend
    from unifashion.pipelines import build_index

    model = build_discriminative_model()
    build_index(model, build_test_catalogue(tmp_path / "catalogue"), tmp_path / "index", batch_size=16,
                progress=False, backend=MilvusBackend(index_type="FLAT"))
    with SearchPipeline.open(model, tmp_path / "index") as pipeline, TestClient(
            create_app(pipeline, ServiceSettings(**SETTINGS)), base_url="http://localhost") as client:
        assert client.get("/health").json()["items"] == N_ITEMS
        image = png_bytes(21, size=(48, 64))
        added = client.post("/items", headers=AUTH, files={"image": image_part(image, "new.png")},
                            data={"item_id": "milvus-item", "category": "dress", "caption": "a shiny new dress"})
        assert added.status_code == 201, added.text
        assert client.get(added.json()["image_url"]).status_code == 200
        assert client.get("/health").json()["items"] == N_ITEMS + 1
        composed = client.post("/search/composed", files={"image": image_part(image)},
                               data={"text": "the same", "top_k": "20"})
        assert composed.status_code == 200
        expected = pipeline.composed(image, "the same", top_k=20)
        assert [h["item_id"] for h in composed.json()["results"]] == [h.item_id for h in expected]
        found = client.post("/search/text", json={"text": "a shiny new dress", "top_k": 20}).json()["results"]
        assert len(found) == 20
        everything = pipeline.text_to_images("a shiny new dress", top_k=N_ITEMS + 1)
        assert "milvus-item" in [h.item_id for h in everything] and len(everything) == N_ITEMS + 1
        replaced = client.post("/items", headers=AUTH, files={"image": image_part()},
                               data={"item_id": "milvus-item", "category": "skirt", "replace": "true"})
        assert replaced.status_code == 201 and replaced.json()["category"] == "skirt"
        assert client.get("/health").json()["items"] == N_ITEMS + 1
        assert client.delete("/items/milvus-item", headers=AUTH).status_code == 200
        assert_error(client.get("/items/milvus-item"), 404)
        assert client.get("/health").json()["items"] == N_ITEMS
