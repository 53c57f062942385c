"""The service under hostile input and load: bounded work per image, admission control (a bounded
queue with 503 + Retry-After), slow bodies, generation in its own lane, browser safety (Origin /
Sec-Fetch-Site / Host), JSON errors without internals, limits on every free-text field, and a schema
that matches the service. Small random model, a 30-item index (serving_helpers)."""

from __future__ import annotations

import io
import json
import os
import select
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from serving_helpers import build_discriminative_model, build_test_catalogue, build_test_index, png_bytes

from unifashion.pipelines import SearchPipeline
from unifashion.serving.app import ServiceSettings, create_app

BASE_URL = "http://localhost"
SETTINGS = dict(max_upload_bytes=200_000, max_image_pixels=300 * 300, max_image_side=1024, max_top_k=20,
                max_generation_steps=400, default_generation_steps=2, max_text_chars=200, working_image_side=256,
                model_name="small-random")


@pytest.fixture(scope="module", autouse=True)
def one_thread(single_thread_module):
    """Every test and module fixture here on one thread (see conftest.single_thread)."""


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    model = build_discriminative_model()
    root = tmp_path_factory.mktemp("hardening")
    build_test_index(model, build_test_catalogue(root / "catalogue"), root / "index")
    with SearchPipeline.open(model, root / "index") as search:
        yield search


def make_client(pipeline, **settings) -> TestClient:
    app = create_app(pipeline, ServiceSettings(**{**SETTINGS, **settings}))
    return TestClient(app, base_url=BASE_URL, raise_server_exceptions=False)


@pytest.fixture(scope="module")
def client(pipeline):
    with make_client(pipeline) as test_client:
        yield test_client


def encoded(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def assert_error(response, status: int, code: str | None = None, mentions: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json"), response.headers
    error = response.json()["error"]
    assert error["status"] == status and error["message"]
    if code is not None:
        assert error["code"] == code, error
    if mentions is not None:
        assert mentions in error["message"], error
    return error


IMAGE_ENDPOINTS = [("/search/image-to-text", {}), ("/search/composed", {"text": "is red"}), ("/caption", {}),
                   ("/generate", {"text": "a dress", "steps": "1"}), ("/items", {"item_id": "thin-1"})]


# -- 1. bounded work per image ---------------------------------------------------------------


@pytest.mark.parametrize("endpoint,data", IMAGE_ENDPOINTS)
@pytest.mark.parametrize("size", [(1, 60_000), (8, 11_000), (60_000, 1)])
def test_thin_images_are_refused_before_decoding(client, endpoint, data, size):
    # Under the pixel limit (90,000) but far too thin: the resize would need a buffer that grows
    # with the long side (a 1 x 16,777,216 PNG of 33 KB asked torch for 25.8 GB).
    thin = encoded(Image.new("RGB", size, "white"))
    assert len(thin) < 20_000
    error = assert_error(client.post(endpoint, files={"image": ("thin.png", thin, "image/png")}, data=data), 413,
                         "image_too_large")
    assert f"{size[0]} x {size[1]}" in error["message"]


def test_long_side_is_limited(client):
    wide = encoded(Image.new("RGB", (1100, 80), "white"))  # 88,000 pixels, aspect 13.75 > 8
    assert_error(client.post("/caption", files={"image": ("w.png", wide, "image/png")}), 413, "image_too_large")
    with make_client(client.app.state.pipeline, max_aspect_ratio=20) as loose:
        assert_error(loose.post("/caption", files={"image": ("w.png", wide, "image/png")}), 413, "image_too_large",
                     "1024")


@pytest.mark.parametrize("fmt", ["BMP", "TIFF", "GIF", "PPM"])
def test_only_documented_formats_are_decoded(client, fmt):
    data = encoded(Image.new("RGB", (40, 40), "red"), fmt)
    error = assert_error(client.post("/caption", files={"image": ("q.img", data, "application/octet-stream")}), 415,
                         "unsupported_image_format")
    assert "PNG, JPEG, WEBP" in error["message"]


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_documented_formats_are_decoded(client, fmt):
    data = encoded(Image.new("RGB", (40, 40), "red"), fmt)
    assert client.post("/caption", files={"image": ("q", data, "application/octet-stream")}).status_code == 200


def test_images_reach_the_model_at_the_working_size(pipeline):
    from unifashion.serving.limits import ImageLimits, decode_image

    limits = ImageLimits(max_pixels=2000 * 2000, max_side=2000, max_aspect_ratio=8, working_side=256)
    photo = Image.effect_mandelbrot((1600, 1200), (-2, -1.2, 1, 1.2), 60).convert("RGB")
    for fmt in ("JPEG", "PNG", "WEBP"):
        decoded = decode_image(encoded(photo, fmt), "'image'", limits)
        assert decoded.mode == "RGB" and decoded.size == (256, 192), (fmt, decoded.size)
    # JPEG is decoded at reduced scale (the DCT draft); the result still matches the full decode.
    full = Image.open(io.BytesIO(encoded(photo, "JPEG"))).convert("RGB")
    full.thumbnail((256, 256))
    drafted = decode_image(encoded(photo, "JPEG"), "'image'", limits)
    difference = sum(abs(a - b) for a, b in zip(full.tobytes(), drafted.tobytes(), strict=True)) / len(full.tobytes())
    assert difference < 12


def test_peak_memory_of_decoding_stays_within_the_stated_bound(tmp_path):
    """Decoding the largest PNG the limits allow, in a fresh process: the peak RSS it adds stays
    under ImageLimits.peak_decode_bytes (what the README and /health state)."""
    side = 4096
    path = tmp_path / "big.png"
    picture = Image.new("RGB", (side, side), "white")  # decoded size is what counts, not the file's
    picture.paste(Image.effect_noise((256, 256), 64).convert("RGB"), (100, 100))
    picture.save(path)
    small = tmp_path / "small.png"
    Image.new("RGB", (8, 8)).save(small)
    # VmHWM, the peak RSS of this process (ru_maxrss would carry the forking parent's over exec).
    script = f"""
from unifashion.serving.limits import ImageLimits, decode_image

def peak():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024

limits = ImageLimits(max_pixels={side * side}, max_side={side}, max_aspect_ratio=8, working_side=1024)
decode_image(open({str(small)!r}, "rb").read(), "'warm-up'", limits)  # plugins loaded before measuring
data = open({str(path)!r}, "rb").read()
before = peak()
image = decode_image(data, "'image'", limits)
print(peak() - before, limits.peak_decode_bytes, image.size)
"""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True)
    grown, bound, size = out.stdout.split(maxsplit=2)
    assert size.strip() == "(1024, 1024)"
    assert 4 * side * side // 2 < int(grown) <= int(bound), out.stdout  # measured, and within the bound
    assert int(bound) <= 10 * side * side  # the bound itself is a few bytes per pixel, not gigabytes


# -- 2. admission control: a bounded queue in front of the model -----------------------------


def _post_caption(client, results, index):
    results[index] = client.post("/caption", files={"image": ("q.png", png_bytes(index), "image/png")})


def test_a_full_queue_answers_503_with_retry_after(pipeline):
    with make_client(pipeline, max_waiting_images=2, queue_timeout_s=20.0) as busy:
        results: dict[int, object] = {}
        with pipeline.lock:  # the model is busy: requests queue up behind it
            waiting = [threading.Thread(target=_post_caption, args=(busy, results, i)) for i in range(2)]
            for thread in waiting:
                thread.start()
            deadline = time.monotonic() + 10
            while busy.app.state.admission.images_waiting < 2 and time.monotonic() < deadline:
                time.sleep(0.01)
            started = time.monotonic()
            third = threading.Thread(target=_post_caption, args=(busy, results, 2))
            third.start()
            third.join(5)
            assert not third.is_alive(), "the third request waited for the model instead of being refused"
            assert time.monotonic() - started < 2  # refused at once, not after a wait
            refused = results[2]
        for thread in waiting:
            thread.join(30)
    error = assert_error(refused, 503, "busy")
    assert int(refused.headers["retry-after"]) >= 1
    assert "2" in error["message"]
    assert [results[i].status_code for i in range(2)] == [200, 200]


def test_a_request_waits_for_the_model_at_most_queue_timeout(pipeline):
    answers: dict[str, object] = {}
    with make_client(pipeline, queue_timeout_s=0.3) as impatient:
        request = threading.Thread(target=lambda: answers.update(
            response=impatient.post("/search/text", json={"text": "a red dress"})))
        with pipeline.lock:
            started = time.monotonic()
            request.start()
            request.join(5)
            waited = time.monotonic() - started
        request.join(30)
    assert waited < 5, "the request waited for the model without a time limit"
    response = answers["response"]
    assert_error(response, 503, "busy", "0.3")
    assert "retry-after" in response.headers
    assert waited < 5


# -- 3. slow clients -------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def live_server(pipeline):
    """uvicorn on a free loopback port with short body timeouts and a small body budget."""
    import uvicorn

    from unifashion.serving.app import uvicorn_options

    settings = ServiceSettings(**{**SETTINGS, "body_timeout_s": 1.5, "max_buffered_bytes": 300_000})
    port = _free_port()
    config = uvicorn.Config(create_app(pipeline, settings), host="127.0.0.1", port=port, log_level="warning",
                            **uvicorn_options(settings))
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.02)
    yield port
    server.should_exit = True
    thread.join(10)


def _stalled_upload(port: int, declared: int, sent: int) -> socket.socket:
    connection = socket.create_connection(("127.0.0.1", port), timeout=5)
    connection.sendall(f"POST /caption HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: multipart/form-data; "
                       f"boundary=b\r\nContent-Length: {declared}\r\n\r\n".encode() + b"x" * sent)
    return connection


def _read_status(connection: socket.socket) -> int:
    reply = connection.recv(4096)
    assert reply, "the server closed the connection without an answer"
    return int(reply.split(b" ", 2)[1])


def test_a_stalled_upload_is_cut_off(live_server):
    connection = _stalled_upload(live_server, declared=150_000, sent=1_000)
    started = time.monotonic()
    with connection:
        assert _read_status(connection) == 408
    assert time.monotonic() - started < 5


def test_stalled_uploads_cannot_hold_more_than_the_body_budget(live_server):
    first = _stalled_upload(live_server, declared=190_000, sent=100)
    time.sleep(0.1)
    second = _stalled_upload(live_server, declared=190_000, sent=100)
    with first, second:
        assert _read_status(second) == 503  # 380,000 bytes would exceed the 300,000-byte budget
        readable, _, _ = select.select([first], [], [], 0)
        assert not readable, "the first upload was answered before the second was refused"
        assert _read_status(first) == 408  # then the first one's body timeout


# -- 4. nobody holds the model for everyone --------------------------------------------------


def test_text_search_does_not_wait_behind_a_generation(client):
    generation: dict[str, object] = {}

    def generate():
        started = time.monotonic()
        generation["response"] = client.post("/generate", data={"text": "a red dress", "steps": "400"})
        generation["seconds"] = time.monotonic() - started

    thread = threading.Thread(target=generate)
    thread.start()
    time.sleep(0.3)
    started = time.monotonic()
    response = client.post("/search/text", json={"text": "a blue shirt"})
    latency = time.monotonic() - started
    still_generating = thread.is_alive()
    thread.join(60)
    assert response.status_code == 200 and generation["response"].status_code == 200
    assert still_generating, f"the generation ended first ({generation['seconds']:.2f} s): make it longer"
    assert latency < 0.5, f"text search took {latency:.2f} s during a generation of {generation['seconds']:.2f} s"


def test_the_generation_lane_shares_the_weights(client, pipeline):
    lane = pipeline._generation_model
    assert lane is not pipeline.model and pipeline.generation_lock is not pipeline.lock
    ours = dict(pipeline.model.named_parameters())
    for name, parameter in lane.named_parameters():
        assert parameter.data_ptr() == ours[name].data_ptr(), name  # one copy of every weight in memory
    assert lane.processor.tokenizer is not pipeline.model.processor.tokenizer  # tokenizers are not thread-safe


def test_the_generation_lane_generates_what_the_model_does(small_model):
    import numpy as np

    plain = SearchPipeline(small_model, None)
    expected = plain.generate("a red dress", steps=2, seed=3)[0]
    plain.separate_generation()
    assert plain.generation_lock is not plain.lock
    assert np.array_equal(np.asarray(plain.generate("a red dress", steps=2, seed=3)[0]), np.asarray(expected))


def test_the_text_bank_is_built_at_start_up(pipeline):
    # The first image-to-text call used to embed every catalogue text under the model lock (21-23 s
    # on the tiny model's catalogue); the service now does it while starting.
    with SearchPipeline.open(pipeline.model, pipeline.index.folder, read_only=True) as fresh:
        assert not fresh.texts_ready()
        with make_client(fresh):
            assert fresh.texts_ready()


# -- 5. browser safety -----------------------------------------------------------------------


def test_cross_site_writes_are_refused(client, pipeline):
    files = {"image": ("q.png", png_bytes(3), "image/png")}
    item_id = pipeline.index.ids()[0]
    before = client.get(f"/items/{item_id}").json()
    evil = client.post("/items", files=files, data={"item_id": item_id, "replace": "true", "category": "x"},
                       headers={"Origin": "http://evil.example"})
    assert_error(evil, 403, "cross_origin", "http://evil.example")
    fetch = client.post("/items", files=files, data={"item_id": item_id, "replace": "true"},
                        headers={"Sec-Fetch-Site": "cross-site"})
    assert_error(fetch, 403, "cross_origin")
    assert_error(client.post("/search/text", json={"text": "a"}, headers={"Origin": "null"}), 403, "cross_origin")
    assert_error(client.delete(f"/items/{item_id}", headers={"Origin": "http://localhost:9999"}), 403)
    assert client.get(f"/items/{item_id}").json() == before  # nothing was replaced or deleted
    # The page itself (same origin) and clients that send no Origin (curl, scripts) may write.
    same = client.post("/items", files=files, data={"item_id": "same-origin-1"},
                       headers={"Origin": BASE_URL, "Sec-Fetch-Site": "same-origin"})
    assert same.status_code == 201, same.text
    assert client.delete("/items/same-origin-1").status_code == 200


def test_configured_origins_may_write(pipeline):
    with make_client(pipeline, allowed_origins=("http://shop.example",)) as open_client:
        response = open_client.post("/search/text", json={"text": "a"}, headers={"Origin": "http://shop.example"})
        assert response.status_code == 200


def test_unknown_host_headers_are_refused(client, pipeline):
    assert_error(client.get("/health", headers={"Host": "evil.example"}), 400, "host_not_allowed", "evil.example")
    assert_error(client.get("/health", headers={"Host": "evil.example:8000"}), 400, "host_not_allowed")
    for host in ("localhost:8000", "127.0.0.1", "127.0.0.1:8000", "[::1]:8000"):
        assert client.get("/health", headers={"Host": host}).status_code == 200, host
    with make_client(pipeline, allowed_hosts=("shop.example",)) as configured:
        assert configured.get("/health", headers={"Host": "shop.example"}).status_code == 200
        assert configured.get("/health", headers={"Host": "localhost"}).status_code == 400
    with make_client(pipeline, allowed_hosts=("*",)) as anything:
        assert anything.get("/health", headers={"Host": "evil.example"}).status_code == 200


# -- 6. smaller ones -------------------------------------------------------------------------

DEEP = "[" * 50_000 + "]" * 50_000


def test_deeply_nested_attributes_are_a_422(client):
    files = {"image": ("q.png", png_bytes(), "image/png")}
    assert_error(client.post("/items", files=files, data={"item_id": "deep-1", "attributes": '{"a": ' + DEEP + "}"}),
                 422)
    recursing = '{"a": ' + "[" * 1990 + "]" * 1990 + "}"  # under the 4,000 characters; json.loads recurses
    assert_error(client.post("/items", files=files, data={"item_id": "deep-1", "attributes": recursing}), 422,
                 "invalid_json", "deep")
    nested = '{"a": ' + "[" * 50 + "]" * 50 + "}"
    assert_error(client.post("/items", files=files, data={"item_id": "deep-1", "attributes": nested}), 422,
                 "invalid_json", "deep")
    assert_error(client.get("/items/deep-1"), 404)


def test_deeply_nested_json_bodies_are_a_4xx(client):
    body = b'{"text": "a", "category": ' + DEEP.encode() + b"}"
    response = client.post("/search/text", content=body, headers={"Content-Type": "application/json"})
    assert 400 <= response.status_code < 500 and response.json()["error"]["code"]


def test_internal_errors_are_json_without_internals(pipeline, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("secret detail at /srv/private/path")

    with make_client(pipeline) as failing:
        monkeypatch.setattr(pipeline, "text_to_images", broken)
        response = failing.post("/search/text", json={"text": "a"})
    error = assert_error(response, 500, "internal_error")
    assert "secret" not in response.text and "/srv" not in response.text and "Traceback" not in response.text
    assert error["message"]


def test_not_found_messages_have_no_filesystem_paths(client, pipeline):
    folder = str(pipeline.index.folder)
    for response in (client.get("/items/nope"), client.get("/items/nope/image"),
                     client.delete("/items/nope")):
        error = assert_error(response, 404, "unknown_item", "'nope'")
        assert folder not in response.text and "/tmp" not in error["message"]


def test_top_k_must_be_an_integer(client):
    for value in (True, False, 2.0, "3"):
        assert_error(client.post("/search/text", json={"text": "a", "top_k": value}), 422, "invalid_request", "top_k")


def test_free_text_fields_are_limited(client):
    files = {"image": ("q.png", png_bytes(), "image/png")}

    def add(**data):
        return client.post("/items", files=files, data={"item_id": "long-1", **data})

    assert_error(add(captions=json.dumps({"detailed": "x" * 201})), 422, "text_too_long", "captions.detailed")
    assert_error(add(category="c" * 65), 422, "text_too_long", "category")
    assert_error(add(captions=json.dumps({f"style{i}": "x" for i in range(9)})), 422, "invalid_json", "captions")
    assert_error(add(captions=json.dumps({"s" * 33: "x"})), 422, "invalid_json")
    assert_error(add(attributes=json.dumps({"a": "x" * 5000})), 422, "text_too_long", "attributes")
    assert_error(client.post("/search/text", json={"text": "a", "category": "c" * 65}), 422, "text_too_long")
    assert_error(client.post("/search/composed", files=files, data={"text": "a", "category": "c" * 65}), 422)
    assert_error(client.get("/items/long-1"), 404)


def test_openapi_describes_security_bounds_and_errors(pipeline):
    with make_client(pipeline, api_key="k") as keyed:
        spec = keyed.get("/openapi.json").json()
    schemes = spec["components"]["securitySchemes"]
    assert {"type": "apiKey", "in": "header", "name": "X-API-Key"}.items() <= schemes["ApiKey"].items()
    assert schemes["Bearer"]["scheme"] == "bearer"
    for path, method in [("/items", "post"), ("/items/{item_id}", "delete")]:
        assert {"ApiKey": []} in spec["paths"][path][method]["security"]
    assert "security" not in spec["paths"]["/search/text"]["post"]
    query = spec["components"]["schemas"]["TextQuery"]["properties"]
    assert query["top_k"]["maximum"] == SETTINGS["max_top_k"] and query["top_k"]["minimum"] == 1
    assert query["text"]["maxLength"] == SETTINGS["max_text_chars"]
    for path, methods in spec["paths"].items():
        for method, operation in methods.items():
            for status in ("400", "500", "503"):
                assert status in operation["responses"], (path, method, status)
            if method != "get":
                assert "403" in operation["responses"], (path, method)


def test_index_records_the_model_and_refuses_another(tmp_path):
    from unifashion.pipelines import ModelMismatchError

    model = build_discriminative_model(seed=0)
    build_test_index(model, build_test_catalogue(tmp_path / "catalogue"), tmp_path / "index")
    other = build_discriminative_model(seed=1)  # same shapes, other weights: its vectors mean nothing here
    with pytest.raises(ModelMismatchError, match="different model"):
        SearchPipeline.open(other, tmp_path / "index")
    with SearchPipeline.open(build_discriminative_model(seed=0), tmp_path / "index") as same:
        assert len(same.index) == 30


def test_serve_and_search_refuse_a_mismatched_model(tmp_path, monkeypatch, capsys):
    from unifashion import cli

    model = build_discriminative_model(seed=0)
    model.save_pretrained(tmp_path / "model-a")
    build_discriminative_model(seed=1).save_pretrained(tmp_path / "model-b")
    build_test_index(model, build_test_catalogue(tmp_path / "catalogue"), tmp_path / "index")
    code = cli.main(["search", "a red dress", "--index", str(tmp_path / "index"), "--model",
                     str(tmp_path / "model-b")])
    assert code != 0 and "different model" in capsys.readouterr().err
    assert cli.main(["search", "a red dress", "--index", str(tmp_path / "index"), "--model",
                     str(tmp_path / "model-a")]) == 0
    code = cli.main(["serve", "--index", str(tmp_path / "index"), "--model", str(tmp_path / "model-b")])
    assert code != 0 and "different model" in capsys.readouterr().err


def test_serving_off_loopback_needs_the_key(tmp_path, capsys):
    from unifashion.serving.app import serve

    with pytest.raises(ValueError, match="api-key"):
        serve(str(tmp_path / "index"), "tiny", host="0.0.0.0", api_key=None)
    assert not Path(tmp_path / "index").exists()
