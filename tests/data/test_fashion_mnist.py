"""Fashion-MNIST: idx reading and validation on fixture files, then the colour/pattern transforms."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest

from conftest import requires
from unifashion.data.errors import DatasetFormatError, DatasetNotFoundError
from unifashion.data.fashion_mnist import (
    CATEGORY_NOUNS,
    DEFAULT_FASHION_MNIST_DIR,
    FASHION_MNIST_CLASSES,
    IDX_IMAGES_MAGIC,
    IDX_LABELS_MAGIC,
    Recolouring,
    class_name,
    fashion_mnist_installed,
    load_fashion_mnist,
    make_cir_triplets,
    make_cmr_items,
    read_idx,
    recolour_garment,
)
from unifashion.data.records import CAPTION_STYLES, ItemDataset, TripletDataset
from unifashion.data.synthetic.attributes import COLOURS
from unifashion.data.synthetic.render import BACKGROUND


def idx_bytes(magic: int, array: np.ndarray) -> bytes:
    header = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx(path: Path, magic: int, array: np.ndarray) -> Path:
    data = idx_bytes(magic, array)
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)
    return path


def garment_images(n: int) -> np.ndarray:
    """Light, textured blobs on black, each a little different: enough to look like Fashion-MNIST."""
    rng = np.random.default_rng(0)
    images = np.zeros((n, 28, 28), dtype=np.uint8)
    for i in range(n):
        top, left = 3 + i % 4, 5 + i % 3
        images[i, top : top + 20, left : left + 16] = rng.integers(120, 250, size=(20, 16))
    return images


def write_split(root: Path, prefix: str, n: int, gz: bool = False) -> None:
    suffix = ".gz" if gz else ""
    write_idx(root / f"{prefix}-images-idx3-ubyte{suffix}", IDX_IMAGES_MAGIC, garment_images(n))
    write_idx(root / f"{prefix}-labels-idx1-ubyte{suffix}", IDX_LABELS_MAGIC, np.arange(n) % 10)


@pytest.fixture
def fmnist_dir(tmp_path: Path) -> Path:
    write_split(tmp_path, "train", 30)
    write_split(tmp_path, "t10k", 20, gz=True)
    return tmp_path


@pytest.fixture
def test_split(fmnist_dir: Path):
    return load_fashion_mnist(fmnist_dir, "test")


# ----------------------------------------------------------------------------- reading


def test_reads_plain_and_gzipped_idx_files(fmnist_dir: Path):
    train = load_fashion_mnist(fmnist_dir, "train")
    test = load_fashion_mnist(fmnist_dir, "test")
    assert (len(train), len(test)) == (30, 20)
    assert train.images.shape == (30, 28, 28) and train.images.dtype == np.uint8
    assert np.array_equal(train.images, garment_images(30))
    assert list(test.labels[:12]) == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]
    assert load_fashion_mnist(fmnist_dir, "t10k").split == "test"


def test_class_names():
    assert len(FASHION_MNIST_CLASSES) == len(CATEGORY_NOUNS) == 10
    assert class_name(0) == "T-shirt/top" and class_name(9) == "Ankle boot"


def test_default_directory_is_debians():
    assert Path("/usr/share/datasets/fashion-mnist") == DEFAULT_FASHION_MNIST_DIR


def test_missing_folder_names_the_install_command(tmp_path: Path):
    missing = tmp_path / "nowhere"
    with pytest.raises(DatasetNotFoundError) as info:
        load_fashion_mnist(missing)
    assert str(missing) in str(info.value)
    assert "apt-get install dataset-fashion-mnist" in str(info.value)


def test_missing_file_is_named(tmp_path: Path):
    write_split(tmp_path, "train", 5)
    (tmp_path / "train-labels-idx1-ubyte").unlink()
    with pytest.raises(DatasetNotFoundError) as info:
        load_fashion_mnist(tmp_path, "train")
    assert "train-labels-idx1-ubyte" in str(info.value)
    assert "apt-get install dataset-fashion-mnist" in str(info.value)


def test_truncated_file_is_named(tmp_path: Path):
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(idx_bytes(IDX_IMAGES_MAGIC, garment_images(4))[:-100])
    with pytest.raises(DatasetFormatError) as info:
        read_idx(path, IDX_IMAGES_MAGIC)
    assert str(path) in str(info.value) and "truncated" in str(info.value)


def test_truncated_gzip_stream_is_named(tmp_path: Path):
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(idx_bytes(IDX_IMAGES_MAGIC, garment_images(4)))[:-40])
    with pytest.raises(DatasetFormatError) as info:
        read_idx(path, IDX_IMAGES_MAGIC)
    assert str(path) in str(info.value) and "truncated" in str(info.value)


def test_wrong_magic_is_named(tmp_path: Path):
    # A labels file where the images file should be: the magic says idx1, not idx3.
    path = write_idx(tmp_path / "train-images-idx3-ubyte", IDX_LABELS_MAGIC, np.arange(10))
    with pytest.raises(DatasetFormatError) as info:
        read_idx(path, IDX_IMAGES_MAGIC)
    assert str(path) in str(info.value)
    assert "wrong magic number 0x00000801, expected 0x00000803" in str(info.value)


def test_trailing_bytes_and_label_count_mismatch(tmp_path: Path):
    path = tmp_path / "x-labels-idx1-ubyte"
    path.write_bytes(idx_bytes(IDX_LABELS_MAGIC, np.arange(5)) + b"\x00\x00")
    with pytest.raises(DatasetFormatError, match="2 unexpected bytes"):
        read_idx(path, IDX_LABELS_MAGIC)

    write_idx(tmp_path / "train-images-idx3-ubyte", IDX_IMAGES_MAGIC, garment_images(5))
    write_idx(tmp_path / "train-labels-idx1-ubyte", IDX_LABELS_MAGIC, np.arange(4))
    with pytest.raises(DatasetFormatError) as info:
        load_fashion_mnist(tmp_path, "train")
    assert "train-labels-idx1-ubyte" in str(info.value) and "4 labels for 5 images" in str(info.value)


@requires("fashion-mnist")
def test_reads_the_real_debian_files():
    test = load_fashion_mnist(split="test")
    assert test.images.shape == (10000, 28, 28)
    assert np.bincount(test.labels).tolist() == [1000] * 10
    train = load_fashion_mnist(split="train")
    assert len(train) == 60000 and np.bincount(train.labels).tolist() == [6000] * 10


# ----------------------------------------------------------------------------- transforms


def test_recolour_fills_the_garment_and_keeps_the_background(test_split):
    grey = test_split.images[0]
    image = recolour_garment(grey, Recolouring("red", size=64))
    assert image.size == (64, 64) and image.mode == "RGB"
    pixels = np.asarray(image).astype(int)
    assert tuple(pixels[0, 0]) == BACKGROUND  # the black of Fashion-MNIST becomes the catalogue's background
    centre = pixels[32, 32]
    assert centre[0] > 100 and centre[0] > 2 * centre[1] and centre[0] > 2 * centre[2]  # red fabric
    again = recolour_garment(grey, Recolouring("red", size=64))
    assert np.array_equal(pixels, np.asarray(again))  # deterministic


def test_pattern_is_drawn_inside_the_garment_only(test_split):
    grey = test_split.images[1]
    solid = np.asarray(recolour_garment(grey, Recolouring("navy", size=96))).astype(int)
    striped = np.asarray(recolour_garment(grey, Recolouring("navy", "stripes", "white", size=96))).astype(int)
    differs = np.abs(solid - striped).sum(axis=2) > 30
    assert differs[20:80, 30:60].mean() > 0.2  # stripes across the garment
    assert not differs[:, :5].any()  # and none on the background
    with pytest.raises(ValueError, match="pattern_colour"):
        Recolouring("navy", "stripes")


def test_cmr_items(test_split):
    items = make_cmr_items(test_split, size=64, seed=3, limit=15)
    assert len(items) == 15 and len({i.item_id for i in items}) == 15
    for item in items:
        assert set(item.captions) == set(CAPTION_STYLES)
        attrs = item.attributes
        assert attrs["category"] == item.category == CATEGORY_NOUNS[int(test_split.labels[attrs["index"]])]
        assert attrs["colour"] in COLOURS
        assert attrs["colour"] in item.captions["short"] and item.category in item.captions["short"]
        assert (attrs["pattern"] == "solid") == (attrs["pattern_colour"] is None)
    assert any(i.attributes["pattern"] != "solid" for i in items)
    assert [i.item_id for i in make_cmr_items(test_split, size=64, seed=3, limit=15)] == [i.item_id for i in items]
    assert [i.item_id for i in make_cmr_items(test_split, size=64, seed=4, limit=15)] != [i.item_id for i in items]

    sample = ItemDataset(items, caption_style="professional")[2]
    assert sample["image"].size == (64, 64)
    assert sample["caption"] == items[2].captions["professional"]


def test_cmr_captions_read_naturally(test_split):
    items = make_cmr_items(test_split, size=32, colours=["olive"], patterns=["floral"], limit=2)
    trousers = items[1]  # label 1
    assert trousers.captions == {
        "short": "olive floral trousers",
        "professional": f"Trousers in olive. Floral print in {trousers.attributes['pattern_colour']} throughout.",
        "detailed": f"a pair of olive trousers with a {trousers.attributes['pattern_colour']} floral print".replace(
            "a orange", "an orange"
        ),
    }
    solid = make_cmr_items(test_split, size=32, colours=["orange"], patterns=["solid"], limit=1)[0]
    assert solid.captions["detailed"] == "a solid orange t-shirt"
    assert solid.captions["professional"] == "T-shirt in orange. Solid colour throughout."


def test_items_render_lazily_and_pickle(test_split):
    item = make_cmr_items(test_split, size=48, seed=1, limit=1)[0]
    restored = pickle.loads(pickle.dumps(item))
    assert np.array_equal(np.asarray(item.image), np.asarray(restored.load_image()))
    with pytest.raises(AttributeError):
        item.image = np.zeros((4, 4, 3), np.uint8)


def test_cir_triplets(test_split):
    gallery, triplets = make_cir_triplets(test_split, n_triplets=40, size=48, seed=7)
    assert len(triplets) == 40
    by_id = {item.item_id: item for item in gallery}
    assert len(by_id) == len(gallery)  # no duplicates
    dataset = TripletDataset(triplets, ItemDataset(gallery))  # every id is in the gallery
    assert dataset[0]["reference"].size == (48, 48)
    kinds = set()
    for t in triplets:
        ref, tgt = by_id[t.reference_id], by_id[t.target_id]
        assert len(t.relative_captions) == 2 and t.relative_captions[0] != t.relative_captions[1]
        assert t.category == ref.category
        changed = {k for k in ("category", "colour", "pattern") if ref.attributes[k] != tgt.attributes[k]}
        assert len(changed) == 1
        (kind,) = changed
        kinds.add(kind)
        assert t.changed_attributes[kind] == (ref.attributes[kind], tgt.attributes[kind])
        if kind == "category":
            assert ref.attributes["index"] != tgt.attributes["index"]
            assert ref.attributes["colour"] == tgt.attributes["colour"]
            assert ref.attributes["pattern"] == tgt.attributes["pattern"]
            assert any(tgt.category in c for c in t.relative_captions)
        else:
            assert ref.attributes["index"] == tgt.attributes["index"]  # the same photo, edited
        if kind == "colour":
            assert any(tgt.attributes["colour"] in c for c in t.relative_captions)
    assert kinds == {"category", "colour", "pattern"}
    again_gallery, again = make_cir_triplets(test_split, n_triplets=40, size=48, seed=7)
    assert [(t.reference_id, t.target_id, t.relative_captions) for t in again] == [
        (t.reference_id, t.target_id, t.relative_captions) for t in triplets
    ]


def test_cir_change_captions_name_the_new_value(test_split):
    for change, key in (("colour", "colour"), ("category", "category")):
        gallery, triplets = make_cir_triplets(test_split, 8, size=32, changes=[change], seed=0)
        by_id = {item.item_id: item for item in gallery}
        for t in triplets:
            new_value = by_id[t.target_id].attributes[key]
            assert all(new_value in caption for caption in t.relative_captions), t.relative_captions
    gallery, triplets = make_cir_triplets(test_split, 8, size=32, changes=["pattern"], seed=0)
    assert all(t.relative_captions for t in triplets)
    with pytest.raises(ValueError, match="changes"):
        make_cir_triplets(test_split, 1, changes=["sleeve"])


def test_installed_checks_the_split_files(tmp_path: Path):
    assert not fashion_mnist_installed(tmp_path / "nowhere")
    write_split(tmp_path, "train", 5)
    assert fashion_mnist_installed(tmp_path, "train")
    assert not fashion_mnist_installed(tmp_path, "test")  # t10k files absent
    (tmp_path / "train-labels-idx1-ubyte").unlink()
    assert not fashion_mnist_installed(tmp_path, "train")
    write_split(tmp_path, "t10k", 5, gz=True)
    assert fashion_mnist_installed(tmp_path, "test")
