"""Forward latency of the tiny preset per task on this machine, written to a file.

    .venv/bin/python benchmarks/bench_model_latency.py --model tiny-default --out benchmarks/results/model_latency.json

Each task is timed as the median of ``--repeats`` runs after one warm-up, with the torch thread
count given (2 = both cores of the reference machine).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch


def median_seconds(fn, repeats: int) -> float:
    """Median wall time of ``repeats`` calls of ``fn`` after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny", help="a preset, trained tag or saved folder")
    parser.add_argument("--out", default="benchmarks/results/model_latency.json")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from unifashion.data.synthetic.catalogue import CatalogueConfig, make_catalogue
    from unifashion.models import UniFashion
    from unifashion.models.pretrained import model_label
    from unifashion.settings import GENERATION, TEXT_TO_IMAGE_EVAL

    model = UniFashion.from_pretrained(args.model).eval()
    catalogue = make_catalogue(CatalogueConfig(n_items=40, seed=123))
    images = [catalogue.render(it.item_id) for it in catalogue.items[:32]]
    texts = [it.captions["short"] for it in catalogue.items[:32]]
    generator = torch.Generator().manual_seed(0)
    names = {"pndm": "PNDM", "dpmsolver++": "DPM-Solver++"}
    tasks = {
        "encode_image, batch 32": lambda: model.encode_image(images),
        "encode_text, batch 32": lambda: model.encode_text(texts),
        "encode_composed, batch 32": lambda: model.encode_composed(images, ["is darker"] * 32),
        "encode_composed, batch 1": lambda: model.encode_composed(images[:1], ["is darker"]),
        "caption greedy (max 40 tokens), batch 1": lambda: model.caption(images[:1], style="short",
                                                                         max_new_tokens=40),
        "caption greedy (max 40 tokens), batch 32": lambda: model.caption(images, style="short", max_new_tokens=40),
        **{f"generate text-to-image {names[s.sampler]} {s.steps} steps, 1 image": lambda s=s: model.generate(
            texts[:1], num_inference_steps=s.steps, scheduler=s.sampler, guidance_scale=s.guidance,
            generator=generator) for s in (TEXT_TO_IMAGE_EVAL, GENERATION)},
    }
    results = {}
    with torch.no_grad():
        for name, fn in tasks.items():
            results[name] = round(median_seconds(fn, args.repeats), 4)
            print(f"{name}: {results[name]:.3f} s")
    label = model_label(args.model, model.weights_identity())
    report = {"model": label, "threads": args.threads, "repeats": args.repeats, "machine": platform.machine(),
              "processor_count": torch.get_num_threads(), "parameters": model.parameter_counts(),
              "seconds": results}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
