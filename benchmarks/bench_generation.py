"""Generation: the text-to-image evaluation's sampler (unifashion.settings.TEXT_TO_IMAGE_EVAL: PLMS/PNDM
with 50 steps, the paper's sampler) against the default one (settings.GENERATION: DPM-Solver++ with 20 steps),
latency and FID-EffLite0 / KID / attribute accuracy of each, measured side by side in one run.

    .venv/bin/python benchmarks/bench_generation.py --out benchmarks/results/generation.json

Latency: seconds per image at batch 1 (median of ``--repeats`` runs after a warm-up) and per
image at batch 16. Quality: the evaluation runner's FIG protocol (text-to-image from the test
split's short captions, ``--items`` images, same prompts and seed for both samplers) with
EfficientNet-Lite0 features and the attribute classifier.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch
from bench_model_latency import median_seconds  # the scripts' folder is on sys.path

from unifashion.settings import GENERATION, TEXT_TO_IMAGE_EVAL

# PLMS is diffusers' PNDM scheduler with the Runge-Kutta warm-up skipped (the paper's sampler).
SAMPLERS = ((TEXT_TO_IMAGE_EVAL.sampler, TEXT_TO_IMAGE_EVAL.steps), (GENERATION.sampler, GENERATION.steps))
LABELS = {"pndm": "PLMS", "dpmsolver++": "DPM-Solver++"}


def seconds_per_image(model, prompts: list[str], scheduler: str, steps: int, repeats: int) -> float:
    def run():
        model.generate(prompts, num_inference_steps=steps, scheduler=scheduler,
                       generator=torch.Generator().manual_seed(0))

    return median_seconds(run, repeats) / len(prompts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny-default")
    parser.add_argument("--catalogue", default="outputs/demo/catalogue")
    parser.add_argument("--classifier", default=None, help="attribute classifier folder (default: the cached one)")
    parser.add_argument("--items", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/generation.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from unifashion.data.synthetic.catalogue import load_catalogue
    from unifashion.evaluation.attribute_classifier import load_or_train_classifier
    from unifashion.evaluation.features import EffLiteFeatures
    from unifashion.evaluation.results import ResultTable
    from unifashion.evaluation.runner import EvalArtifacts, EvalConfig, evaluate_unifashion
    from unifashion.evaluation.split_data import SplitData
    from unifashion.models import UniFashion

    load_average = [round(x, 2) for x in os.getloadavg()]
    model = UniFashion.from_pretrained(args.model).eval()
    data = SplitData(load_catalogue(args.catalogue), "test")
    from unifashion.models import pretrained

    classifier = load_or_train_classifier(args.classifier or pretrained.home() / "models" / "attribute-classifier")
    features = EffLiteFeatures()
    prompts = [r.caption("short") for r in data.items[:16]]
    rows = []
    for scheduler, steps in SAMPLERS:
        row = {"scheduler": scheduler, "steps": steps,
               "seconds_per_image_batch_1": seconds_per_image(model, prompts[:1], scheduler, steps, args.repeats),
               "seconds_per_image_batch_16": seconds_per_image(model, prompts, scheduler, steps, 1)}
        table = ResultTable()
        cfg = EvalConfig(split="test", tasks=("fig",), fig_max_items=args.items, fig_steps=steps,
                         fig_scheduler=scheduler)
        start = time.perf_counter()
        evaluate_unifashion(model, data, cfg, table, EvalArtifacts(), classifier=classifier, fid_features=features)
        row["fig_eval_seconds"] = time.perf_counter() - start
        row["metrics"] = {r.metric: r.value for r in table.rows if r.method == "UniFashion"}
        rows.append(row)
        print(json.dumps(row, indent=1), flush=True)

    pndm, dpm = rows
    results = {
        "model": pretrained.model_label(args.model, model.weights_identity()), "items": args.items,
        "machine": {"cpus": os.cpu_count(), "threads": args.threads, "processor": platform.machine(),
                    "load_average_at_start": load_average},
        "samplers": rows,
        "speedup_batch_1": pndm["seconds_per_image_batch_1"] / dpm["seconds_per_image_batch_1"],
        "speedup_batch_16": pndm["seconds_per_image_batch_16"] / dpm["seconds_per_image_batch_16"],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    metrics = list(pndm["metrics"])
    lines = [f"# Generation: {LABELS[pndm['scheduler']]}-{pndm['steps']} against "
             f"{LABELS[dpm['scheduler']]}-{dpm['steps']}", "",
             f"Model `{args.model}`, {args.threads} torch threads, load average at start {load_average}; "
             f"{args.items} images from the test split's short captions, same prompts and seed for both; "
             "FID/KID on EfficientNet-Lite0 features (not Inception).", "",
             "| sampler | steps | s/image, batch 1 | s/image, batch 16 | " + " | ".join(metrics) + " |",
             "|---|---:|---:|---:|" + "---:|" * len(metrics)]
    for row in rows:
        lines.append(f"| {LABELS[row['scheduler']]} | {row['steps']} | {row['seconds_per_image_batch_1']:.2f} | "
                     f"{row['seconds_per_image_batch_16']:.3f} | "
                     + " | ".join(f"{row['metrics'][m]:.1f}" for m in metrics) + " |")
    lines += ["", f"DPM-Solver++-20 is {results['speedup_batch_1']:.1f}x faster at batch 1 and "
              f"{results['speedup_batch_16']:.1f}x at batch 16."]
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
