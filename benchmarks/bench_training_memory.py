"""Peak memory of phase-1 training and of CMR evaluation on FashionGen-layout data, 10k vs 50k items.

The bound to show (issue 13): peak RSS stays under 4 GB and grows by less than 20% from 10,000 to
50,000 items, because nothing that scales with the dataset is held in RAM (frozen features in a
sharded memory-mapped cache on disk, pixels read lazily, scores computed tile by tile).

For each size the benchmark writes a FashionGen h5 file in the original layout (``input_image``
(N, 256, 256, 3) uint8, gzip-chunked per image, and the text columns), under ``--work``
(default /work/cache-bench, never committed), then runs, each in a fresh process whose peak RSS
(VmHWM) is read at its end:

1. ``model``: load the tiny preset, nothing else (the floor every run pays);
2. ``train``: ``run_recipe`` with ``--data fashiongen:FILE``: the frozen-feature cache of every
   image is built (streamed to disk), then ``--steps`` phase-1 Q-Former steps (ITC + ITM) at
   batch 32; time per step from the run's timings;
3. ``eval``: ``run_evaluation`` of that model, CMR only, the random-100 same-category protocol
   (the paper's FashionGen protocol; the full-gallery protocol is N^2 and is left out at this
   size on a CPU), reusing the feature cache of step 2.

Run it under the CPU lock: ``flock /tmp/unifashion-cpu.lock env OMP_NUM_THREADS=2 python
benchmarks/bench_training_memory.py``. Results: benchmarks/results/training_memory.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
CATEGORIES = ("TOPS", "DRESSES", "PANTS", "SKIRTS", "JACKETS & COATS", "SHIRTS", "SWEATERS", "JEANS")
COLOURS = ("black", "white", "navy", "red", "green", "beige", "grey", "pink", "yellow", "brown")


def write_fixture(path: Path, n: int) -> Path:
    """A FashionGen-layout h5 file of n items (drawn garments, captions that describe them)."""
    import h5py
    import numpy as np
    from PIL import Image, ImageDraw

    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    rng = np.random.default_rng(n)
    palette = {c: tuple(int(v) for v in rng.integers(0, 256, 3)) for c in COLOURS}
    with h5py.File(tmp, "w") as f:
        images = f.create_dataset("input_image", shape=(n, 256, 256, 3), dtype=np.uint8, chunks=(1, 256, 256, 3),
                                  compression="gzip", compression_opts=1)
        descriptions, categories, products = [], [], []
        block = []
        for i in range(n):
            colour = COLOURS[int(rng.integers(len(COLOURS)))]
            category = CATEGORIES[int(rng.integers(len(CATEGORIES)))]
            image = Image.new("RGB", (256, 256), (245, 245, 245))
            draw = ImageDraw.Draw(image)
            x0, y0 = (int(v) for v in rng.integers(20, 90, 2))
            draw.rectangle([x0, y0, 256 - x0 + int(rng.integers(-10, 10)), 256 - y0], fill=palette[colour])
            if i % 3 == 0:
                draw.line([x0, y0, 256 - x0, 256 - y0], fill=(255, 255, 255), width=6)
            block.append(np.asarray(image))
            pattern = "striped" if i % 3 == 0 else "plain"
            descriptions.append(f"{colour} {category.lower()} in cotton, regular fit, {pattern}".encode())
            categories.append(category.encode())
            products.append(100000 + i // 2)
            if len(block) == 512 or i == n - 1:
                images[i + 1 - len(block):i + 1] = np.stack(block)
                block = []
        f.create_dataset("input_description", data=np.array(descriptions, dtype="S120").reshape(-1, 1))
        f.create_dataset("input_category", data=np.array(categories, dtype="S24").reshape(-1, 1))
        f.create_dataset("input_productID", data=np.array(products, dtype=np.int64).reshape(-1, 1))
    tmp.rename(path)
    return path


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def child_model() -> dict:
    from unifashion.models import UniFashion

    UniFashion.from_pretrained("tiny")
    return {}


def child_train(fixture: str, work: str, steps: int) -> dict:
    from unifashion.training.recipe import DataSpec, StageSpec, TrainRecipe, run_recipe
    from unifashion.training.trainer import LoopConfig, OptimConfig

    out = Path(work) / "run"
    # A fresh run every time (only the feature cache is reused): a finished run would resume as done.
    shutil.rmtree(out, ignore_errors=True)
    recipe = TrainRecipe(model="tiny", output_dir=str(out),
                         data=DataSpec(sources=f"fashiongen:{fixture}", feature_cache=str(Path(work) / "features")),
                         stages=[StageSpec("phase1-qformer", 1, "qformer",
                                           loop=LoopConfig(steps=steps, batch_size=32, checkpoint_every=steps,
                                                           device="cpu", optim=OptimConfig(lr=1e-4, warmup_steps=2)))])
    started = time.perf_counter()
    run_recipe(recipe, progress=False)
    timing = json.loads((out / "timings.json").read_text())["phase1-qformer"]
    return {"seconds": round(time.perf_counter() - started, 1), "steps": timing["steps"],
            "seconds_per_step": timing["seconds_per_step"], "loss_last": timing["last_losses"]["loss"]}


def child_eval(fixture: str, work: str) -> dict:
    from unifashion.evaluation.runner import EvalConfig
    from unifashion.experiments.evaluate import EvalRunConfig, run_evaluation

    started = time.perf_counter()
    result = run_evaluation(EvalRunConfig(
        model=str(Path(work) / "run" / "phase1-qformer" / "final"), data=f"fashiongen:{fixture}",
        out=str(Path(work) / "eval"), device="cpu",
        eval=EvalConfig(tasks=("cmr",), cmr_full_gallery=False, feature_cache=str(Path(work) / "features"))))
    rows = {r.metric: r.value for r in result.table.rows if r.method == "UniFashion"}
    return {"seconds": round(time.perf_counter() - started, 1), "mean_R": rows.get("mean_R"),
            "protocol": next(r.protocol for r in result.table.rows if r.method == "UniFashion")}


def run_child(kind: str, *args: str) -> dict:
    command = [sys.executable, __file__, "--child", kind, *args]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{kind} failed:\n{done.stderr[-4000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["wall_seconds"] = round(time.perf_counter() - started, 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 50_000])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--work", default="/work/cache-bench")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("child_args", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        from unifashion.data.heap import bound_heap_growth

        bound_heap_growth()  # as the CLI's entry point does: the runs measured are the CLI's
        result = {"model": child_model, "train": child_train, "eval": child_eval}[args.child](
            *[int(a) if a.isdigit() else a for a in args.child_args])
        result["peak_rss_mb"] = round(peak_rss_mb(), 1)
        print(json.dumps(result))
        return

    results: dict = {"sizes": {}, "steps": args.steps, "batch_size": 32, "preset": "tiny",
                     "model_only": run_child("model")}
    print("model only:", results["model_only"], flush=True)
    for n in args.sizes:
        work = Path(args.work) / f"fashiongen-{n}"
        started = time.perf_counter()
        fixture = write_fixture(work / "fashiongen_256_256_train.h5", n)
        entry = {"fixture_seconds": round(time.perf_counter() - started, 1),
                 "fixture_bytes": fixture.stat().st_size,
                 "feature_cache_reused": any((work / "features").glob("*/meta.json"))}
        entry["train"] = run_child("train", str(fixture), str(work), str(args.steps))
        print(n, "train:", entry["train"], flush=True)
        entry["eval"] = run_child("eval", str(fixture), str(work))
        print(n, "eval:", entry["eval"], flush=True)
        results["sizes"][str(n)] = entry
    sizes = [str(n) for n in args.sizes]
    lines = ["# Peak memory of training and evaluation on FashionGen-layout data", "",
             f"`benchmarks/bench_training_memory.py`: tiny preset, phase 1 (Q-Former stage, ITC + ITM), "
             f"{args.steps} steps at batch 32, CPU; CMR evaluation with the random-100 protocol. Each row is a "
             "fresh process; peak RSS is its VmHWM. The training run includes building the frozen-feature cache "
             "of every image (on disk) unless a cache from an earlier run is reused (the last column). "
             "Loading the model alone peaks at "
             f"{results['model_only']['peak_rss_mb']:.0f} MB.", "",
             "| items | train peak RSS (MB) | train s/step | cache + training (s) | eval peak RSS (MB) | eval (s) "
             "| feature caches |",
             "| ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for n in sizes:
        e = results["sizes"][n]
        lines.append(f"| {int(n):,} | {e['train']['peak_rss_mb']:.0f} | {e['train']['seconds_per_step']:.2f} | "
                     f"{e['train']['seconds']:.0f} | {e['eval']['peak_rss_mb']:.0f} | {e['eval']['seconds']:.0f} | "
                     f"{'reused' if e['feature_cache_reused'] else 'built'} |")
    if len(sizes) >= 2:
        first, last = results["sizes"][sizes[0]], results["sizes"][sizes[-1]]
        growth = {k: 100 * (last[k]["peak_rss_mb"] / first[k]["peak_rss_mb"] - 1) for k in ("train", "eval")}
        results["growth_percent"] = growth
        peak = max(e[k]["peak_rss_mb"] for e in results["sizes"].values() for k in ("train", "eval"))
        results["bound_met"] = peak < 4096 and all(g < 20 for g in growth.values())
        lines += ["", f"Growth from {int(sizes[0]):,} to {int(sizes[-1]):,} items: training {growth['train']:+.1f}%, "
                      f"evaluation {growth['eval']:+.1f}%; largest peak {peak:.0f} MB. Bound (< 4 GB, < 20% growth): "
                      f"{'met' if results['bound_met'] else 'NOT met'}."]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "training_memory.json").write_text(json.dumps(results, indent=2))
    (RESULTS / "training_memory.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
