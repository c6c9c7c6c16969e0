"""benchmarks/gpu_check.sh --smoke: the GPU benchmark's code paths, on the CPU at tiny shapes."""

import json
import subprocess
import time

import pytest

from .conftest import REPO


@pytest.mark.slow
def test_gpu_check_smoke_runs_on_cpu():
    start = time.perf_counter()
    proc = subprocess.run(
        ["bash", "benchmarks/gpu_check.sh", "--smoke"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    steps = [json.loads(ln) for ln in lines if ln.startswith('{"side"')]
    assert {s["stage"] for s in steps} == {"1", "2_only"}
    for s in steps:
        assert s["sec_per_step"] > 0 and s["flops_per_step"] > 0
    lmms = json.loads(next(ln for ln in lines if ln.startswith('{"lmms_model"')))
    assert lmms["device"] == "cpu" and len(lmms["answers"]) == 2
    assert lines[-1] == "[gpu_check] smoke passed"
    assert time.perf_counter() - start < 120  # CI budget (< 60 s on an idle machine)
