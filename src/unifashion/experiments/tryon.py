"""One run of fashion design + try-on on the embedded data: worn views, training, evaluation, grid.

``unifashion tryon --out outputs/tryon`` calls :func:`run_tryon`. Every step keeps its output in
``out`` and is skipped when that output is already there, so a stopped run continues where it
stopped (training resumes from its last checkpoint)::

    out/worn/              the worn views in the VITON-HD / MGD layout (unifashion.data.synthetic.worn)
    out/train/             checkpoints, losses.jsonl, TensorBoard logs of the training
    out/model/             the trained model (config.json + model.safetensors + tryon.json)
    out/results.json       rows {task, protocol, method, metric, value, split, seed}
    out/results.md         the same as tables
    out/tryon_grid.png     masked person, caption, sketch, generated, ground truth
    out/worn-attribute-judge/  the attribute classifier trained on the train split's worn views
    out/timings.json       seconds per step
    out/run_config.json    the TryOnRunConfig it ran with (written first; `unifashion tryon --config` reads one)
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from unifashion.evaluation.tryon import (
    TryOnEvalConfig,
    TryOnTestSet,
    evaluate_setting,
    load_or_train_worn_judge,
    result_grid,
    save_grid,
)
from unifashion.experiments import write_run_config
from unifashion.training.tryon import TryOnTrainConfig


@dataclass
class TryOnRunConfig:
    out: str = "outputs/tryon"
    data: str | None = None  # a VITON-layout folder; None: out/worn, built from the embedded catalogue
    n_items: int = 2000  # embedded catalogue size (its train and test items are drawn worn)
    catalogue_seed: int = 0
    worn_seed: int = 0
    model: str = "tiny-default"
    classifier: str | None = None  # worn-garment attribute judge folder (default: out/worn-attribute-judge)
    train: TryOnTrainConfig = field(default_factory=TryOnTrainConfig)
    eval: TryOnEvalConfig = field(default_factory=TryOnEvalConfig)


def _ensure_worn_data(config: TryOnRunConfig, progress: bool) -> Path:
    from unifashion.data.synthetic.catalogue import CatalogueConfig, make_catalogue
    from unifashion.data.synthetic.worn import WornConfig, build_worn_dataset

    if config.data is not None:
        return Path(config.data)
    root = Path(config.out) / "worn"
    if not (root / "worn.json").is_file():
        catalogue = make_catalogue(CatalogueConfig(n_items=config.n_items, seed=config.catalogue_seed))
        build_worn_dataset(catalogue, root, WornConfig(seed=config.worn_seed), progress=progress)
    return root


def run_tryon(config: TryOnRunConfig, progress: bool = True) -> dict:
    """Build the data, train (or load the trained model), evaluate both tasks in both settings,
    beside the baselines and the model the training started from."""
    from unifashion.data.synthetic.worn import read_garment_attributes
    from unifashion.data.viton import load_viton
    from unifashion.evaluation.features import EffLiteFeatures
    from unifashion.evaluation.results import ResultTable
    from unifashion.models import UniFashion
    from unifashion.training.tryon import save_tryon_model, train_tryon, tryon_uses_sketch

    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    write_run_config(config, out)
    timings_file = out / "timings.json"
    timings = json.loads(timings_file.read_text()) if timings_file.is_file() else {}

    def timed(name: str, started: float) -> None:
        timings[name] = round(time.perf_counter() - started, 1)
        timings_file.write_text(json.dumps(timings, indent=2) + "\n")

    started = time.perf_counter()
    root = _ensure_worn_data(config, progress)
    if "data" not in timings:
        timed("data", started)

    model_dir = out / "model"
    if (model_dir / "config.json").is_file():
        model = UniFashion.from_pretrained(model_dir)
    else:
        started = time.perf_counter()
        model = UniFashion.from_pretrained(config.model)
        records = load_viton(root, "train", "paired")
        result = train_tryon(model, records, config.train, out / "train", progress=progress)
        save_tryon_model(model, model_dir, config.train)
        timed("train", started)
        timings["train_steps_this_session"] = result.steps_done
        timings_file.write_text(json.dumps(timings, indent=2) + "\n")
    model.eval()

    started = time.perf_counter()
    eval_config = config.eval
    eval_config.tryon_sketch = tryon_uses_sketch(model_dir)
    attributes = read_garment_attributes(root)
    classifier = load_or_train_worn_judge(load_viton(root, "train", "paired"), attributes,
                                          config.classifier or out / "worn-attribute-judge",
                                          steps=eval_config.judge_steps, progress=progress)
    features = EffLiteFeatures()
    size = model.diffusion.image_size
    table = ResultTable()
    # The starting model beside the trained one (skipped when a folder was trained elsewhere).
    others = {}
    if eval_config.compare_start_model:
        others["before-tryon-training"] = UniFashion.from_pretrained(config.model).eval()
    grid_data = grid_images = None
    real_features = None
    for setting in eval_config.settings:
        records = load_viton(root, "test", setting)[:eval_config.max_items]
        data = TryOnTestSet.load(records, size, attributes)
        if real_features is None:  # the real test persons (the same people in both settings)
            from unifashion.evaluation.tryon import uint8_images_to_tensor

            real_features = features(uint8_images_to_tensor(data.person))
        generated = evaluate_setting(model, data, setting, real_features, features, classifier, eval_config, table,
                                     progress=progress, other_models=others)
        if grid_data is None or setting == "paired":
            grid_data, grid_images = data, generated
    table.save_json(out / "results.json")
    table.save_markdown(out / "results.md")
    save_grid(result_grid(grid_data, grid_images, rows=eval_config.grid_rows, title="(paired, test)"),
              out / "tryon_grid.png")
    timed("eval", started)
    return {"results": out / "results.json", "grid": out / "tryon_grid.png", "timings": timings,
            "markdown": table.to_markdown()}
