"""Evaluation results as rows, written as ``results.json`` and a Markdown table.

A row is ``{"task", "protocol", "method", "metric", "value", "split", "seed"}``: every number
carries the protocol that produced it, and every method of a run sits beside the others.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np


@dataclass
class ResultRow:
    task: str
    protocol: str
    method: str
    metric: str
    value: float
    split: str
    seed: int | None


class ResultTable:
    def __init__(self, rows: list[ResultRow] | None = None):
        self.rows: list[ResultRow] = list(rows or [])

    def add(self, task: str, protocol: str, method: str, metric: str, value: float, split: str,
            seed: int | None = None) -> None:
        self.rows.append(ResultRow(task, protocol, method, metric, float(value), split, seed))

    def extend(self, other: ResultTable) -> None:
        self.rows.extend(other.rows)

    def save_json(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps([asdict(r) for r in self.rows], indent=1) + "\n")
        return path

    @classmethod
    def load_json(cls, path: str | Path) -> ResultTable:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"results file not found: {path}")
        try:
            return cls([ResultRow(**r) for r in json.loads(path.read_text())])
        except (json.JSONDecodeError, TypeError) as exc:
            raise ValueError(f"{path} is not a results.json (a list of result rows): {exc}") from exc

    @classmethod
    def merge(cls, tables: list[ResultTable]) -> ResultTable:
        """All rows of ``tables`` (e.g. one run per seed). The same number twice (same task,
        protocol, method, metric, split and seed) is an error: it would count a seed twice."""
        merged, seen = cls(), {}
        for i, table in enumerate(tables):
            for r in table.rows:
                key = (r.task, r.protocol, r.method, r.metric, r.split, r.seed)
                if key in seen:
                    raise ValueError(f"tables {seen[key]} and {i} both hold {r.method} / {r.metric} / {r.protocol} "
                                     f"for seed {r.seed}: give each run its own --seed")
                seen[key] = i
                merged.rows.append(r)
        return merged

    def methods(self) -> list[str]:
        seen: dict[str, None] = {}
        for r in self.rows:
            seen.setdefault(r.method, None)
        return list(seen)

    def to_markdown(self) -> str:
        """One table per (task, protocol): metrics as rows, methods as columns, mean ± std over seeds."""
        groups: dict[tuple[str, str], dict[str, dict[str, list[float]]]] = defaultdict(
            lambda: defaultdict(lambda: defaultdict(list)))
        splits: dict[tuple[str, str], set] = defaultdict(set)
        seeds: dict[tuple[str, str], set] = defaultdict(set)
        for r in self.rows:
            groups[(r.task, r.protocol)][r.metric][r.method].append(r.value)
            splits[(r.task, r.protocol)].add(r.split)
            seeds[(r.task, r.protocol)].add(r.seed)
        out = []
        for (task, protocol), metrics in groups.items():
            methods = [m for m in self.methods() if any(m in per for per in metrics.values())]
            heading = f"### {task.upper()} — {protocol} (split: {', '.join(sorted(splits[(task, protocol)]))}"
            group_seeds = sorted(str(x) for x in seeds[(task, protocol)] if x is not None)
            if len(group_seeds) > 1:
                heading += f"; seeds {', '.join(group_seeds)}: mean ± std (population) where a method has several"
            out.append(heading + ")\n")
            out.append("| metric | " + " | ".join(methods) + " |")
            out.append("|---|" + "---|" * len(methods))
            for metric, per in metrics.items():
                cells = []
                for m in methods:
                    values = per.get(m)
                    if not values:
                        cells.append("–")
                    elif len(values) == 1:
                        cells.append(f"{values[0]:.2f}")
                    else:
                        cells.append(f"{np.mean(values):.2f} ± {np.std(values):.2f}")
                out.append(f"| {metric} | " + " | ".join(cells) + " |")
            out.append("")
        return "\n".join(out)

    def save_markdown(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(self.to_markdown())
        return path
