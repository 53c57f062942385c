"""The web page in a real browser: uvicorn on 127.0.0.1 (a free port, a background thread) and
headless Chromium driven by selenium. Type a query and see results; upload an image with a
modification text and see results; caption and generate; save a screenshot.

Needs Debian's ``chromium`` and ``chromium-driver`` and the ``selenium`` package (the ``browser``
requirement of conftest.py): skipped, saying which is missing, without them; failed under CI.
Nothing is downloaded: the driver and the browser are given by path, so selenium's driver manager
is never asked.
"""

from __future__ import annotations

import shutil
import socket
import threading
import time

import pytest
import torch
from serving_helpers import build_discriminative_model, build_test_catalogue, build_test_index, make_image

from conftest import requires
from unifashion.pipelines import SearchPipeline
from unifashion.serving.app import ServiceSettings, create_app

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")

pytestmark = requires("browser")

# Flags for a quiet, sandbox-free, offline headless Chromium (root in a container has no sandbox).
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1280,1600"]
WAIT_S = 20


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def service_url(tmp_path_factory):
    import uvicorn

    previous_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    model = build_discriminative_model()
    root = tmp_path_factory.mktemp("browser")
    build_test_index(model, build_test_catalogue(root / "catalogue"), root / "index")
    pipeline = SearchPipeline.open(model, root / "index")
    settings = ServiceSettings(default_generation_steps=4, model_name="small-random")
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(pipeline, settings), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + WAIT_S
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)
    pipeline.close()
    torch.set_num_threads(previous_threads)


@pytest.fixture
def browser(tmp_path, monkeypatch):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    monkeypatch.setenv("SE_OFFLINE", "true")  # selenium's driver manager must not go online
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def test_search_upload_caption_generate_in_the_browser(service_url, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, WAIT_S)
    find = browser.find_element
    browser.get(service_url + "/")
    wait.until(lambda d: "items" in find(By.ID, "status").text)
    assert "30 items" in find(By.ID, "status").text

    # Text search: type a query, see a grid of items with images, captions and scores.
    find(By.ID, "text-query").send_keys("a red floral dress")
    find(By.ID, "text-search").click()
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#results .result")) == 12)
    assert "a red floral dress" in find(By.ID, "results-status").text
    cards = browser.find_elements(By.CSS_SELECTOR, "#results .result")
    assert all("score" in card.find_element(By.CSS_SELECTOR, ".score").text for card in cards)
    assert all(card.find_element(By.CSS_SELECTOR, ".caption").text for card in cards)
    wait.until(lambda d: d.execute_script(
        "return [...document.querySelectorAll('#results img')].every(i => i.complete && i.naturalWidth > 0)"))

    # Composed search: upload a reference image with a modification text.
    reference = tmp_path / "reference.png"
    make_image(7, size=(64, 64)).save(reference)
    find(By.ID, "composed-image").send_keys(str(reference))
    find(By.ID, "composed-text").send_keys("is blue and has shorter sleeves")
    find(By.ID, "composed-search").click()
    wait.until(lambda d: "the image +" in find(By.ID, "results-status").text)
    cards = browser.find_elements(By.CSS_SELECTOR, "#results .result")
    assert len(cards) == 12
    assert "fusion" in cards[0].find_element(By.CSS_SELECTOR, ".score").text
    wait.until(lambda d: d.execute_script(
        "return [...document.querySelectorAll('#results img')].every(i => i.complete && i.naturalWidth > 0)"))

    # Caption and matching texts of an uploaded image; then a generated image.
    find(By.ID, "describe-image").send_keys(str(reference))
    find(By.ID, "caption-btn").click()
    wait.until(lambda d: find(By.ID, "caption-out").text.strip())
    find(By.ID, "match-btn").click()
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#texts-out li")) > 0)
    find(By.ID, "gen-text").send_keys("a light pink floral mini dress")
    find(By.ID, "generate-btn").click()
    wait.until(lambda d: d.execute_script(
        "const i = document.getElementById('gen-out'); return i.complete && i.naturalWidth === 32"))
    assert "seed 0" in find(By.ID, "gen-info").text
    assert not find(By.ID, "error").is_displayed()

    browser.execute_script("window.scrollTo(0, 0)")
    screenshot = tmp_path / "web_page.png"
    assert browser.save_screenshot(str(screenshot))
    assert screenshot.stat().st_size > 10_000
