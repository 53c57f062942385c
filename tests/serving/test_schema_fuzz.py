"""schemathesis against the live service with ``--checks all``: every answer conforms to the
OpenAPI schema (status codes, content types, headers, bodies), no 5xx, valid data accepted,
invalid data rejected, writes refused without the key. A bounded run (``FUZZ_EXAMPLES`` per
operation); slow, so CI runs it on its own (``make fuzz``)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from serving_helpers import build_discriminative_model, build_test_catalogue, build_test_index

from conftest import requires
from unifashion.pipelines import SearchPipeline
from unifashion.serving.app import ServiceSettings, create_app, uvicorn_options

pytestmark = pytest.mark.slow

API_KEY = "fuzz-key"
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "40"))


def schemathesis_command() -> list[str] | None:
    script = Path(sys.executable).with_name("schemathesis")
    if script.is_file():
        return [str(script)]
    found = shutil.which("schemathesis")
    return [found] if found else None


@pytest.fixture(scope="module")
def service(tmp_path_factory, single_thread_module):
    import uvicorn

    model = build_discriminative_model()
    root = tmp_path_factory.mktemp("fuzz")
    build_test_index(model, build_test_catalogue(root / "catalogue"), root / "index")
    pipeline = SearchPipeline.open(model, root / "index")
    settings = ServiceSettings(api_key=API_KEY, max_generation_steps=2, default_generation_steps=1,
                               max_upload_bytes=2 * 2**20, max_top_k=50, model_name="small-random")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(pipeline, settings), host="127.0.0.1", port=port,
                                           log_level="warning", **uvicorn_options(settings)))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)
    pipeline.close()


@requires("schemathesis")
def test_schemathesis_checks_all(service, tmp_path):
    command = schemathesis_command()
    assert command, "schemathesis is importable but its command is neither beside python nor on PATH"
    report = Path(os.environ.get("FUZZ_REPORT", tmp_path / "schemathesis.txt"))
    result = subprocess.run(
        [*command, "--config-file", str(Path(__file__).with_name("schemathesis.toml")), "run",
         f"{service}/openapi.json", "--checks", "all", "--max-examples", str(EXAMPLES),
         "--header", f"X-API-Key: {API_KEY}", "--seed", "1", "--no-color", "--workers", "1",
         "--request-timeout", "60"],
        capture_output=True, text=True, timeout=1200, cwd=tmp_path)
    report.write_text(result.stdout + result.stderr)
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-2000:]
