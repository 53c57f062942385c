"""Tiny datasets written in exactly the layouts of the real ones (FashionGen h5 and jsonl,
Fashion-IQ, Fashion200K, VITON-HD/MGD, an image folder with metadata), for the tests that train
and evaluate from them. Images are drawn garments whose colour and shape follow the caption."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

COLOURS = {"red": (200, 30, 40), "blue": (30, 60, 200), "green": (40, 160, 60), "black": (20, 20, 20),
           "white": (235, 235, 235), "yellow": (230, 200, 30)}
SHAPES = ("dress", "shirt", "skirt")


def garment(colour: str, shape: str, size: int = 64, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", (size, size), (250, 250, 250))
    draw = ImageDraw.Draw(image)
    jitter = int(rng.integers(0, size // 16 + 1))
    box = {"dress": (size // 4, size // 8, 3 * size // 4, 7 * size // 8),
           "shirt": (size // 8, size // 4, 7 * size // 8, 3 * size // 4),
           "skirt": (size // 4, size // 2, 3 * size // 4, 7 * size // 8)}[shape]
    draw.rectangle([c + jitter for c in box], fill=COLOURS[colour])
    return image


def items(n: int, seed: int = 0) -> list[tuple[str, str, str]]:
    """(colour, shape, caption) of n items, cycling through the colours and shapes."""
    names = list(COLOURS)
    out = []
    for i in range(n):
        colour, shape = names[(i + seed) % len(names)], SHAPES[(i // len(names) + seed) % len(SHAPES)]
        out.append((colour, shape, f"a {colour} {shape}"))
    return out


def write_fashiongen_h5(path: Path, n: int = 12, seed: int = 0, size: int = 256) -> Path:
    import h5py

    rows = items(n, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f.create_dataset("input_image", data=np.stack([np.asarray(garment(c, s, size, seed + i))
                                                        for i, (c, s, _) in enumerate(rows)]))
        f.create_dataset("input_description", data=np.array(
            [[f"{cap}, professional cut, made in italy".encode()] for _, _, cap in rows], dtype="S80"))
        f.create_dataset("input_category", data=np.array([[s.upper().encode()] for _, s, _ in rows], dtype="S16"))
        f.create_dataset("input_productID", data=np.array([[1000 + i // 2] for i in range(n)], dtype=np.int64))
        f.create_dataset("input_pose", data=np.array([[b"id_gridfs_%d" % (i % 2 + 1)] for i in range(n)], dtype="S16"))
        f.create_dataset("input_name", data=np.array([[cap.upper().encode()] for _, _, cap in rows], dtype="S40"))
    return path


def write_fashiongen_jsonl(root: Path, n: int = 12, seed: int = 0) -> Path:
    """The official UniFashion code's layout: annotation_{train,validation}.jsonl with a
    JSON-encoded image name in "index", images in image/ and image_val/."""
    for split, folder in (("train", "image"), ("validation", "image_val")):
        (root / folder).mkdir(parents=True, exist_ok=True)
        with (root / f"annotation_{split}.jsonl").open("w") as f:
            for i, (c, s, cap) in enumerate(items(n, seed)):
                name = f"{split}_{i:05d}"
                garment(c, s, 64, seed + i).save(root / folder / f"{name}.jpg")
                f.write(json.dumps({"index": json.dumps(name), "description": f"{cap}, professional cut"}) + "\n")
    return root


def write_fashion_iq(root: Path, n: int = 12, seed: int = 0) -> Path:
    """captions/cap.{cat}.{split}.json, image_splits/split.{cat}.{split}.json, images/{id}.png, and
    Fashion-IQ-cap image captions (captions/imgcap.{cat}.{split}.json)."""
    (root / "captions").mkdir(parents=True, exist_ok=True)
    (root / "image_splits").mkdir(parents=True, exist_ok=True)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rows = items(n, seed)
    for category in ("dress", "shirt"):
        for split in ("train", "val"):
            ids = [f"B00{category[0]}{split[0]}{i:04d}" for i in range(n)]
            for image_id, (c, s, _) in zip(ids, rows, strict=True):
                garment(c, s, 64, seed).save(root / "images" / f"{image_id}.png")
            triplets = [{"candidate": ids[i], "target": ids[(i + 1) % n],
                         "captions": [f"is {rows[(i + 1) % n][0]}", f"is a {rows[(i + 1) % n][1]}"]}
                        for i in range(n)]
            (root / "image_splits" / f"split.{category}.{split}.json").write_text(json.dumps(ids))
            (root / "captions" / f"cap.{category}.{split}.json").write_text(json.dumps(triplets))
            (root / "captions" / f"imgcap.{category}.{split}.json").write_text(json.dumps(
                {image_id: f"{cap} with a simple cut and a plain design" for image_id, (_, _, cap)
                 in zip(ids, rows, strict=True)}))
    return root


def write_fashion200k(root: Path, n: int = 12, seed: int = 0) -> Path:
    """labels/{category}_{split}_detect_all.txt (path<TAB>score<TAB>description) and the images."""
    (root / "labels").mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        lines = []
        for i, (c, s, _) in enumerate(items(n, seed)):
            product = 51700000 + i + (0 if split == "train" else 5000)
            rel = f"women/dresses/casual_and_day_dresses/{product}/{product}_0.jpeg"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            garment(c, s, 64, seed + i).save(root / rel, format="JPEG")
            lines.append(f"{rel}\t0.{90 + i % 9}\t{c} {s}")
        (root / "labels" / f"dress_{split}_detect_all.txt").write_text("\n".join(lines) + "\n")
    return root


def write_viton(root: Path, n: int = 12, seed: int = 0) -> Path:
    """{split}_pairs.txt, {split}/image, cloth, agnostic-mask/{stem}_mask.png and MGD captions.json."""
    captions = {}
    for split in ("train", "test"):
        for folder in ("image", "cloth", "agnostic-mask"):
            (root / split / folder).mkdir(parents=True, exist_ok=True)
        pairs = []
        for i, (c, s, _) in enumerate(items(n, seed)):
            stem = f"{i + (0 if split == 'train' else 500):05d}_00"
            garment(c, s, 64, seed + i).save(root / split / "cloth" / f"{stem}.jpg")
            garment(c, s, 64, seed + i + 1).save(root / split / "image" / f"{stem}.jpg")
            Image.new("L", (64, 64), 255).save(root / split / "agnostic-mask" / f"{stem}_mask.png")
            captions[stem.split("_")[0]] = [c, s, "cotton"]
            pairs.append(f"{stem}.jpg {stem}.jpg")
        (root / f"{split}_pairs.txt").write_text("\n".join(pairs) + "\n")
    (root / "captions.json").write_text(json.dumps(captions))
    return root


def write_image_folder(root: Path, n: int = 12, seed: int = 0) -> Path:
    """A shop's folder: images and metadata.jsonl (id, path, category, caption)."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    with (root / "metadata.jsonl").open("w") as f:
        for i, (c, s, cap) in enumerate(items(n, seed)):
            garment(c, s, 64, seed + i).save(root / "images" / f"sku{i:04d}.png")
            f.write(json.dumps({"id": f"sku{i:04d}", "path": f"images/sku{i:04d}.png", "category": s,
                                "caption": f"{cap} from our spring collection"}) + "\n")
    return root


def write_embedded(root: Path, n: int = 40, seed: int = 2) -> Path:
    """An embedded catalogue folder (catalogue.json, items.jsonl, triplets.jsonl, images/)."""
    from unifashion.data.synthetic.catalogue import CatalogueConfig, build_catalogue_files

    build_catalogue_files(root, CatalogueConfig(n_items=n, seed=seed, split_fractions=(0.6, 0.1, 0.3)),
                          progress=False)
    return root


WRITERS = {"fashiongen": lambda root: write_fashiongen_h5(root / "fashiongen_256_256_train.h5") and
           write_fashiongen_h5(root / "fashiongen_256_256_validation.h5", seed=1) and root,
           "fashiongen-jsonl": write_fashiongen_jsonl, "fashioniq": write_fashion_iq,
           "fashion200k": write_fashion200k, "viton": write_viton, "imagefolder": write_image_folder,
           "embedded": write_embedded}
