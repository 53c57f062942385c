"""Bytes and seconds that building an index through many commits costs: append-only FAISS deltas
(this checkout) against rewriting the whole FAISS file(s) at every commit (an older checkout's
``src``, e.g. main before the deltas), side by side in one run.

    flock /tmp/unifashion-cpu.lock .venv/bin/python benchmarks/bench_index_updates.py \
        --items 20000 --commit-every 1024 --baseline-src /path/to/old/checkout/src \
        --out benchmarks/results/index_updates.json

Each code version runs in its own process (its ``src`` first on ``sys.path``) and builds the same
index the way ``CatalogueBuilder`` does: ``add`` + commit every ``--commit-every`` items of
seeded synthetic clustered unit vectors (``--num-queries`` x ``--dim`` per item), the vector-level
ANN (``--nlist`` lists, trained at the first commit with enough vectors). After each commit it
records the FAISS bytes that commit wrote (files under ``ann/`` that are new or changed) and its
seconds. At the end: total FAISS bytes written, the FAISS bytes on disk, the last commits' bytes,
and a recall check of the final index against exact search (the two versions must agree).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def batch(start: int, stop: int, num_queries: int, dim: int, seed: int = 0):
    """Items start..stop: 64 cluster centres plus noise, each item seeded by its own number."""
    centres = np.random.default_rng(seed).standard_normal((64, num_queries, dim)).astype(np.float32)
    multi = np.empty((stop - start, num_queries, dim), dtype=np.float32)
    fusion = np.empty((stop - start, dim), dtype=np.float32)
    for i in range(start, stop):
        rng = np.random.default_rng((seed, i))
        multi[i - start] = centres[i % 64] + 0.8 * rng.standard_normal((num_queries, dim))
        fusion[i - start] = multi[i - start].mean(axis=0) + 0.5 * rng.standard_normal(dim)
    multi /= np.linalg.norm(multi, axis=-1, keepdims=True)
    fusion /= np.linalg.norm(fusion, axis=-1, keepdims=True)
    return [f"item-{i}" for i in range(start, stop)], multi, fusion


def run_child(args) -> dict:
    from unifashion.index import CatalogueIndex

    folder = Path(tempfile.mkdtemp(prefix="bench-updates-")) / "index"
    index = CatalogueIndex.create(folder, dim=args.dim, num_queries=args.num_queries, nlist=args.nlist)
    commits = []
    for start in range(0, args.items, args.commit_every):
        stop = min(start + args.commit_every, args.items)
        ids, multi, fusion = batch(start, stop, args.num_queries, args.dim)
        before = {p.name: p.stat().st_mtime_ns for p in (folder / "ann").iterdir()}
        t0 = time.perf_counter()
        index.add(ids, multi, fusion, progress=False)
        seconds = time.perf_counter() - t0
        files = list((folder / "ann").iterdir())
        written = sum(p.stat().st_size for p in files if before.get(p.name) != p.stat().st_mtime_ns)
        commits.append({"items_after": stop, "ann_bytes_written": written, "commit_s": seconds,
                        "ann_bytes_on_disk": sum(p.stat().st_size for p in files), "ann_kind": index.ann_kind})
    _ids, multi, _fusion = batch(0, 50, args.num_queries, args.dim, seed=1)
    queries = multi[:, 0]
    truth = [[h.item_id for h in row] for row in index.search(queries, top_k=10, exact=True)]
    found = [[h.item_id for h in row] for row in index.search(queries, top_k=10)]
    recall = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, truth, strict=True)]))
    index.close()
    return {"commits": commits, "total_ann_bytes_written": sum(c["ann_bytes_written"] for c in commits),
            "total_commit_s": sum(c["commit_s"] for c in commits), "recall_at_10": recall, "top_ids": found}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--commit-every", type=int, default=1024)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--num-queries", type=int, default=32)
    parser.add_argument("--nlist", type=int, default=256)
    parser.add_argument("--baseline-src", help="src folder of a checkout that rewrites the FAISS file per commit")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="benchmarks/results/index_updates.json")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_child(args)))
        return

    here = str(Path(__file__).resolve().parents[1] / "src")
    versions = {"append-only deltas (this checkout)": here}
    if args.baseline_src:
        versions["whole-file rewrite (baseline)"] = str(Path(args.baseline_src).resolve())
    child_args = [a for a in sys.argv[1:]]
    env_base = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    results = {"config": {k: v for k, v in vars(args).items() if k not in ("child", "out")},
               "load_average": os.getloadavg(), "versions": {}}
    for name, src in versions.items():
        env = {**env_base, "PYTHONPATH": src}
        done = subprocess.run([sys.executable, __file__, *child_args, "--child"], env=env, capture_output=True,
                              text=True, check=True)
        results["versions"][name] = {"src": src, **json.loads(done.stdout.strip().splitlines()[-1])}
        print(f"{name}: {results['versions'][name]['total_ann_bytes_written'] / 2**20:.1f} MiB of FAISS written",
              flush=True)
    tops = [v.pop("top_ids") for v in results["versions"].values()]
    results["same_results"] = all(t == tops[0] for t in tops)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(results))
    print(markdown(results))


def markdown(results: dict) -> str:
    c = results["config"]
    lines = [f"# Building an index through commits: FAISS bytes written ({c['items']:,} items, a commit every "
             f"{c['commit_every']:,}, {c['num_queries']} x {c['dim']} vectors per item, nlist {c['nlist']})", "",
             f"Load average at the start: {', '.join(f'{x:.1f}' for x in results['load_average'])}. "
             f"Same top-10 results from every version: {results['same_results']}.", "",
             "| version | commits | FAISS MiB written | FAISS MiB on disk | last commit MiB | commit s (all) | "
             "recall@10 vs exact |", "|---|---:|---:|---:|---:|---:|---:|"]
    for name, v in results["versions"].items():
        last = v["commits"][-1]
        lines.append(f"| {name} | {len(v['commits'])} | {v['total_ann_bytes_written'] / 2**20:,.1f} | "
                     f"{last['ann_bytes_on_disk'] / 2**20:,.1f} | {last['ann_bytes_written'] / 2**20:,.2f} | "
                     f"{v['total_commit_s']:.1f} | {v['recall_at_10']:.3f} |")
    lines += ["", "FAISS MiB written per commit:", ""]
    for name, v in results["versions"].items():
        lines.append(f"- {name}: " + ", ".join(f"{x['ann_bytes_written'] / 2**20:.2f}" for x in v["commits"]))
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
