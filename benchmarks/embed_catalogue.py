"""Embed a large rendered catalogue once, for the search benchmark (bench_search.py).

    flock /tmp/unifashion-cpu.lock .venv/bin/python benchmarks/embed_catalogue.py \
        --items 50000 --out /work/cache-bench/catalogue-50k

Renders ``--items`` distinct synthetic catalogue items (unifashion.data.synthetic) and embeds each
with the model: Z (encode_image, 32 x 256), the embedding of the item's "professional" caption as
its caption-fusion vector Z_C, and the embedding of its "detailed" caption as the item's text (the
bank that image -> texts searches). Z_C stands in for the embedding of the model's *generated*
caption because the model used here has an untrained caption LM, whose captions are noise; the
index treats Z_C as any vector. Also embeds query sets: text queries (short captions), composed
queries (reference image + modifying text of triplets) and image queries.

The model is a trained one (``--model``, e.g. the default the demo trains) or, without it,
``UniFashion.from_config`` of the tiny preset: pretrained EfficientNet-Lite0 (vision) and MiniLM
(text), Q-Former initialised fresh. Its embeddings are untrained for retrieval, but
they have the neighbourhood structure of real encoders over real renders (items of one
category and colour lie close), which is what an ANN benchmark needs; no trained model is
required to measure recall *against exact max-sim*.

Work is written shard by shard (``--shard`` items each) and resumes after an interruption. The
output folder holds ``multi.npy`` (N, 32, 256) float16, ``fusion.npy`` and ``text.npy`` (N, 256)
float32, ``queries.npz`` and ``info.json`` (model, items, seconds).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch


def build_model(seed: int = 0, model: str | None = None):
    """``model`` (a trained folder or installed tag) without its generators, or, when None, the tiny
    preset with its pretrained parts and a fresh Q-Former drawn from ``seed``, so that a resumed run
    (a new process) embeds with the same model as the shards before it."""
    from unifashion.models import UniFashion
    from unifashion.models.config import UniFashionConfig

    if model is not None:
        return UniFashion.from_pretrained(model, {"caption_lm": None, "diffusion": None}).eval()
    torch.manual_seed(seed)
    config = UniFashionConfig.from_preset("tiny", {"caption_lm": None, "diffusion": None})
    return UniFashion.from_config(config).eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=50_000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--shard", type=int, default=2048)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", help="a trained model folder or installed tag (default: the tiny preset with a "
                        "fresh Q-Former drawn from --seed)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from unifashion.data.synthetic.catalogue import CatalogueConfig, make_catalogue

    out = args.out
    shards = out / "shards"
    shards.mkdir(parents=True, exist_ok=True)
    catalogue = make_catalogue(CatalogueConfig(n_items=args.items, seed=args.seed))
    items = catalogue.items[: args.items]
    model = build_model(args.seed, args.model)
    # Shards of one folder must come from one model: a resumed run checks what the first one used.
    from unifashion.models.pretrained import model_label

    description = (f"{model_label(args.model, model.weights_identity())}, trained" if args.model else
                   f"UniFashion.from_config(tiny preset, seed {args.seed}): pretrained EfficientNet-Lite0 + MiniLM, "
                   "fresh Q-Former")
    marker = out / "model.txt"
    if marker.is_file() and marker.read_text() != description:
        raise SystemExit(f"{out} holds shards of another model ({marker.read_text()}); use another --out")
    marker.write_text(description)
    started = time.perf_counter()
    spent = 0.0
    for first in range(0, len(items), args.shard):
        path = shards / f"shard-{first:07d}.npz"
        if path.is_file():
            continue
        t0 = time.perf_counter()
        part = items[first : first + args.shard]
        multi, fusion, text = [], [], []
        for start in range(0, len(part), args.batch):
            batch = part[start : start + args.batch]
            images = [catalogue.render(item.item_id) for item in batch]
            with torch.no_grad():
                multi.append(model.encode_image(images).float().numpy().astype(np.float16))
                fusion.append(model.encode_text([i.captions["professional"] for i in batch]).float().numpy())
                text.append(model.encode_text([i.captions["detailed"] for i in batch]).float().numpy())
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, multi=np.concatenate(multi), fusion=np.concatenate(fusion), text=np.concatenate(text))
        tmp.rename(path)
        spent += time.perf_counter() - t0
        done = min(first + args.shard, len(items))
        print(f"{done}/{len(items)} items, {done / max(spent, 1e-9):.1f} items/s this run", flush=True)

    rng = np.random.default_rng(args.seed)
    chosen = np.sort(rng.choice(len(items), size=args.queries, replace=False))
    in_catalogue = {item.item_id for item in items}
    triplets = [t for t in catalogue.triplets if t.reference_id in in_catalogue and t.target_id in in_catalogue]
    triplets = [triplets[i] for i in np.sort(rng.choice(len(triplets), size=args.queries, replace=False))]
    query_texts = [items[i].captions["short"] for i in chosen]
    composed_texts = [t.modification_text for t in triplets]
    composed_ids = [t.reference_id for t in triplets]
    with torch.no_grad():
        text_queries = model.encode_text(query_texts).float().numpy()
        composed_queries = np.concatenate([
            model.encode_composed([catalogue.render(r) for r in composed_ids[s : s + 32]],
                                  composed_texts[s : s + 32]).float().numpy()
            for s in range(0, len(triplets), 32)])

    files = sorted(shards.glob("shard-*.npz"))
    count = len(items)
    multi = np.lib.format.open_memmap(out / "multi.npy", mode="w+", dtype=np.float16, shape=(count, 32, 256))
    fusion = np.empty((count, 256), np.float32)
    text = np.empty((count, 256), np.float32)
    row = 0
    for f in files:
        with np.load(f) as data:
            n = len(data["multi"])
            multi[row : row + n] = data["multi"]
            fusion[row : row + n], text[row : row + n] = data["fusion"], data["text"]
            row += n
    assert row == count, (row, count)
    multi.flush()
    np.save(out / "fusion.npy", fusion)
    np.save(out / "text.npy", text)
    np.savez(out / "queries.npz", text=text_queries, composed=composed_queries, image_rows=chosen,
             text_strings=np.array(query_texts), composed_strings=np.array(composed_texts),
             composed_reference_ids=np.array(composed_ids))
    categories = np.array([item.category for item in items])
    np.save(out / "categories.npy", categories)
    info = {"items": count, "model": description, "model_path": args.model, "torch_threads": args.threads,
            "seconds_this_run": time.perf_counter() - started,
            "embedding_seconds_this_run": spent, "queries": args.queries}
    previous = out / "info.json"
    if previous.is_file():
        info["earlier_runs"] = json.loads(previous.read_text())
    previous.write_text(json.dumps(info, indent=2))
    print(json.dumps(info, indent=2))


if __name__ == "__main__":
    main()
