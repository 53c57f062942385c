"""The GPU check (benchmarks/gpu_check.py): the paper preset's code paths with tiny random
components in the real layouts, every phase in bf16, a resume, an evaluation and a generation.
Marked ``gpu`` (run with ``-m gpu`` on a machine with CUDA); the same script on the CPU is ``slow``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_check.py"


def _run(tmp_path, device: str, result: str) -> dict:
    done = subprocess.run([sys.executable, str(SCRIPT), "--device", device, "--precision", "bf16", "--out",
                           str(tmp_path)], capture_output=True, text=True, timeout=1200)
    report = json.loads((tmp_path / result).read_text())
    assert done.returncode == 0 and report["passed"], {k: v.get("error") for k, v in report["steps"].items()}
    return report


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_check_passes_on_cuda(tmp_path):
    report = _run(tmp_path, "cuda", "gpu_check.json")
    assert report["cuda_device"]


@pytest.mark.slow
def test_gpu_check_code_paths_pass_on_the_cpu(tmp_path):
    report = _run(tmp_path, "cpu", "gpu_check_cpu.json")
    assert not (tmp_path / "gpu_check.json").exists()  # the GPU result's name is the GPU's alone
    assert set(report["steps"]) == {"build paper preset", "write datasets", "train every phase + resume", "evaluate",
                                    "generate + caption"}
