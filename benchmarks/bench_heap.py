"""glibc's mmap threshold fixed (``unifashion.data.heap.bound_heap_growth``) or left to adjust
itself: resident memory of one allocation pattern, side by side.

    OMP_NUM_THREADS=1 nice -n 19 .venv/bin/python benchmarks/bench_heap.py --out benchmarks/results/heap.json

The pattern stands in for evaluation's batches: every round allocates blocks of varying size
(like texts padded to each batch's longest, score chunks: 0.25 to 4 MB, each touched), keeps a
few of them (results carried to the end) and frees the rest. Before the rounds one 8 MB block is
allocated and freed, as a model load does many times: glibc then raises its threshold, and
blocks under it are carved from the heap instead of being mapped on their own.

Each setting runs in a fresh process (``--child``), ``--repeats`` times; reported per setting: the
peak resident memory (VmHWM) and the resident memory after the rounds (VmRSS), in MB, and the
memory the pattern itself holds at the end (its kept blocks).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import time
from pathlib import Path


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def child(bounded: bool, rounds: int, seed: int) -> dict:
    from unifashion.data.heap import bound_heap_growth  # imported by both: the same baseline

    if bounded and not bound_heap_growth():
        raise RuntimeError("bound_heap_growth did not apply (not glibc, or MALLOC_MMAP_THRESHOLD_ set)")
    warm = bytearray(8 * 2**20)  # freed: glibc raises its mmap threshold to 8 MB
    del warm
    rng = random.Random(seed)
    kept = []
    start_rss = _status_mb("VmRSS")
    for _ in range(rounds):
        batch = [bytearray(rng.randrange(2**18, 2**22)) for _ in range(12)]
        kept.append(batch.pop(rng.randrange(len(batch)))[: 2**16])  # a small result survives each round
        del batch
    return {"start_rss_mb": round(start_rss, 1), "end_rss_mb": round(_status_mb("VmRSS"), 1),
            "peak_rss_mb": round(_status_mb("VmHWM"), 1),
            "kept_mb": round(sum(len(k) for k in kept) / 2**20, 1)}


def run(bounded: bool, rounds: int, seed: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_MMAP_THRESHOLD_"}
    command = [sys.executable, __file__, "--child", "bounded" if bounded else "default", "--rounds", str(rounds),
               "--seed", str(seed)]
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/results/heap.json")
    parser.add_argument("--child", choices=("bounded", "default"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child == "bounded", args.rounds, args.seed)))
        return
    if not sys.platform.startswith("linux"):
        raise SystemExit("glibc's allocator: Linux only")
    started = time.perf_counter()
    settings = {}
    for name, bounded in (("glibc default (threshold adjusts)", False), ("bound_heap_growth()", True)):
        runs = [run(bounded, args.rounds, args.seed + r) for r in range(args.repeats)]
        settings[name] = {"runs": runs, **{f"median_{key}": sorted(r[key] for r in runs)[len(runs) // 2]
                                           for key in ("peak_rss_mb", "end_rss_mb")}}
    results = {"benchmark": "bench_heap", "rounds": args.rounds, "blocks_per_round": 12,
               "block_bytes": [2**18, 2**22], "repeats": args.repeats, "python": platform.python_version(),
               "libc": " ".join(platform.libc_ver()), "seconds": round(time.perf_counter() - started, 1),
               "settings": settings}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    for name, values in settings.items():
        print(f"{name}: peak RSS {values['median_peak_rss_mb']} MB, after the rounds {values['median_end_rss_mb']} MB")


if __name__ == "__main__":
    main()
