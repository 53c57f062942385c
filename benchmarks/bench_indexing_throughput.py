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
beforehand; the ``add`` paths load them from disk, as a build does) in batches of
``--batch-size``, after one untimed warm-up batch, the paths taking turns batch by batch (each
``add`` call commits its batch); captions are the
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
    builder = CatalogueBuilder(model, batch_size=args.batch_size, progress=False)
    bare_builder = CatalogueBuilder(model, batch_size=args.batch_size, progress=False, captions=False)
    captions: list[str] = []

    # Each path takes the positions of one batch: the embedding paths read the decoded images, the
    # add paths the records (loading their images from disk, as a build does).
    def encode_only(batch):
        with torch.no_grad():
            model.encode_image([images[i] for i in batch])

    def embed_before(batch):
        with torch.no_grad():
            model.encode_image([images[i] for i in batch])
            model.encode_captions([images[i] for i in batch])

    def embed_now(batch):
        captions.extend(builder.embed([images[i] for i in batch]).fusion_captions)

    def embed_bare(batch):
        bare_builder.embed([images[i] for i in batch])

    with tempfile.TemporaryDirectory() as workdir:
        indexes = {adder: CatalogueIndex.create(Path(workdir) / name, dim=adder.embed_dim,
                                                num_queries=adder.num_queries, captions=adder.captions)
                   for adder, name in ((builder, "captioned"), (bare_builder, "bare"))}
        paths = {"encode_image only": encode_only, "embed before (vision and Q-Former twice)": embed_before,
                 "embed now (vision and Q-Former once)": embed_now, "embed without captions": embed_bare,
                 "CatalogueBuilder.add (embed now + store)":
                     lambda batch: builder.add(indexes[builder], [records[i] for i in batch]),
                 "CatalogueBuilder.add without captions (embed + store)":
                     lambda batch: bare_builder.add(indexes[bare_builder], [records[i] for i in batch])}
        batches = [range(start, min(start + args.batch_size, len(images)))
                   for start in range(0, len(images), args.batch_size)]
        for run in paths.values():
            run(batches[0])  # warm-up, not timed
        captions.clear()  # the timed images' captions only
        # Round robin: every path takes a batch before any takes the next, so a slower spell of a
        # shared machine slows all paths alike instead of the one that happened to run then.
        seconds = dict.fromkeys(paths, 0.0)
        for batch in batches[1:]:
            for name, run in paths.items():
                t0 = time.perf_counter()
                run(batch)
                seconds[name] += time.perf_counter() - t0
        for index in indexes.values():
            index.close()
    timed = len(images) - len(batches[0])
    from unifashion.models.pretrained import model_label

    label = model_label(model_name, model.weights_identity())
    result = {"model": label, "items_per_s": {name: timed / seconds[name] for name in paths}}
    for name, rate in result["items_per_s"].items():
        print(f"{model_name}: {name}: {rate:.1f} items/s", flush=True)
    # Caption length decides the captioning cost: an untrained LM runs every caption to the cap.
    lengths = [len(model.caption_lm.encode_text(c)) for c in captions]
    result["caption_tokens"] = {"mean": sum(lengths) / len(lengths), "max": max(lengths),
                                "cap": int(model.config.fusion_caption_tokens), "examples": captions[:3]}
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
