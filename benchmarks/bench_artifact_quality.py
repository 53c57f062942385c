"""What storing the shipped models in float16 or int8 costs in quality, measured side by side.

    PYTHONPATH=src .venv/bin/python benchmarks/bench_artifact_quality.py \
        --catalogue outputs/demo/catalogue --out benchmarks/results/artifact_quality.md

Takes a trained UniFashion model and dual-encoder baseline (default: the ``tiny-default`` and
``dual-encoder-default`` tags), packages both as float16 and as int8 (``pretrained.package``, wheel
parts left out) in a temporary folder, and runs the same evaluation
(:func:`unifashion.experiments.evaluate.run_evaluation`: CMR, CIR, captioning and generation on
the catalogue's test split) on the models as trained and on each packaged copy. Every metric is
written with its value per storage and the largest change against the model as trained.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

STORAGE = ("float16", "int8")
MB = 1_000_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny-default", help="a trained UniFashion folder or tag")
    parser.add_argument("--baseline", default="dual-encoder-default", help="a trained dual-encoder folder or tag")
    parser.add_argument("--catalogue", default="outputs/demo/catalogue")
    parser.add_argument("--classifier", default=None, help="attribute classifier folder (default: the cached one)")
    parser.add_argument("--tasks", default="cmr,cir,fic,fig,phrasing")
    parser.add_argument("--fig-items", type=int, default=32, help="generated images per storage (FIG)")
    parser.add_argument("--out", default="benchmarks/results/artifact_quality.md")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from unifashion.evaluation.runner import EvalConfig
    from unifashion.experiments.evaluate import EvalRunConfig, run_evaluation
    from unifashion.models import pretrained

    model = Path(args.model) if Path(args.model).is_dir() else pretrained.locate(args.model)
    baseline = Path(args.baseline) if Path(args.baseline).is_dir() else pretrained.locate(args.baseline)
    classifier = args.classifier or str(pretrained.home() / "models" / "attribute-classifier")
    tasks = tuple(t.strip() for t in args.tasks.split(",") if t.strip())
    values: dict[tuple[str, str, str, str], dict[str, float]] = {}
    sizes: dict[str, int] = {}
    seconds: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        variants = {"as trained": (model, baseline)}
        for dtype in STORAGE:
            root = tmp / dtype
            # Measured whatever their size (the 50 MB budget is checked when a model is packaged to ship).
            variants[dtype] = (pretrained.package("tiny-default", model, dtype=dtype, root=root, max_bytes=10**12),
                               pretrained.package("dual-encoder-default", baseline, dtype=dtype, root=root,
                                                  max_bytes=10**12))
            sizes[dtype] = sum(pretrained.folder_bytes(folder) for folder in variants[dtype])
        for name, (unifashion_dir, baseline_dir) in variants.items():
            started = time.perf_counter()
            result = run_evaluation(EvalRunConfig(
                model=str(unifashion_dir), catalogue=args.catalogue, out=str(tmp / f"eval-{name}"),
                dual_encoder=str(baseline_dir), classifier=classifier,
                eval=EvalConfig(tasks=tasks, cir_ks=(1, 10, 50), fig_max_items=args.fig_items)))
            seconds[name] = time.perf_counter() - started
            for row in result.table.rows:
                if row.method == "random":
                    continue
                values.setdefault((row.task, row.protocol, row.method, row.metric), {})[name] = row.value

    names = ["as trained", *STORAGE]
    lines = [
        "# What float16 and int8 storage cost in quality",
        "",
        f"Written by `benchmarks/bench_artifact_quality.py`: `{args.model}` and `{args.baseline}` "
        f"({model}, {baseline}), evaluated on the test split of `{args.catalogue}` as trained and from "
        "packaged copies. Packaged size of both together: "
        + ", ".join(f"{dtype} {sizes[dtype] / MB:.1f} MB" for dtype in STORAGE) + ". Evaluation time: "
        + ", ".join(f"{name} {seconds[name]:.0f} s" for name in names) + ".",
        "",
        "| task | protocol | method | metric | " + " | ".join(names) + " | largest change |",
        "|---|---|---|---|" + "---:|" * (len(names) + 1),
    ]
    for (task, protocol, method, metric), by_storage in sorted(values.items()):
        reference = by_storage.get("as trained")
        cells = [f"{by_storage[n]:.2f}" if n in by_storage else "-" for n in names]
        changes = [abs(by_storage[n] - reference) for n in STORAGE if n in by_storage and reference is not None]
        largest = f"{max(changes):.2f}" if changes else "-"
        lines.append(f"| {task} | {protocol} | {method} | {metric} | " + " | ".join(cells) + f" | {largest} |")
    lines.append("")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
