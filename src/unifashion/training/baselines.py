"""Training the CLIP-style dual-encoder baseline (CLIP4CIR's two stages) on the same data.

Stage ``encoders``: ITC on image-caption pairs (vision backbone frozen, as in UniFashion).
Stage ``combiner``: towers frozen; the combiner learns ITC between the composed query
(reference + modifying text) and the target image, over the training triplets.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from unifashion.configuration import save_json
from unifashion.training.data import ImageBank, PairDataset, TripletTrainDataset
from unifashion.training.recipe import DataSpec, load_training_data
from unifashion.training.trainer import LoopConfig, OptimConfig, train


class DualEncoderPairObjective(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        image = self.model.embed_vision_features(batch["vision_features"])
        text = self.model.encode_text(batch["captions"])
        loss = self.model.itc_loss(image, text)
        return {"loss": loss, "itc": loss.detach()}


class DualEncoderTripletObjective(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            reference = self.model.embed_vision_features(batch["reference_vision_features"])
            target = self.model.embed_vision_features(batch["target_vision_features"])
            text = self.model.encode_text(batch["texts"])
        query = self.model.compose(reference, text, combiner="learned")
        loss = self.model.itc_loss(target, query)
        return {"loss": loss, "cir_itc": loss.detach()}


def train_dual_encoder(output_dir: str | Path, data: DataSpec | None = None, encoder_steps: int = 400,
                       combiner_steps: int = 300, batch_size: int = 32, seed: int = 0) -> Path:
    """Train both stages and save the baseline to ``output_dir/final``; finished runs are reused."""
    from unifashion.models.dual_encoder import CONFIG_NAME, DualEncoder, DualEncoderConfig

    out = Path(output_dir)
    final = out / "final"
    if (final / CONFIG_NAME).is_file():
        return final
    torch.manual_seed(seed)
    data = data or DataSpec(fashion_mnist_pairs=1000)
    _, items, extra, triplets = load_training_data(data)
    model = DualEncoder(DualEncoderConfig())
    bank = ImageBank(items + list(extra), model, with_generation_images=False)
    model.set_stage("encoders")
    pairs = PairDataset(items + list(extra), bank)
    encoders = train(DualEncoderPairObjective(model), pairs, pairs.collate,
          LoopConfig(steps=encoder_steps, batch_size=batch_size, seed=seed, output_dir=str(out / "encoders"),
                     checkpoint_every=100, optim=OptimConfig(lr=5e-5, warmup_steps=30)),
          description="dual encoder: ITC")
    model.set_stage("combiner")
    trips = TripletTrainDataset(triplets, {r.item_id: r for r in items}, bank)
    combiner = train(DualEncoderTripletObjective(model), trips, trips.collate,
          LoopConfig(steps=combiner_steps, batch_size=batch_size, seed=seed, output_dir=str(out / "combiner"),
                     checkpoint_every=100, optim=OptimConfig(lr=1e-3, warmup_steps=20)),
          description="dual encoder: combiner")
    model.eval()
    model.save_pretrained(final)
    save_json(data, out / "data.json")
    (out / "timings.json").write_text(json.dumps({
        name: {"steps": result.steps_done, "train_seconds": round(result.seconds, 1),
               "seconds_per_step": round(result.seconds / max(1, result.steps_done), 4)}
        for name, result in (("encoders", encoders), ("combiner", combiner))}, indent=2))
    return final
