"""Fine-tuning on a shop's image folder: retrieval on the folder's held-out part before and after.

A shop's catalogue is stood in for by an image folder with ``metadata.jsonl`` (id, path, category,
a product description as ``caption``), made from the embedded renderer with a seed no model here
was trained on (``--items`` garments). ``imagefolder:FOLDER`` holds out 20% of the ids (by a hash
of the id) for evaluation. The run:

1. evaluates each starting model (``--model``, one or more: the ``tiny`` preset, i.e. pretrained
   EfficientNet-Lite0 and MiniLM with the Q-Former's cross-attention and heads untrained, and/or a
   trained default such as ``tiny-default``) on the held-out part: CMR, full gallery and random-100;
2. fine-tunes it on the folder's training part (phase 1, Q-Former stage, ``--steps`` at batch 32),
   captions in the folder's style (professional);
3. evaluates the fine-tuned model on the same held-out part, in the same way.

Run under the CPU lock. Results: benchmarks/results/folder_finetune.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def write_folder(root: Path, n_items: int, seed: int) -> Path:
    from unifashion.data.synthetic.catalogue import CatalogueConfig, build_catalogue_files

    if (root / "metadata.jsonl").is_file():
        return root
    catalogue = build_catalogue_files(root / "render", CatalogueConfig(n_items=n_items, seed=seed), progress=False)
    with (root / "metadata.jsonl").open("w") as f:
        for record in catalogue.item_records():
            f.write(json.dumps({"id": record.item_id, "path": str(Path(record.image).relative_to(root)),
                                "category": record.category, "caption": record.captions["professional"]}) + "\n")
    return root


def evaluate(model: str, spec: str, out: Path) -> dict:
    from unifashion.evaluation.runner import EvalConfig
    from unifashion.experiments.evaluate import EvalRunConfig, run_evaluation

    result = run_evaluation(EvalRunConfig(model=model, data=spec, out=str(out), device="cpu",
                                          eval=EvalConfig(tasks=("cmr",))))
    return {f"{r.protocol} {r.metric}": round(r.value, 2) for r in result.table.rows if r.method == "UniFashion"}


def finetune(model: str, spec: str, work: Path, steps: int) -> dict:
    """Evaluate ``model`` on the held-out part, fine-tune it on the training part, evaluate again."""
    from unifashion.training.recipe import DataSpec, StageSpec, TrainRecipe, run_recipe
    from unifashion.training.trainer import LoopConfig, OptimConfig

    started = time.perf_counter()
    before = evaluate(model, spec, work / "eval-before")
    recipe = TrainRecipe(model=model, output_dir=str(work / "run"), data=DataSpec(sources=spec),
                         stages=[StageSpec("finetune", 1, "qformer", loop=LoopConfig(
                             steps=steps, batch_size=32, checkpoint_every=steps, device="cpu",
                             optim=OptimConfig(lr=1e-4, warmup_steps=max(1, steps // 10))))])
    final = run_recipe(recipe, progress=False)
    after = evaluate(str(final), spec, work / "eval-after")
    data = json.loads((work / "run" / "data.json").read_text())
    timing = json.loads((work / "run" / "timings.json").read_text())["finetune"]
    return {"model": model, "data": data, "train_seconds_per_step": timing["seconds_per_step"], "before": before,
            "after": after, "seconds": round(time.perf_counter() - started, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--steps", type=int, default=80)
    parser.add_argument("--model", nargs="+", default=["tiny"],
                        help="starting models (a preset, an installed tag or a model folder), each fine-tuned")
    parser.add_argument("--work", default="/work/cache-bench/folder-finetune")
    args = parser.parse_args()

    work = Path(args.work)
    folder = write_folder(work / "shop", args.items, args.seed)
    spec = f"imagefolder:{folder}"
    runs = [finetune(model, spec, work / f"start-{i}", args.steps) for i, model in enumerate(args.model)]
    data = runs[0]["data"]
    results = {"items": args.items, "seed": args.seed, "steps": args.steps, "runs": runs}
    lines = ["# Fine-tuning on an image folder: CMR on its held-out part", "",
             f"`benchmarks/bench_folder_finetune.py`: {args.items} rendered garments (seed {args.seed}) as an image "
             f"folder with metadata captions (professional style); training part: {data['pairs']} items; "
             f"fine-tuning: phase 1 Q-Former stage, {args.steps} steps at batch 32, CPU.", ""]
    for run in runs:
        lines += [f"Start: `{run['model']}` ({run['train_seconds_per_step']:.2f} s/step).", "",
                  "| metric (held-out part) | before | after |", "| --- | ---: | ---: |"]
        lines += [f"| {k} | {run['before'][k]:.2f} | {run['after'].get(k, float('nan')):.2f} |" for k in run["before"]]
        lines.append("")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "folder_finetune.json").write_text(json.dumps(results, indent=2))
    (RESULTS / "folder_finetune.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
