"""Search at 10k, 100k and 1M items: the vector-level ANN against exact max-sim, side by side.

    flock /tmp/unifashion-cpu.lock .venv/bin/python benchmarks/bench_search.py \
        --embeddings /work/cache-bench/catalogue-50k --sizes 10000 50000 100000 1000000 \
        --out benchmarks/results/search.json

Data: the embeddings that benchmarks/embed_catalogue.py wrote once (distinct rendered catalogue
items embedded by the model, plus the model's text, composed and image queries). A catalogue of
``size`` items holds the distinct items first; beyond their number, item i is a noisy copy of
distinct item ``i % distinct`` (so at 1M over 50k distinct items each has 19 near-duplicates).
Sizes up to the number of distinct items are therefore *distinct-only* rows of the table.

Each size runs in its own process (so that its peak memory is its own) and measures:

* build: seconds to write the vector segments and to build the ANN (train + add), peak RSS;
* per query kind (text -> images; composed -> images at fusion weight 1; image -> texts over a
  bank of ``size`` texts): exact ground truth (one batched exact scan), then for a grid of
  (nprobe, candidates) the single-query search latency p50/p99 and recall@10 against exact;
  the exact single-query latency on a few queries; batched throughput at the chosen setting;
* adding ``--add-items`` more items to the built index in one commit (no re-training), and the
  recall after;
* resident memory: the FAISS files per item, the text index per text, and the process RSS.

Results: the JSON named by --out and a Markdown table beside it.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

TOP_K = 10
BLOCK = 8192
NOISE = 0.3
KINDS = ("text -> images", "composed -> images", "image -> texts")
NPROBES = (16, 32, 64, 128)
CANDIDATES = (400, 800, 1600)
TEXT_NPROBES = (16, 32, 64)
TEXT_HITS = (40, 80, 160)
# Two exact scores this close are a tie: identical renders and identical captions embed to
# identical vectors, and the exact order among tied items is arbitrary (by row).
TIE = 1e-5


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def percentiles(ms: list[float]) -> dict[str, float]:
    values = np.asarray(ms)
    return {"p50_ms": float(np.percentile(values, 50)), "p99_ms": float(np.percentile(values, 99))}


class Catalogue:
    """``size`` items: the distinct embedded items, then noisy copies of them."""

    def __init__(self, folder: Path):
        self.multi = np.load(folder / "multi.npy", mmap_mode="r")
        self.fusion = np.load(folder / "fusion.npy")
        self.text = np.load(folder / "text.npy")
        self.categories = np.load(folder / "categories.npy")
        self.distinct = len(self.multi)
        self.dim = self.multi.shape[-1]
        self.num_queries = self.multi.shape[1]

    def block(self, start: int, stop: int):
        base = np.arange(start, stop) % self.distinct
        multi, fusion = self.multi[base].astype(np.float32), self.fusion[base].copy()
        copies = np.arange(start, stop) >= self.distinct
        if copies.any():
            rng = np.random.default_rng([0, start])
            scale = NOISE / np.sqrt(self.dim)
            n = int(copies.sum())
            multi[copies] = unit(multi[copies] + scale * rng.standard_normal((n, self.num_queries, self.dim),
                                                                             dtype=np.float32))
            fusion[copies] = unit(fusion[copies] + scale * rng.standard_normal((n, self.dim), dtype=np.float32))
        ids = [f"item-{i}" for i in range(start, stop)]
        return ids, unit(multi), unit(fusion), [{"category": str(self.categories[b])} for b in base]

    def texts(self, size: int) -> np.ndarray:
        base = np.arange(size) % self.distinct
        out = self.text[base].copy()
        copies = np.arange(size) >= self.distinct
        if copies.any():
            rng = np.random.default_rng(7)
            noise = rng.standard_normal((int(copies.sum()), self.dim), dtype=np.float32)
            out[copies] = unit(out[copies] + (NOISE / np.sqrt(self.dim)) * noise)
        return unit(out).astype(np.float32)


def build(path: Path, catalogue: Catalogue, size: int, nlist: int) -> dict:
    from unifashion.index import CatalogueIndex

    index = CatalogueIndex.create(path, dim=catalogue.dim, num_queries=catalogue.num_queries, nlist=nlist)
    t0 = time.perf_counter()
    for first in range(0, size, BLOCK):
        index.add(*catalogue.block(first, min(first + BLOCK, size)), commit=False, progress=False)
    t1 = time.perf_counter()
    index.commit()
    t2 = time.perf_counter()
    kind = index.ann_kind
    index.close()
    return {"segments_s": t1 - t0, "ann_build_s": t2 - t1, "build_s": t2 - t0, "ann_kind": kind,
            "peak_rss_mib_after_build": peak_rss_mib()}


def timed_searches(search, queries: np.ndarray) -> tuple[list, list[float]]:
    found, ms = [], []
    for q in queries:
        t0 = time.perf_counter()
        found.append(search(q))
        ms.append((time.perf_counter() - t0) * 1000)
    return found, ms


def recall(found: list, truth: list) -> float:
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth, strict=True)]))


def recall_with_ties(found_scores: list, truth_scores: list) -> float:
    """recall@10 that counts a found item whose exact score ties the exact 10th (within TIE) as
    correct, whichever of the tied items the exact ranking listed (ann-benchmarks counts results
    within a distance threshold the same way, with a far looser epsilon)."""
    return float(np.mean([min(len(t), int(np.sum(np.asarray(f) >= t[-1] - TIE))) / len(t)
                          for f, t in zip(found_scores, truth_scores, strict=True)]))


def score_loss(found_scores: list, truth_scores: list) -> float:
    """Mean over queries of how much lower, per rank, the exact scores of the ANN's top 10 are
    than those of the exact top 10: 0 when the ANN finds items as good (ties swapped or not)."""
    return float(np.mean([(np.sum(t) - np.sum(f)) / len(t) for f, t in zip(found_scores, truth_scores, strict=True)]))


def score_gaps(exact_scores: np.ndarray) -> dict[str, float]:
    """How crowded the top of the exact rankings is: medians of the 10th score minus the 11th
    and minus the 20th (an ANN's recall@10 can only separate items its codes can tell apart)."""
    return {"s10_minus_s11_median": float(np.median(exact_scores[:, 9] - exact_scores[:, 10])),
            "s10_minus_s20_median": float(np.median(exact_scores[:, 9] - exact_scores[:, 19]))}


def recalls(found_ids: list, found_scores: list, truth: list, truth_scores: list) -> dict[str, float]:
    """recall@10 of found ids and their exact scores against the exact top 10, plain and counting ties."""
    return {"recall_at_10": recall(found_ids, truth), "recall_at_10_ties": recall_with_ties(found_scores, truth_scores)}


def quality(found: list, truth: list, truth_scores: list) -> dict[str, float]:
    """The recalls of hit lists and their score loss."""
    scores = [[h.score for h in row] for row in found]
    return {**recalls([[h.item_id for h in row] for row in found], scores, truth, truth_scores),
            "score_loss": score_loss(scores, truth_scores)}


def bench_items(index, kind: str, queries: np.ndarray, exact_timed: int, batch: int) -> dict:
    fusion = 1.0 if kind.startswith("composed") else 0.0
    t0 = time.perf_counter()
    exact_rows = index.search(queries, 20, fusion_weight=fusion, exact=True)
    batched_exact_s = time.perf_counter() - t0
    truth = [[h.item_id for h in row[:TOP_K]] for row in exact_rows]
    truth_scores = [[h.score for h in row[:TOP_K]] for row in exact_rows]
    gaps = score_gaps(np.array([[h.score for h in row] for row in exact_rows]))
    _found, exact_ms = timed_searches(
        lambda q: index.search(q, TOP_K, fusion_weight=fusion, exact=True), queries[:exact_timed])
    grid = []
    for nprobe in NPROBES:
        for candidates in CANDIDATES:
            def search(q, nprobe=nprobe, candidates=candidates):
                return index.search(q, TOP_K, fusion_weight=fusion, nprobe=nprobe, candidates=candidates)
            search(queries[0])  # warm-up
            found, ms = timed_searches(search, queries)
            grid.append({"nprobe": nprobe, "candidates": candidates, **quality(found, truth, truth_scores),
                         **percentiles(ms)})
    index.search(queries[0], TOP_K, fusion_weight=fusion)  # warm-up
    found, ms = timed_searches(lambda q: index.search(q, TOP_K, fusion_weight=fusion), queries)
    t0 = time.perf_counter()
    for start in range(0, len(queries), batch):
        index.search(queries[start:start + batch], TOP_K, fusion_weight=fusion)
    batched_qps = len(queries) / (time.perf_counter() - t0)
    return {"default": {**quality(found, truth, truth_scores), **percentiles(ms), "batched_qps": batched_qps},
            "grid": grid, "score_gaps": gaps, "exact": {**percentiles(exact_ms), "queries_timed": len(exact_ms),
                                    "batched_all_queries_s": batched_exact_s}}


def bench_texts(texts: np.ndarray, image_queries: np.ndarray, exact_timed: int) -> dict:
    from unifashion.index.text_ann import TextIndex

    t0 = time.perf_counter()
    bank = TextIndex(texts)
    build_s = time.perf_counter() - t0
    exact, exact_ms = timed_searches(lambda q: bank.search(q, TOP_K, exact=True), image_queries[:exact_timed])
    exact += [bank.search(q, TOP_K, exact=True) for q in image_queries[exact_timed:]]
    truth, truth_scores = [rows.tolist() for rows, _ in exact], [scores.tolist() for _, scores in exact]

    def quality_of(found: list) -> dict[str, float]:
        return recalls([rows.tolist() for rows, _ in found], [scores for _, scores in found], truth, truth_scores)

    grid = []
    if bank.ann is not None:
        default_nprobe, default_hits = bank.nprobe, bank.hits
        for nprobe in TEXT_NPROBES:
            for hits in TEXT_HITS:
                bank.nprobe, bank.hits = nprobe, hits
                found, ms = timed_searches(lambda q: bank.search(q, TOP_K), image_queries)
                grid.append({"nprobe": nprobe, "hits": hits, **quality_of(found), **percentiles(ms)})
        bank.nprobe, bank.hits = default_nprobe, default_hits
    found, ms = timed_searches(lambda q: bank.search(q, TOP_K), image_queries)
    return {"default": {**quality_of(found), **percentiles(ms)}, "grid": grid,
            "exact": percentiles(exact_ms), "build_s": build_s, "ram_bytes_per_text": bank.ram_bytes / len(bank),
            "brute_force": bank.ann is None}


def bench_add(index_path: Path, catalogue: Catalogue, size: int, count: int, queries: np.ndarray) -> dict:
    from unifashion.index import CatalogueIndex

    index = CatalogueIndex.open(index_path)
    centroids = index._snapshot.ann.plain.quantizer.reconstruct_n(0, 4).copy()
    before = {p.name: p.stat().st_mtime_ns for p in (index_path / "ann").iterdir()}
    t0 = time.perf_counter()
    index.add(*catalogue.block(size, size + count), progress=False)
    seconds = time.perf_counter() - t0
    retrained = not np.array_equal(centroids, index._snapshot.ann.plain.quantizer.reconstruct_n(0, 4))
    # FAISS bytes the commit wrote: its delta files (or a whole new base, had it compacted).
    written = sum(p.stat().st_size for p in (index_path / "ann").iterdir()
                  if before.get(p.name) != p.stat().st_mtime_ns)
    truth = [[h.item_id for h in row] for row in index.search(queries, TOP_K, exact=True)]
    found = [[h.item_id for h in index.search(q, TOP_K)] for q in queries]
    index.close()
    return {"items": count, "commit_s": seconds, "retrained": retrained, "ann_bytes_written": written,
            "ann_deltas": len(index_deltas(index_path)), "recall_at_10_after": recall(found, truth)}


def index_deltas(index_path: Path) -> list[str]:
    import sqlite3

    with sqlite3.connect(index_path / "catalogue.sqlite") as conn:
        return json.loads(conn.execute("SELECT ann_deltas FROM manifest").fetchone()[0])


def run_size(args) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    from unifashion.index import CatalogueIndex

    catalogue = Catalogue(args.embeddings)
    queries = np.load(args.embeddings / "queries.npz")
    count = args.queries
    query_sets = {"text -> images": unit(queries["text"][:count]).astype(np.float32),
                  "composed -> images": unit(queries["composed"][:count]).astype(np.float32)}
    image_rows = queries["image_rows"][:count]
    image_queries = catalogue.multi[np.sort(image_rows)].astype(np.float32)
    size = args.size
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)  # a --workdir not made yet failed every size
    workdir = Path(tempfile.mkdtemp(prefix="bench-search-", dir=args.workdir))
    out = {"items": size, "distinct_items": min(size, catalogue.distinct),
           "near_duplicates_per_item": max(0, -(-size // catalogue.distinct) - 1), "nlist": args.nlist}
    try:
        path = workdir / "index"
        out["build"] = build(path, catalogue, size, args.nlist)
        print(f"[{size:,}] built in {out['build']['build_s']:.0f} s "
              f"(ANN {out['build']['ann_build_s']:.0f} s), peak RSS {out['build']['peak_rss_mib_after_build']:.0f} MiB",
              flush=True)
        index = CatalogueIndex.open(path, read_only=True)
        out["rss_mib_open"] = rss_mib()
        stats = index.stats()
        out["ann_bytes_per_item"] = stats["bytes"]["ann"] / size
        out["disk_bytes_per_item"] = sum(stats["bytes"].values()) / size
        out["kinds"] = {}
        for kind in KINDS[:2]:
            out["kinds"][kind] = bench_items(index, kind, query_sets[kind], args.exact_timed, args.batch)
            d = out["kinds"][kind]["default"]
            print(f"[{size:,}] {kind}: p50 {d['p50_ms']:.2f} ms p99 {d['p99_ms']:.2f} ms "
                  f"recall {d['recall_at_10']:.3f}",
                  flush=True)
        out["rss_mib_after_search"] = rss_mib()
        index.close()
        texts = catalogue.texts(size)
        out["kinds"]["image -> texts"] = bench_texts(texts, image_queries, args.exact_timed)
        d = out["kinds"]["image -> texts"]["default"]
        print(f"[{size:,}] image -> texts: p50 {d['p50_ms']:.2f} ms recall {d['recall_at_10']:.3f}", flush=True)
        del texts
        if args.add_items:
            out["add"] = bench_add(path, catalogue, size, args.add_items, query_sets["text -> images"][:50])
            print(f"[{size:,}] +{args.add_items:,} items: {out['add']['commit_s']:.1f} s", flush=True)
        out["peak_rss_mib"] = peak_rss_mib()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return out


def encode_latency(args) -> dict:
    """Single-query model encoding latency of the three kinds (the end-to-end share of the model)."""
    import torch

    sys.path.insert(0, str(Path(__file__).parent))
    from embed_catalogue import build_model

    from unifashion.data.synthetic.catalogue import CatalogueConfig, make_catalogue

    torch.set_num_threads(args.threads)
    # The model that embedded the catalogue (a trained folder or tag; None: the fresh tiny preset).
    model_path = args.model or json.loads((args.embeddings / "info.json").read_text()).get("model_path")
    model = build_model(model=model_path)
    queries = np.load(args.embeddings / "queries.npz")
    catalogue = make_catalogue(CatalogueConfig(n_items=200))
    images = [catalogue.render(item.item_id) for item in catalogue.items[:args.encode_queries]]
    texts = [str(t) for t in queries["text_strings"][:args.encode_queries]]
    mods = [str(t) for t in queries["composed_strings"][:args.encode_queries]]
    calls = {"text -> images": lambda i: model.encode_text([texts[i]]),
             "composed -> images": lambda i: model.encode_composed([images[i]], [mods[i]]),
             "image -> texts": lambda i: model.encode_image([images[i]])}
    out = {}
    with torch.no_grad():
        for kind, call in calls.items():
            call(0)
            ms = []
            for i in range(len(images)):
                t0 = time.perf_counter()
                call(i)
                ms.append((time.perf_counter() - t0) * 1000)
            out[kind] = percentiles(ms)
    return out


def markdown(results: dict) -> str:
    info = results["embeddings"]
    sizes = sorted(results["sizes"], key=lambda s: s["items"])
    lines = [
        "# Search at scale: vector-level ANN against exact max-sim", "",
        f"Embeddings: {info['items']:,} distinct rendered catalogue items embedded by {info['model']} "
        f"(embedding took {results['embedding_seconds']:.0f} s on {info['torch_threads']} threads). Beyond "
        f"{info['items']:,} items, item i is a noisy copy (noise {NOISE}) of distinct item i mod {info['items']:,}. "
        f"{results['queries']} queries per kind (the model's text, composed and image queries). One process per "
        f"size, {results['threads']} threads, on {os.cpu_count()} CPU cores shared with other work; load average "
        f"at start {results['load_average_at_start']}. Latency is search only (single query, one thread for "
        f"FAISS); model encoding is listed apart. Recall@10 is against exact max-sim (+ fusion) over the same "
        f"index; recall@10 (ties) counts a found item whose exact score ties the exact 10th (within {TIE}) as "
        f"found, since identical renders and captions embed identically and the exact order among them is "
        f"arbitrary. Defaults: nprobe {results['defaults']['nprobe']}, candidates {results['defaults']['candidates']}. "
        f"Score loss: the mean, per rank, of the exact scores of the exact top 10 minus those of the ANN's top 10 "
        f"(0 when the ANN's items are as good, ties swapped or not); s10-s11 / s10-s20: medians of the exact "
        f"10th score minus the 11th / 20th, how crowded the top of the rankings is.",
        "",
        "| items | distinct | query | search p50 ms | p99 ms | recall@10 | recall@10 (ties) | score loss "
        "| s10-s11 / s10-s20 "
        "| batched q/s | exact p50 ms | speed-up |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in sizes:
        for kind, r in s["kinds"].items():
            d, e = r["default"], r["exact"]
            qps = f"{d['batched_qps']:.0f}" if "batched_qps" in d else "-"
            loss = f"{d['score_loss']:.5f}" if "score_loss" in d else "-"
            g = r.get("score_gaps")
            gaps = f"{g['s10_minus_s11_median']:.5f} / {g['s10_minus_s20_median']:.5f}" if g else "-"
            lines.append(f"| {s['items']:,} | {s['distinct_items']:,} | {kind} | {d['p50_ms']:.2f} | "
                         f"{d['p99_ms']:.2f} | {d['recall_at_10']:.3f} | {d['recall_at_10_ties']:.3f} | {loss} | "
                         f"{gaps} | {qps} | "
                         f"{e['p50_ms']:.1f} | {e['p50_ms'] / d['p50_ms']:.0f}x |")
    lines += ["", "| items | build s (segments + ANN) | ANN build s | peak RSS MiB (build) | ANN B/item in RAM "
              "| text index B/text | RSS MiB open / after search | disk B/item |",
              "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for s in sizes:
        b = s["build"]
        lines.append(f"| {s['items']:,} | {b['build_s']:.0f} | {b['ann_build_s']:.0f} | "
                     f"{b['peak_rss_mib_after_build']:.0f} | "
                     f"{s['ann_bytes_per_item']:,.0f} | {s['kinds']['image -> texts']['ram_bytes_per_text']:,.0f} | "
                     f"{s['rss_mib_open']:.0f} / {s['rss_mib_after_search']:.0f} | {s['disk_bytes_per_item']:,.0f} |")
    adds = [s for s in sizes if "add" in s]
    if adds:
        lines += ["", "Adding items to a built index (one commit; the trained quantisers are kept):", "",
                  "| items | added | commit s | re-trained | FAISS MiB written | recall@10 after |",
                  "|---:|---:|---:|---|---:|---:|"]
        for s in adds:
            a = s["add"]
            lines.append(f"| {s['items']:,} | {a['items']:,} | {a['commit_s']:.1f} | {a['retrained']} | "
                         f"{a.get('ann_bytes_written', 0) / 2**20:,.1f} | {a['recall_at_10_after']:.3f} |")
    lines += ["", "Model encoding per single query (p50 / p99 ms):", ""]
    for kind, r in results["encode"].items():
        lines.append(f"- {kind}: {r['p50_ms']:.1f} / {r['p99_ms']:.1f}")
    lines += ["", "Parameter grid (search p50 ms / recall@10 / recall@10 (ties) / score loss; image -> texts: p50 / "
              "recall / recall (ties)), item kinds "
              "by nprobe x candidates:", ""]
    for s in sizes:
        for kind in KINDS[:2]:
            lines.append(f"- {s['items']:,} {kind}: " + "; ".join(
                f"{g['nprobe']}x{g['candidates']}: {g['p50_ms']:.2f}/{g['recall_at_10']:.3f}/"
                f"{g['recall_at_10_ties']:.3f}/{g['score_loss']:.5f}"
                for g in s["kinds"][kind]["grid"]))
        grid = s["kinds"]["image -> texts"]["grid"]
        if grid:
            lines.append(f"- {s['items']:,} image -> texts (nprobe x hits): " + "; ".join(
                f"{g['nprobe']}x{g['hits']}: {g['p50_ms']:.2f}/{g['recall_at_10']:.3f}/{g['recall_at_10_ties']:.3f}"
                for g in grid))
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--embeddings", type=Path, default=Path("/work/cache-bench/catalogue-50k"))
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 50_000, 100_000, 1_000_000])
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--exact-timed", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--nlist", type=int, default=1024)
    parser.add_argument("--add-items", type=int, default=10_000)
    parser.add_argument("--encode-queries", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model", help="the model whose single-query encoding is timed (default: the one "
                        "info.json of --embeddings names)")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/search.json"))
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)  # one size, in a child process
    parser.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.size is not None:
        args.child_out.write_text(json.dumps(run_size(args)))
        return

    from unifashion.settings import SEARCH

    info = json.loads((args.embeddings / "info.json").read_text())
    seconds, runs = 0.0, info
    while runs:
        seconds += runs["embedding_seconds_this_run"]
        runs = runs.get("earlier_runs")
    from unifashion.index import CatalogueIndex

    config = {"nprobe": inspect.signature(CatalogueIndex.create).parameters["nprobe"].default}
    results = {"embeddings": info, "embedding_seconds": seconds, "queries": args.queries, "threads": args.threads,
               "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
               "defaults": {"nprobe": config["nprobe"], "candidates": SEARCH.candidates},
               "encode": encode_latency(args), "sizes": []}
    for size in args.sizes:
        with tempfile.NamedTemporaryFile(suffix=".json") as child_out:
            command = [sys.executable, __file__, "--size", str(size), "--child-out", child_out.name]
            for name in ("embeddings", "queries", "exact_timed", "batch", "nlist", "add_items", "threads", "workdir"):
                value = getattr(args, name)
                if value is not None:
                    command += [f"--{name.replace('_', '-')}", str(value)]
            if subprocess.run(command).returncode != 0:  # noqa: PLW1510 - a failed size is recorded
                results.setdefault("failed_sizes", []).append(size)
            else:
                results["sizes"].append(json.loads(Path(child_out.name).read_text()))
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2))
        args.out.with_suffix(".md").write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
