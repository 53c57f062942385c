"""Indexing throughput with the model, side by side in one run: the model's bare ``encode_image``,
the embedding as the builder did it before (``encode_image`` then ``encode_captions`` of the same
images: the vision encoder and the Q-Former twice), the builder's ``embed`` now (one vision and
Q-Former pass feeding Z and the captioning), the builder without captions (``captions=False``: Z
only, for an index without caption fusion), and ``CatalogueBuilder.add`` end to end into a new
index (embedding + store), with and without captions.

    flock /tmp/unifashion-cpu.lock env OMP_NUM_THREADS=1 .venv/bin/python \
        benchmarks/bench_indexing_throughput.py --catalogue outputs/demo/catalogue --items 320 \
        --model tiny-default --out benchmarks/results/indexing_throughput.json

Every path embeds the same images (the first ``--items`` of the catalogue's records, decoded once
beforehand) in batches of ``--batch-size``, after one untimed warm-up batch; captions are the
model's greedy fusion captions (batched, transformers' ``generate`` with its KV cache). Several
``--model`` are measured one after the other in the same run; the captions' lengths are reported
with each, since they decide the captioning's cost (an untrained LM writes every caption to the
cap)."""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path


def measure(model_name: str, records, images, args) -> dict:
    """Every path's items/s for one model, and the lengths of the captions it wrote."""
    import torch

    from unifashion.index import CatalogueIndex
    from unifashion.models import UniFashion
    from unifashion.pipelines.indexing import CatalogueBuilder

    model = UniFashion.from_pretrained(model_name).eval()
    warm, timed = images[: args.batch_size], images[args.batch_size :]
    builder = CatalogueBuilder(model, batch_size=args.batch_size, progress=False)
    bare_builder = CatalogueBuilder(model, batch_size=args.batch_size, progress=False, captions=False)

    def encode_only(batch):
        with torch.no_grad():
            model.encode_image(batch)

    def embed_before(batch):
        with torch.no_grad():
            model.encode_image(batch)
            model.encode_captions(batch)

    captions: list[str] = []

    def embed_now(batch):
        captions.extend(builder.embed(batch).fusion_captions)

    paths = {"encode_image only": encode_only, "embed before (vision and Q-Former twice)": embed_before,
             "embed now (vision and Q-Former once)": embed_now, "embed without captions": bare_builder.embed}
    result = {"model": model_name, "items_per_s": {}}
    for name, run in paths.items():
        run(warm)
        if run is embed_now:
            captions.clear()  # the timed images' captions only
        t0 = time.perf_counter()
        for start in range(0, len(timed), args.batch_size):
            run(timed[start : start + args.batch_size])
        result["items_per_s"][name] = len(timed) / (time.perf_counter() - t0)
        print(f"{model_name}: {name}: {result['items_per_s'][name]:.1f} items/s", flush=True)
    # Caption length decides the captioning cost: an untrained LM runs every caption to the cap.
    lengths = [len(model.caption_lm.encode_text(c)) for c in captions]
    result["caption_tokens"] = {"mean": sum(lengths) / len(lengths), "max": max(lengths),
                                "cap": int(model.config.fusion_caption_tokens), "examples": captions[:3]}

    for name, adder in (("CatalogueBuilder.add (embed now + store)", builder),
                        ("CatalogueBuilder.add without captions (embed + store)", bare_builder)):
        with tempfile.TemporaryDirectory() as workdir:
            index = CatalogueIndex.create(Path(workdir) / "index", dim=adder.embed_dim, num_queries=adder.num_queries,
                                          captions=adder.captions)
            adder.add(index, records[: args.batch_size])  # warm-up, not timed
            t0 = time.perf_counter()
            adder.add(index, records[args.batch_size :])
            result["items_per_s"][name] = len(timed) / (time.perf_counter() - t0)
            print(f"{model_name}: {name}: {result['items_per_s'][name]:.1f} items/s", flush=True)
            index.close()
    bare = result["items_per_s"]["encode_image only"]
    result["fraction_of_encode_image"] = {k: v / bare for k, v in result["items_per_s"].items()}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", nargs="+", default=["tiny-default"],
                        help="models to measure, one after the other (a tag or a saved model folder)")
    parser.add_argument("--catalogue", default="outputs/demo/catalogue")
    parser.add_argument("--items", type=int, default=320)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="benchmarks/results/indexing_throughput.json")
    args = parser.parse_args()

    import torch

    from unifashion.data.synthetic.catalogue import load_catalogue

    torch.set_num_threads(args.threads)
    records = load_catalogue(args.catalogue).item_records()[: args.items + args.batch_size]
    images = [r.load_image() for r in records]
    results = {"items": len(images) - args.batch_size, "batch_size": args.batch_size, "threads": args.threads,
               "load_average": os.getloadavg(), "models": [measure(m, records, images, args) for m in args.model]}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    lines = [f"# Indexing throughput ({results['items']} items, batch {args.batch_size}, {args.threads} thread(s))", "",
             f"Load average at the start: {', '.join(f'{x:.1f}' for x in results['load_average'])}.", ""]
    for result in results["models"]:
        tokens = result["caption_tokens"]
        lines += [f"## {result['model']}", "",
                  f"Fusion captions: {tokens['mean']:.1f} tokens on average, at most {tokens['max']} "
                  f"(cap {tokens['cap']}); for example \"{tokens['examples'][0]}\".", "",
                  "| path | items/s | fraction of encode_image |", "|---|---:|---:|"]
        for name, rate in result["items_per_s"].items():
            lines.append(f"| {name} | {rate:.1f} | {result['fraction_of_encode_image'][name]:.2f} |")
        lines.append("")
    out.with_suffix(".md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
