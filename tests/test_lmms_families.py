"""lmms-eval (the real task code, offline, `python -m lmms_eval --verbosity DEBUG`) with
`--model genhancer_llava` on llava-hf LLaVA-NeXT and LLaVA-OneVision checkpoints, the encoder
swapped in at load time; every metric recomputed from the sample logs (as test_lmms_eval.py).

Checkpoints: tests/llava_families_tiny.py (published configs, tiny widths). Fixture data:
tests/lmms_fixtures.py. Three lmms-eval runs in all, to keep CI short: NeXT directly (then
`genhancer eval lmms-report`), OneVision through scripts/eval_llava.sh (as is, and with the
load-time swap, then the report).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytest.importorskip("lmms_eval", reason="lmms-eval is the [lmms] extra")

from genhancer_llava.evaluation.lmms_report import load_lmms_run  # noqa: E402

from .conftest import REPO  # noqa: E402
from .llava_families_tiny import (  # noqa: E402
    NEXT,
    ONEVISION,
    make_next_encoder,
    make_onevision_encoder,
    make_tiny_next,
    make_tiny_onevision,
)
from .lmms_fixtures import ROWS, offline_env  # noqa: E402
from .test_lmms_eval import check_consistent, lmms_eval  # noqa: E402

TASKS = "mmvp,cv_bench,pope"
RUN_TASKS = ["mmvp", "cv_bench", "pope"]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("lmms-families")
    env = offline_env(root)
    return {
        "root": root,
        "env": env,
        NEXT: make_tiny_next(root / NEXT),
        ONEVISION: make_tiny_onevision(root / ONEVISION),
        "enc-" + NEXT: make_next_encoder(root / "clip-336"),
        "enc-" + ONEVISION: make_onevision_encoder(root / "siglip-384"),
    }


def test_llava_next_load_time_swap(setup, tmp_path):
    out = tmp_path / "out"
    enc = setup["enc-" + NEXT]
    log = lmms_eval(setup, f"pretrained={setup[NEXT]},vision_tower={enc}", TASKS, out)
    assert "genhancer_llava: llava-hf checkpoint" in log and "(LLaVA-NeXT (llava-hf))" in log
    assert f"vision tower swapped to {enc}" in log
    run = load_lmms_run(out)
    check_consistent(run, RUN_TASKS)
    assert [s["target"] for s in run.samples["mmvp"]] == ["A", "B", "B", "A"]

    from genhancer_llava.cli.main import main

    main(["eval", "lmms-report", str(out), "--name", "next", "--output", str(tmp_path / "rep")])
    report = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert report[0]["mmvp"]["exact"]["pairs"] == ROWS // 2


def test_llava_onevision_through_eval_script(setup, tmp_path):
    """scripts/eval_llava.sh: the OneVision checkpoint as is and with the encoder swapped in."""
    out = tmp_path / "eval"
    env = dict(setup["env"], PYTHON=sys.executable, LMMS_VERBOSITY="DEBUG")
    enc = setup["enc-" + ONEVISION]
    proc = subprocess.run(
        [
            "bash",
            str(REPO / "scripts" / "eval_llava.sh"),
            "--base",
            str(setup[ONEVISION]),
            "--vision_tower",
            str(enc),
            "--output",
            str(out),
            "--tasks",
            TASKS,
            "--device",
            "cpu",
            "--",
            "--gen_kwargs",
            "max_new_tokens=6",
        ],
        cwd=setup["root"],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert "Traceback" not in log, log[-4000:]
    assert "(LLaVA-OneVision (llava-hf))" in log and f"vision tower swapped to {enc}" in log
    for name in ("base", "enhanced"):
        check_consistent(load_lmms_run(out / name), RUN_TASKS)
    report = json.loads((out / "report" / "report.json").read_text())
    assert [r["model"] for r in report] == ["base", "enhanced"]
    assert all(r["mmvp"]["exact"]["pairs"] == ROWS // 2 for r in report)
    assert "| base |" in proc.stdout and "| enhanced |" in proc.stdout
