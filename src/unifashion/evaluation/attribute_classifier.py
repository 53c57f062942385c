"""A separately trained attribute classifier: the judge of generated images on the synthetic catalogue.

"Does 'red striped dress' give something red, striped and a dress?" A small CNN, trained from
scratch on rendered catalogue images (never on the generator's outputs), predicts each attribute
with its own head. It shares nothing with the UniFashion model, so it cannot be gamed by it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from unifashion.data.synthetic.attributes import CATEGORIES, COLOURS, FITS, NECKLINES, PATTERNS, SLEEVES

NOT_APPLICABLE = "n/a"


def attribute_vocab() -> dict[str, list[str]]:
    """The label set of each head; sleeve and neckline have "n/a" for skirts and pants."""
    lengths = sorted({v for spec in CATEGORIES.values() for v in spec["lengths"]})
    return {
        "category": list(CATEGORIES),
        "colour": list(COLOURS),
        "pattern": list(PATTERNS),
        "sleeve": [*SLEEVES, NOT_APPLICABLE],
        "neckline": [*NECKLINES, NOT_APPLICABLE],
        "length": lengths,
        "fit": list(FITS),
    }


@dataclass
class AttributeClassifierConfig:
    image_size: int = 64
    width: int = 32


class AttributeClassifier(nn.Module):
    """Four conv blocks, global pooling plus the mean colour of the image, one linear head per attribute."""

    def __init__(self, config: AttributeClassifierConfig | None = None):
        super().__init__()
        self.config = config or AttributeClassifierConfig()
        self.vocab = attribute_vocab()
        w = self.config.width
        blocks, c_in = [], 3
        for c_out in (w, 2 * w, 4 * w, 4 * w):
            blocks += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
                       nn.MaxPool2d(2)]
            c_in = c_out
        self.features = nn.Sequential(*blocks)
        self.heads = nn.ModuleDict({name: nn.Linear(c_in * 2 + 3, len(labels)) for name, labels in self.vocab.items()})

    def forward(self, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
        """``pixels``: (B, 3, H, W) in [0, 1]. Returns logits per attribute."""
        x = (pixels - 0.5) / 0.25
        h = self.features(x)
        pooled = torch.cat([h.mean(dim=(2, 3)), h.amax(dim=(2, 3)), pixels.mean(dim=(2, 3))], dim=1)
        return {name: head(pooled) for name, head in self.heads.items()}

    def to_tensor(self, images: list[Image.Image]) -> torch.Tensor:
        size = self.config.image_size
        arrays = [np.asarray(im.convert("RGB").resize((size, size), Image.Resampling.BILINEAR), dtype=np.float32)
                  for im in images]
        return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2) / 255.0

    def labels_of(self, attributes: dict) -> dict[str, int]:
        out = {}
        for name, labels in self.vocab.items():
            value = attributes.get(name, NOT_APPLICABLE)
            out[name] = labels.index(value)
        return out

    @torch.no_grad()
    def predict(self, images: list[Image.Image] | torch.Tensor, batch_size: int = 128) -> list[dict[str, str]]:
        self.eval()
        pixels = images if isinstance(images, torch.Tensor) else self.to_tensor(images)
        if pixels.shape[-1] != self.config.image_size:
            pixels = torch.nn.functional.interpolate(pixels, size=self.config.image_size, mode="bilinear",
                                                     align_corners=False)
        out: list[dict[str, str]] = []
        for start in range(0, len(pixels), batch_size):
            logits = self(pixels[start:start + batch_size])
            best = {k: v.argmax(1).tolist() for k, v in logits.items()}
            for i in range(len(next(iter(best.values())))):
                out.append({k: self.vocab[k][best[k][i]] for k in best})
        return out

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, directory / "model.safetensors")
        (directory / "config.json").write_text(json.dumps({**asdict(self.config), "vocab": self.vocab}, indent=1))

    @classmethod
    def load(cls, directory: str | Path) -> AttributeClassifier:
        directory = Path(directory)
        meta = json.loads((directory / "config.json").read_text())
        vocab = meta.pop("vocab")
        model = cls(AttributeClassifierConfig(**meta))
        if vocab != model.vocab:
            raise ValueError(f"{directory}: the classifier was trained on another attribute vocabulary")
        model.load_state_dict(load_file(directory / "model.safetensors"))
        return model.eval()


def train_attribute_classifier(images: list[Image.Image], attributes: list[dict], steps: int = 600,
                               batch_size: int = 64, lr: float = 3e-3, seed: int = 0,
                               config: AttributeClassifierConfig | None = None,
                               progress: bool = True) -> AttributeClassifier:
    """Train on rendered images with their true attributes (with small colour-preserving shifts)."""
    torch.manual_seed(seed)
    model = AttributeClassifier(config)
    pixels = model.to_tensor(images)
    labels = {name: torch.tensor([model.labels_of(a)[name] for a in attributes]) for name in model.vocab}
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in tqdm(range(steps), desc="attribute classifier", disable=not progress):
        idx = torch.randint(0, len(pixels), (batch_size,), generator=g)
        x = pixels[idx]
        # Generated images are blurrier and a little off-centre: train with shifts and blur.
        shift = torch.randint(-3, 4, (2,), generator=g).tolist()
        x = torch.roll(x, shifts=shift, dims=(2, 3))
        if torch.rand(1, generator=g).item() < 0.5:
            x = torch.nn.functional.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
        logits = model(x)
        loss = sum(nn.functional.cross_entropy(logits[k], labels[k][idx]) for k in logits)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    return model.eval()


def attribute_accuracy(predicted: list[dict[str, str]], expected: list[dict],
                       names: tuple[str, ...] = ("category", "colour", "pattern", "sleeve")) -> dict[str, float]:
    """Percentage of images whose predicted attribute matches the requested one, per attribute, and
    the percentage with all of ``names`` right."""
    if len(predicted) != len(expected):
        raise ValueError(f"{len(predicted)} predictions for {len(expected)} expected attribute sets")
    out = {}
    all_right = np.ones(len(expected), dtype=bool)
    for name in names:
        hits = np.array([p[name] == e.get(name, NOT_APPLICABLE) for p, e in zip(predicted, expected, strict=True)])
        out[name] = float(100 * hits.mean())
        all_right &= hits
    out["all"] = float(100 * all_right.mean())
    return out


PACKAGED_CLASSIFIER = "attribute-classifier"  # its folder among the packaged models


def load_or_train_classifier(directory: str | Path, n_items: int = 4000, steps: int = 800, seed: int = 1000,
                             progress: bool = True) -> AttributeClassifier:
    """The judge used by ``unifashion eval``: loaded from ``directory``, else the one that ships with
    the package (``unifashion/weights/attribute-classifier``, trained with these defaults), else
    trained in ``directory`` first on a catalogue drawn with its own seed (no item is shared with
    any training or test split)."""
    from unifashion.models.pretrained import packaged_root

    directory = Path(directory)
    if (directory / "model.safetensors").is_file():
        return AttributeClassifier.load(directory)
    shipped = packaged_root() / PACKAGED_CLASSIFIER
    if (shipped / "model.safetensors").is_file() and (n_items, steps, seed) == (4000, 800, 1000):
        return AttributeClassifier.load(shipped)
    from unifashion.data.synthetic.catalogue import CatalogueConfig, make_catalogue
    from unifashion.data.synthetic.render import render_garment

    catalogue = make_catalogue(CatalogueConfig(n_items=n_items, seed=seed))
    size = AttributeClassifierConfig().image_size
    images = [render_garment(it.attributes, size, it.seed).image for it in catalogue.items]
    model = train_attribute_classifier(images, [it.attributes for it in catalogue.items], steps=steps, seed=seed,
                                       progress=progress)
    model.save(directory)
    return model
