"""Experiments: whole runs that combine data, training, evaluation and pipelines (the two-stage
CIR recipe, the design/try-on run, the evaluation run, the baseline, the demo). Above every
library layer; below serving and the CLI.

Every run takes one config dataclass (read and written by :mod:`unifashion.configuration`) and
writes it to ``run_config.json`` in its output folder before it starts, so a run's folder always
says what it ran with.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from unifashion.configuration import save_json

RUN_CONFIG = "run_config.json"


def write_run_config(config: Any, folder: str | os.PathLike) -> Path:
    """``config`` as ``folder/run_config.json`` (the folder is made if missing)."""
    return save_json(config, Path(folder) / RUN_CONFIG)
