"""End-to-end query latency and throughput of the three query kinds at 10k, 100k and 1M items,
with the trained model, and indexing throughput against batch size.

    .venv/bin/python benchmarks/bench_queries.py --out benchmarks/results/queries.json          # 10k, 100k
    .venv/bin/python benchmarks/bench_queries.py --sizes 10000 100000 1000000 ...              # + 1M (~17 GB disk)

What is measured, side by side in one run:

* query kinds, as :class:`unifashion.pipelines.SearchPipeline` serves them:
  - text -> images: ``encode_text`` + index search (ANN over every item vector, exact max-sim re-rank);
  - image -> texts: ``encode_image`` + ranking of the catalogue's texts by max over the image's
    32 queries (:func:`unifashion.pipelines.search.rank_texts`, brute force);
  - composed (image + text) -> images: ``encode_composed`` + index search with caption fusion;
* per kind and catalogue size: single-query latency p50/p99 (encode and search apart, and their
  sum), single-stream queries/s, and batched queries/s (32 queries encoded and searched at once);
* recall@10 of the ANN + re-rank search against exact max-sim, for the model's real queries;
* bytes per item on disk and in RAM;
* indexing throughput (items/s) of :class:`CatalogueBuilder` (image embedding + the generated
  caption Z_C + its embedding + the store) against the embedding batch size.

The catalogue at scale. Real embeddings of ``--base-items`` catalogue items (Z, Z_C and the item's
caption embedding, from the model) are replicated with small noise up to each size: white-noise
vectors have no neighbourhoods. Every copy is a near-duplicate of its base item,
so at 1M items each base item has hundreds of copies; the exact top 10 is then a choice among
near-duplicates, which is the hard case for the ANN stage (see the recall column).
For image -> texts, each item gets its own text vector (a noisy copy of its base item's caption
embedding), i.e. a catalogue whose every item has a distinct description.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

TOP_K = 10
BLOCK = 10_000
KINDS = ("text -> images", "image -> texts", "composed -> images")


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def percentiles(ms: list[float]) -> dict[str, float]:
    values = np.asarray(ms)
    return {"p50_ms": float(np.percentile(values, 50)), "p99_ms": float(np.percentile(values, 99)),
            "mean_ms": float(values.mean())}


class ReplicatedCatalogue:
    """Noisy copies of real item embeddings; item i is a copy of base item ``i % base``."""

    def __init__(self, multi: np.ndarray, fusion: np.ndarray, text: np.ndarray, categories: list[str],
                 noise: float, seed: int = 0):
        self.multi, self.fusion, self.text, self.categories = multi, fusion, text, categories
        self.noise, self.seed = noise, seed
        self.dim = multi.shape[-1]

    def block(self, start: int, stop: int) -> tuple[list[str], np.ndarray, np.ndarray, list[dict]]:
        rng = np.random.default_rng([self.seed, start])
        base = np.arange(start, stop) % len(self.multi)
        scale = self.noise / np.sqrt(self.dim)
        multi = unit(self.multi[base] + scale * rng.standard_normal(self.multi[base].shape, dtype=np.float32))
        fusion = unit(self.fusion[base] + scale * rng.standard_normal(self.fusion[base].shape, dtype=np.float32))
        ids = [f"item-{i}" for i in range(start, stop)]
        return ids, multi.astype(np.float32), fusion.astype(np.float32), [
            {"category": self.categories[b]} for b in base]

    def texts(self, size: int) -> np.ndarray:
        out = np.empty((size, self.dim), dtype=np.float32)
        for start in range(0, size, BLOCK):
            stop = min(start + BLOCK, size)
            rng = np.random.default_rng([self.seed, 7, start])
            base = np.arange(start, stop) % len(self.text)
            noisy = self.text[base] + (self.noise / np.sqrt(self.dim)) * rng.standard_normal(
                (stop - start, self.dim), dtype=np.float32)
            out[start:stop] = unit(noisy)
        return out


def embed_base(model, records, batch_size: int = 32):
    """Z, Z_C and the item caption's embedding of each record, with the model (as indexing does)."""
    from unifashion.data.records import load_image
    from unifashion.pipelines.indexing import CatalogueBuilder

    builder = CatalogueBuilder(model, batch_size=batch_size, progress=False)
    multi, fusion, text = [], [], []
    for start in tqdm(range(0, len(records), batch_size), desc="embedding base items", unit="batch"):
        batch = records[start:start + batch_size]
        embedded = builder.embed([load_image(r.image) for r in batch])
        multi.append(embedded.multi_vectors)
        fusion.append(embedded.fusion_vectors)
        with torch.no_grad():
            text.append(model.encode_text([r.captions["detailed"] for r in batch]).float().numpy())
    return np.concatenate(multi), np.concatenate(fusion), np.concatenate(text)


def build_index(path: Path, catalogue: ReplicatedCatalogue, size: int, num_queries: int) -> float:
    from unifashion.index import CatalogueIndex

    index = CatalogueIndex.create(path, dim=catalogue.dim, num_queries=num_queries)
    start = time.perf_counter()
    for first in tqdm(range(0, size, BLOCK), desc=f"building {size:,}-item index", unit="block"):
        ids, multi, fusion, metadata = catalogue.block(first, min(first + BLOCK, size))
        index.add(ids, multi, fusion, metadata, commit=False, progress=False)
    index.commit()
    seconds = time.perf_counter() - start
    index.close()
    return seconds


class QuerySet:
    """The benchmark's queries (test-split items and triplets) with per-kind encode and search."""

    def __init__(self, model, catalogue, count: int):
        from unifashion.data.records import load_image

        items = catalogue.item_records("test")[:count]
        triplets = catalogue.triplet_records("test")[:count]
        by_id = {r.item_id: r for r in catalogue.item_records("test")}
        self.model = model
        self.texts = [r.captions["short"] for r in items]
        self.images = [load_image(r.image) for r in items]
        self.composed = [(load_image(by_id[t.reference_id].image), t.modification_text) for t in triplets]

    def encode(self, kind: str, i: int | slice) -> np.ndarray:
        with torch.no_grad():
            if kind == "text -> images":
                texts = self.texts[i] if isinstance(i, slice) else [self.texts[i]]
                return self.model.encode_text(texts).float().numpy()
            if kind == "image -> texts":
                images = self.images[i] if isinstance(i, slice) else [self.images[i]]
                return self.model.encode_image(images).float().numpy()
            pairs = self.composed[i] if isinstance(i, slice) else [self.composed[i]]
            return self.model.encode_composed([p[0] for p in pairs], [p[1] for p in pairs]).float().numpy()

    def count(self, kind: str) -> int:
        return len(self.composed) if kind.startswith("composed") else len(self.texts)


def search(kind: str, index, text_matrix: np.ndarray, queries: np.ndarray, exact: bool = False):
    """Search one query (or a batch) as the pipeline does; return item/text ids per query."""
    from unifashion.pipelines.search import rank_texts

    if kind == "image -> texts":
        if queries.ndim == 2:  # one image: (Q, D)
            return [rank_texts(text_matrix, queries, TOP_K)[0].tolist()]
        return [rank_texts(text_matrix, q, TOP_K)[0].tolist() for q in queries]
    fusion = 1.0 if kind.startswith("composed") else 0.0
    hits = index.search(queries, TOP_K, fusion_weight=fusion, exact=exact)
    if queries.ndim == 1:
        hits = [hits]
    return [[h.item_id for h in row] for row in hits]


def bench_size(size: int, path: Path, catalogue: ReplicatedCatalogue, queries: QuerySet, num_queries: int,
               exact_queries: int, batch: int) -> dict:
    from unifashion.index import CatalogueIndex

    build_s = build_index(path, catalogue, size, num_queries)
    text_matrix = catalogue.texts(size)
    index = CatalogueIndex.open(path, read_only=True)
    out = {"items": size, "build_items_per_s": size / build_s, "kinds": {}}
    for kind in KINDS:
        n = queries.count(kind)
        search(kind, index, text_matrix, queries.encode(kind, 0))  # warm-up
        encode_ms, search_ms, found = [], [], []
        for i in tqdm(range(n), desc=f"{size:,} items: {kind}", unit="query", leave=False):
            t0 = time.perf_counter()
            q = queries.encode(kind, i)
            t1 = time.perf_counter()
            result = search(kind, index, text_matrix, q[0])
            t2 = time.perf_counter()
            encode_ms.append((t1 - t0) * 1000)
            search_ms.append((t2 - t1) * 1000)
            found.append(result[0])
        total_ms = [a + b for a, b in zip(encode_ms, search_ms, strict=True)]
        # Batched: encode and search `batch` queries at once.
        t0 = time.perf_counter()
        done = 0
        for start in range(0, n, batch):
            q = queries.encode(kind, slice(start, start + batch))
            search(kind, index, text_matrix, q)
            done += len(q)
        batched_qps = done / (time.perf_counter() - t0)
        row = {"queries": n, "encode": percentiles(encode_ms), "search": percentiles(search_ms),
               "total": percentiles(total_ms), "single_stream_qps": 1000 * n / sum(total_ms),
               "batched_qps": batched_qps, "batch": batch}
        if kind != "image -> texts":  # image -> texts is exact already
            m = min(exact_queries, n)
            exact_ms, recalls = [], []
            for i in range(m):
                q = queries.encode(kind, i)[0]
                t0 = time.perf_counter()
                truth = search(kind, index, text_matrix, q, exact=True)[0]
                exact_ms.append((time.perf_counter() - t0) * 1000)
                recalls.append(len(set(truth) & set(found[i])) / len(truth))
            row["recall_at_10_vs_exact"] = float(np.mean(recalls))
            row["exact_search"] = percentiles(exact_ms)
            row["search_speedup_vs_exact"] = row["exact_search"]["p50_ms"] / row["search"]["p50_ms"]
        out["kinds"][kind] = row
        print(f"[{size:,}] {kind}: p50 {row['total']['p50_ms']:.1f} ms (encode {row['encode']['p50_ms']:.1f} + "
              f"search {row['search']['p50_ms']:.1f}), p99 {row['total']['p99_ms']:.1f} ms, "
              f"{row['batched_qps']:.0f} q/s batched", flush=True)
    stats = index.stats()
    ann_bytes = stats["bytes"]["ann"]
    out["disk_bytes_per_item"] = sum(stats["bytes"].values()) / size
    out["ram_bytes_per_item"] = {"ann": ann_bytes / size, "text_bank": text_matrix.nbytes / size}
    index.close()
    shutil.rmtree(path)
    return out


def bench_indexing(model, records, batch_sizes: list[int], workdir: Path) -> list[dict]:
    from unifashion.index import CatalogueIndex
    from unifashion.pipelines.indexing import CatalogueBuilder

    rows = []
    for batch_size in batch_sizes:
        path = workdir / f"indexing-{batch_size}"
        builder = CatalogueBuilder(model, batch_size=batch_size, progress=False)
        index = CatalogueIndex.create(path, dim=builder.embed_dim, num_queries=builder.num_queries)
        builder.add(index, records[:batch_size])  # warm-up at this batch size, not timed
        start = time.perf_counter()
        builder.add(index, records[batch_size:])
        seconds = time.perf_counter() - start
        count = len(records) - batch_size
        rows.append({"batch_size": batch_size, "items": count, "seconds": seconds, "items_per_s": count / seconds})
        print(f"[indexing] batch {batch_size}: {count / seconds:.1f} items/s", flush=True)
        index.close()
        shutil.rmtree(path)
    return rows


def markdown(results: dict) -> str:
    m = results["machine"]
    lines = [
        "# Query benchmark (trained model, end to end)", "",
        f"Model `{results['model']}`, {m['threads']} torch threads on {m['cpus']} CPU cores; load average at start "
        f"{m['load_average_at_start']}. Catalogue: {results['base_items']} real item embeddings replicated with "
        f"noise {results['noise']} to each size. Single-query latency = query encoding + search (ANN over "
        f"every item vector, {results['candidates']} candidates, exact max-sim re-rank; image -> texts ranks every "
        f"item's text). Batched: {results['batch']} queries encoded and searched together.", "",
        "| items | query | p50 ms | p99 ms | encode p50 | search p50 | search p99 | single-stream q/s "
        "| batched q/s | recall@10 vs exact | exact search p50 ms | search speed-up |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for size in results["sizes"]:
        for kind, r in size["kinds"].items():
            recall = f"{r['recall_at_10_vs_exact']:.3f}" if "recall_at_10_vs_exact" in r else "exact"
            exact = f"{r['exact_search']['p50_ms']:.1f}" if "exact_search" in r else "-"
            speed = f"{r['search_speedup_vs_exact']:.0f}x" if "search_speedup_vs_exact" in r else "-"
            lines.append(
                f"| {size['items']:,} | {kind} | {r['total']['p50_ms']:.1f} | {r['total']['p99_ms']:.1f} | "
                f"{r['encode']['p50_ms']:.1f} | {r['search']['p50_ms']:.2f} | {r['search']['p99_ms']:.2f} | "
                f"{r['single_stream_qps']:.1f} | {r['batched_qps']:.1f} | {recall} | {exact} | {speed} |")
    lines += ["", "| items | index build items/s | disk B/item | RAM B/item (FAISS) | RAM B/item (text bank) |",
              "|---:|---:|---:|---:|---:|"]
    for size in results["sizes"]:
        ram = size["ram_bytes_per_item"]
        lines.append(f"| {size['items']:,} | {size['build_items_per_s']:,.0f} | {size['disk_bytes_per_item']:,.0f} | "
                     f"{ram['ann']:,.0f} | {ram['text_bank']:,.0f} |")
    lines += ["", "Indexing with the model (image embedding + generated caption + its embedding + store), "
              "against the embedding batch size:", "",
              "| batch size | items | items/s |", "|---:|---:|---:|"]
    for row in results["indexing"]:
        lines.append(f"| {row['batch_size']} | {row['items']} | {row['items_per_s']:.1f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny-default")
    parser.add_argument("--catalogue", default="outputs/demo/catalogue")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/queries.json"))
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--base-items", type=int, default=512)
    parser.add_argument("--noise", type=float, default=0.3, help="per-copy noise (norm of the noise vector)")
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--exact-queries", type=int, default=20)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--indexing-items", type=int, default=256)
    parser.add_argument("--indexing-batches", type=int, nargs="+", default=[1, 8, 32, 64])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from unifashion.data.synthetic.catalogue import load_catalogue
    from unifashion.models import UniFashion
    from unifashion.models.pretrained import model_label
    from unifashion.settings import SEARCH

    load_average = [round(x, 2) for x in os.getloadavg()]
    model = UniFashion.from_pretrained(args.model).eval()
    catalogue = load_catalogue(args.catalogue)
    base_records = catalogue.item_records("train")[:args.base_items]
    multi, fusion, text = embed_base(model, base_records)
    replicated = ReplicatedCatalogue(multi, fusion, text, [r.category for r in base_records], args.noise)
    queries = QuerySet(model, catalogue, args.queries)
    workdir = Path(tempfile.mkdtemp(prefix="bench-queries-", dir=args.workdir))
    results = {
        "model": model_label(args.model, model.weights_identity()),
        "base_items": len(base_records), "noise": args.noise, "batch": args.batch,
        "candidates": SEARCH.candidates_for(TOP_K), "top_k": TOP_K,
        "machine": {"cpus": os.cpu_count(), "threads": args.threads, "processor": platform.machine(),
                    "load_average_at_start": load_average},
        "sizes": [], "indexing": [],
    }
    try:
        for size in args.sizes:
            results["sizes"].append(bench_size(size, workdir / f"index-{size}", replicated, queries,
                                               model.num_queries, args.exact_queries, args.batch))
        results["indexing"] = bench_indexing(model, catalogue.item_records("val")[:args.indexing_items],
                                             args.indexing_batches, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    args.out.with_suffix(".md").write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
