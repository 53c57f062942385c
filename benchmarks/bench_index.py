"""Benchmark of the catalogue index: ANN + exact re-rank against exact max-sim, and add speed.

    .venv/bin/python benchmarks/bench_index.py --out benchmarks/results/index.json

Vectors are synthetic but clustered, not white noise: white-noise vectors have no neighbourhoods,
so an ANN index over them finds nothing (IVF recall 0.10 measured on them, DESIGN.md), which says
nothing about real embeddings. Here a few thousand cluster centres each get 32 query directions
(around a shared centre direction, as one image's queries are), and every item is a noisy copy of
one centre. A query is one vector of a random item plus noise, like a text that matches one
aspect of an image (the hard case for a pooled-vector first stage, which sees only the mean).

How many items share a centre decides how hard the first stage's job is: with 2000 centres,
10k items give ~5 per cluster (the exact top 10 reaches into unrelated clusters, which a pooled
vector cannot see) and 100k give ~50 (the top 10 lies in the query's cluster); 100k items on 200
centres (~500 near-duplicates per cluster, more than the 100 candidates) is the dense case.

Per run (size:centres; 10k:2000, 100k:2000 and 100k:200 by default; 1M:2000 with --million,
~16 GiB of fp16 multi-vectors on disk, memory-mapped) it reports: single-query latency p50/p99 of ANN + re-rank
(flat and IVF first stages, a few candidate counts) and of exact max-sim, recall@10 of ANN +
re-rank against exact, the speed-up, bytes per item on disk and in RAM, and add throughput
against batch size (one commit per batch). Results go to the JSON file named by --out and a
Markdown table beside it.
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

import faiss
import numpy as np

from unifashion.index import CatalogueIndex

NUM_QUERIES = 32
DIM = 256
TOP_K = 10


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


class ClusteredCatalogue:
    """Deterministic clustered multi-vectors, generated in blocks so that 1M items fit in memory.

    Item i depends only on (seed, i // BLOCK), so any item can be regenerated on its own.
    """

    BLOCK = 128

    def __init__(self, num_centres: int = 2000, seed: int = 0, item_noise: float = 0.6, query_spread: float = 1.0):
        rng = np.random.default_rng(seed)
        shared = rng.standard_normal((num_centres, 1, DIM))
        per_query = rng.standard_normal((num_centres, NUM_QUERIES, DIM))
        # Each centre's 32 directions share a component (cosine ~0.5 between them).
        self.centres = unit(shared + query_spread * per_query).astype(np.float32)
        self.item_noise = item_noise
        self.seed = seed

    def _block(self, block: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.seed, block])
        n = self.BLOCK
        centre = rng.integers(0, len(self.centres), size=n)
        noise = rng.standard_normal((n, NUM_QUERIES, DIM), dtype=np.float32) * (self.item_noise / np.sqrt(DIM))
        multi = unit(self.centres[centre] + noise).astype(np.float32)
        caption_noise = rng.standard_normal((n, DIM), dtype=np.float32) * (0.8 / np.sqrt(DIM))
        fusion = unit(unit(multi.mean(axis=1)) + caption_noise).astype(np.float32)
        return multi, fusion

    def items(self, start: int, stop: int) -> tuple[list[str], np.ndarray, np.ndarray]:
        """Items start..stop: ids, multi-vectors (n, 32, 256) and fusion vectors (n, 256)."""
        first, last = start // self.BLOCK, -(-stop // self.BLOCK)
        blocks = [self._block(b) for b in range(first, last)]
        offset = first * self.BLOCK
        multi = np.concatenate([b[0] for b in blocks])[start - offset : stop - offset]
        fusion = np.concatenate([b[1] for b in blocks])[start - offset : stop - offset]
        return [f"item-{i}" for i in range(start, stop)], multi, fusion

    def queries(self, size: int, count: int, seed: int = 99) -> np.ndarray:
        """One random query vector of a random item, plus noise, per query."""
        rng = np.random.default_rng(seed)
        out = np.empty((count, DIM), dtype=np.float32)
        for i, item in enumerate(rng.integers(0, size, size=count)):
            _ids, multi, _fusion = self.items(int(item), int(item) + 1)
            noise = rng.standard_normal(DIM).astype(np.float32) * (0.5 / np.sqrt(DIM))
            out[i] = unit(multi[0, rng.integers(0, NUM_QUERIES)] + noise)
        return out


def percentiles(seconds: list[float]) -> dict[str, float]:
    ms = np.array(seconds) * 1000
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)), "mean_ms": float(ms.mean())}


def timed_searches(index: CatalogueIndex, queries: np.ndarray, **search_args) -> tuple[list[list[str]], list[float]]:
    index.search(queries[0], top_k=TOP_K, **search_args)  # warm up (selectors, page cache of hot pages)
    results, times = [], []
    for query in queries:
        start = time.perf_counter()
        hits = index.search(query, top_k=TOP_K, **search_args)
        times.append(time.perf_counter() - start)
        results.append([h.item_id for h in hits])
    return results, times


def recall(found: list[list[str]], truth: list[list[str]]) -> float:
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth, strict=True)]))


def build(path: Path, catalogue: ClusteredCatalogue, size: int, batch: int = 10_000) -> dict[str, float]:
    """Bulk-load ``size`` items (staged in batches, one commit) and time it."""
    index = CatalogueIndex.create(path, ann="flat")  # the pooled stages this benchmark compares
    start = time.perf_counter()
    generation_s = 0.0
    for first in range(0, size, batch):
        t0 = time.perf_counter()
        ids, multi, fusion = catalogue.items(first, min(first + batch, size))
        generation_s += time.perf_counter() - t0
        index.add(
            ids,
            multi,
            fusion,
            [{"category": ("dress", "shirt", "toptee")[i % 3]} for i in range(len(ids))],
            commit=False,
            progress=False,
        )
    t0 = time.perf_counter()
    index.commit()
    commit_s = time.perf_counter() - t0
    total = time.perf_counter() - start - generation_s
    index.close()
    return {"items": size, "seconds": total, "items_per_s": size / total, "final_commit_s": commit_s}


def bench_size(
    workdir: Path, catalogue: ClusteredCatalogue, size: int, num_queries: int, exact_queries: int, nlist: int
) -> dict:
    path = workdir / f"index-{size}-{len(catalogue.centres)}"
    print(f"[{size} items, {len(catalogue.centres)} centres] building ...", flush=True)
    build_stats = build(path, catalogue, size)
    index = CatalogueIndex.open(path)
    queries = catalogue.queries(size, num_queries)

    # Ground truth: exact max-sim, all queries in one batched pass.
    start = time.perf_counter()
    truth = [[h.item_id for h in hits] for hits in index.search(queries, top_k=TOP_K, exact=True)]
    exact_batched_s = time.perf_counter() - start
    print(f"[{size}] exact batched: {exact_batched_s:.1f} s for {num_queries} queries", flush=True)
    _found, exact_times = timed_searches(index, queries[:exact_queries], exact=True)
    exact_latency = percentiles(exact_times)

    truth_fused = [
        [h.item_id for h in hits] for hits in index.search(queries, top_k=TOP_K, exact=True, fusion_weight=1.0)
    ]
    runs = []

    def measure(label: str, **args):
        found, times = timed_searches(index, queries, **args)
        reference = truth_fused if args.get("fusion_weight") else truth
        row = {"method": label, **args, "recall_at_10": recall(found, reference), **percentiles(times)}
        row["speedup_vs_exact"] = exact_latency["p50_ms"] / row["p50_ms"]
        runs.append(row)
        print(f"[{size}] {label} {args}: recall@10 {row['recall_at_10']:.3f}, p50 {row['p50_ms']:.2f} ms", flush=True)

    for candidates in (100, 400, 1000):
        measure("flat ANN + re-rank", candidates=candidates)
    measure("flat ANN + re-rank, fusion", candidates=400, fusion_weight=1.0)

    t0 = time.perf_counter()
    index.rebuild_ann("ivf", nlist=nlist)
    ivf_build_s = time.perf_counter() - t0
    for nprobe in (8, 32):
        for candidates in (100, 400):
            measure(f"IVF{nlist} ANN + re-rank", candidates=candidates, nprobe=nprobe)

    ann_ivf_bytes = index.stats()["bytes"]["ann"]

    index.rebuild_ann("ivfpq", nlist=nlist, pq_m=32)
    for candidates in (100, 400):
        measure(f"IVF{nlist},PQ32 ANN + re-rank", candidates=candidates, nprobe=32)
    ann_ivfpq_bytes = index.stats()["bytes"]["ann"]

    index.rebuild_ann("flat")
    stats = index.stats()
    snapshot = index._snapshot
    layout_bytes = sum(a.nbytes for a in (snapshot.layout.keys, snapshot.layout.segments, snapshot.layout.rows))
    layout_bytes += snapshot.key_category.nbytes + sum(a.nbytes for a in snapshot.row_keys.values())
    layout_bytes += sum(a.nbytes for a in snapshot.row_categories.values())
    memory = {
        "disk_bytes_per_item": {k: v / size for k, v in stats["bytes"].items()},
        "ivf_ann_bytes_per_item": ann_ivf_bytes / size,
        "ivfpq_ann_bytes_per_item": ann_ivfpq_bytes / size,
        # What stays in RAM: the FAISS index and the layout arrays; the vector files are mapped.
        "ram_bytes_per_item_flat": (stats["bytes"]["ann"] + layout_bytes) / size,
        "ram_bytes_per_item_ivf": (ann_ivf_bytes + layout_bytes) / size,
        "ram_bytes_per_item_ivfpq": (ann_ivfpq_bytes + layout_bytes) / size,
    }
    index.close()
    shutil.rmtree(path)
    return {
        "items": size,
        "centres": len(catalogue.centres),
        "queries": num_queries,
        "exact_latency_queries": exact_queries,
        "build": build_stats,
        "ivf_build_s": ivf_build_s,
        "exact": {**exact_latency, "batched_queries_per_s": num_queries / exact_batched_s},
        "ann": runs,
        "memory": memory,
    }


def bench_add_throughput(workdir: Path, catalogue: ClusteredCatalogue, total: int, batch_sizes: list[int]) -> list:
    """Items/s when every batch is its own commit (each commit fsyncs and rewrites the FAISS file)."""
    ids, multi, fusion = catalogue.items(0, total)
    rows = []
    for batch in batch_sizes:
        path = workdir / f"add-{batch}"
        index = CatalogueIndex.create(path, ann="flat")  # the pooled stages this benchmark compares
        start = time.perf_counter()
        for first in range(0, total, batch):
            stop = min(first + batch, total)
            index.add(ids[first:stop], multi[first:stop], fusion[first:stop], progress=False)
        seconds = time.perf_counter() - start
        rows.append(
            {
                "batch_size": batch,
                "items": total,
                "commits": -(-total // batch),
                "seconds": seconds,
                "items_per_s": total / seconds,
            }
        )
        print(f"[add] batch {batch}: {total / seconds:.0f} items/s", flush=True)
        index.close()
        shutil.rmtree(path)
    return rows


def markdown(results: dict) -> str:
    lines = [
        "# Catalogue index benchmark",
        "",
        f"Machine: {results['machine']['cpus']} CPU cores ({results['machine']['processor']}), "
        f"faiss {results['machine']['faiss']}, numpy {results['machine']['numpy']}; "
        f"load average at start {results['machine']['load_average_at_start']}.",
        "Clustered synthetic vectors (items = noisy copies of cluster centres), 32 x 256 per item, fp16 "
        f"storage; top_k = {TOP_K}; single-query latency; recall@10 against exact max-sim.",
        "",
        "| items | centres | method | candidates | nprobe | fusion | recall@10 | p50 ms | p99 ms | speed-up vs exact |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for size in results["sizes"]:
        exact = size["exact"]
        lines.append(
            f"| {size['items']:,} | {size['centres']:,} | exact max-sim | all | - | 0 | 1.000 | "
            f"{exact['p50_ms']:.1f} | {exact['p99_ms']:.1f} | 1x |"
        )
        for run in size["ann"]:
            lines.append(
                f"| {size['items']:,} | {size['centres']:,} | {run['method']} | {run['candidates']} | "
                f"{run.get('nprobe', '-')} | "
                f"{run.get('fusion_weight', 0):g} | {run['recall_at_10']:.3f} | {run['p50_ms']:.2f} | "
                f"{run['p99_ms']:.2f} | {run['speedup_vs_exact']:.0f}x |"
            )
    lines += [
        "",
        "| items | centres | bulk add items/s | exact batched queries/s | IVF build s | disk B/item "
        "| RAM B/item (flat / IVF / IVF-PQ) |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for size in results["sizes"]:
        memory = size["memory"]
        disk = sum(memory["disk_bytes_per_item"].values())
        lines.append(
            f"| {size['items']:,} | {size['centres']:,} | {size['build']['items_per_s']:.0f} | "
            f"{size['exact']['batched_queries_per_s']:.1f} | "
            f"{size['ivf_build_s']:.1f} | {disk:,.0f} | {memory['ram_bytes_per_item_flat']:,.0f} / "
            f"{memory['ram_bytes_per_item_ivf']:,.0f} / {memory['ram_bytes_per_item_ivfpq']:,.0f} |"
        )
    lines += ["", "| add batch size (one commit each) | items | commits | items/s |", "|---:|---:|---:|---:|"]
    for row in results["add_throughput"]:
        lines.append(f"| {row['batch_size']:,} | {row['items']:,} | {row['commits']} | {row['items_per_s']:,.0f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/index.json"))
    parser.add_argument(
        "--runs",
        nargs="+",
        default=["10000:2000", "100000:2000", "100000:200"],
        help="catalogues to measure, as items:centres",
    )
    parser.add_argument("--million", action="store_true", help="also 1M items (~17 GiB on disk, ~15 minutes)")
    parser.add_argument("--queries", type=int, default=200, help="queries for ANN latency and recall")
    parser.add_argument("--exact-queries", type=int, default=10, help="single queries timed for exact latency")
    parser.add_argument("--add-items", type=int, default=20_000)
    parser.add_argument("--add-batches", type=int, nargs="+", default=[100, 1000, 10_000])
    parser.add_argument("--workdir", type=Path, default=None, help="where the indexes are built (default: a temp dir)")
    args = parser.parse_args()
    runs = [tuple(int(part) for part in run.split(":")) for run in args.runs]
    runs += [(1_000_000, 2000)] if args.million else []

    workdir = Path(tempfile.mkdtemp(prefix="bench-index-", dir=args.workdir))
    results = {
        "machine": {
            "cpus": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "faiss": faiss.__version__,
            "numpy": np.__version__,
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        },
        "config": {"top_k": TOP_K, "num_queries": NUM_QUERIES, "dim": DIM},
        "sizes": [],
    }
    started = time.perf_counter()
    try:
        for size, centres in runs:
            nlist = 1 << max(4, int(np.log2(4 * np.sqrt(size))))  # ~4 sqrt(N), a power of two
            nlist = min(nlist, size // 39)
            catalogue = ClusteredCatalogue(num_centres=centres)
            results["sizes"].append(bench_size(workdir, catalogue, size, args.queries, args.exact_queries, nlist))
        catalogue = ClusteredCatalogue(num_centres=2000)
        results["add_throughput"] = bench_add_throughput(workdir, catalogue, args.add_items, args.add_batches)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    results["total_seconds"] = time.perf_counter() - started
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    table = markdown(results)
    args.out.with_suffix(".md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
