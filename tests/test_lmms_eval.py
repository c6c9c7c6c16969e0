"""The REAL lmms-eval (0.7.3) task code, offline, through the `lmms-eval` command, on
`--model genhancer_llava`: fixture datasets in the real formats under the real dataset ids.

How lmms-eval finds the model: through the `lmms_eval.models` entry point declared in this
repository's pyproject.toml. The package metadata pip writes for an install holds that entry
point in `<dist>.dist-info/entry_points.txt`; the test writes exactly such a folder (from
pyproject.toml, so it is the declaration we ship) onto the subprocess's PYTHONPATH, because the
shared test environment may carry metadata installed from another checkout. Once this
checkout is installed, the installed metadata declares the same manifest as well, which
lmms-eval merges without conflict (same class paths; see test_manifest_registers_twice).

With tiny random models the answers are garbage: the test checks that every metric exists and
equals what the per-sample logs give when recomputed (`genhancer eval lmms-report`'s code).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("lmms_eval", reason="lmms-eval is the [lmms] extra")
pytest.importorskip("llava", reason="llava-torch is installed by `make` (pip --no-deps)")

from genhancer_llava.evaluation.lmms_report import load_lmms_run, score_run  # noqa: E402
from genhancer_llava.mllm.runner import apply_until, clean_gen_kwargs  # noqa: E402

from .conftest import REPO  # noqa: E402
from .llava_tiny import (  # noqa: E402
    make_exported_encoder,
    make_tiny_llama,
    make_tiny_llava_hf,
    make_tiny_llava_original,
)
from .lmms_fixtures import ROWS, offline_env  # noqa: E402

ALL_TASKS = [
    "mmvp",
    "cv_bench",
    "cv_bench_2d",
    "cv_bench_3d",
    "pope",
    "pope_adv",
    "pope_pop",
    "pope_random",
]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    import llava_patches

    llava_patches.apply()
    from genhancer_llava.mllm.swap import swap_checkpoint
    from genhancer_llava.models.tiny import make_tiny_clip

    root = tmp_path_factory.mktemp("lmms")
    llm = make_tiny_llama(root / "llm")
    old = make_tiny_clip(root / "old-clip", seed=5)
    enc = make_exported_encoder(root / "enc", seed=1)
    orig = make_tiny_llava_original(root / "llava-orig", llm, str(old))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        swapped = swap_checkpoint(orig, enc, root / "llava-orig-genhancer")
    env = offline_env(root)
    return {
        "root": root,
        "enc": enc,
        "hf": make_tiny_llava_hf(root / "llava-hf", llm, old),
        "orig": swapped,
        "env": env,
    }


def lmms_eval(setup, model_args: str, tasks: str, out: Path, *extra: str):
    cmd = [
        sys.executable,
        "-m",
        "lmms_eval",
        "--model",
        "genhancer_llava",
        "--model_args",
        model_args,
        "--tasks",
        tasks,
        "--batch_size",
        "1",
        "--device",
        "cpu",
        "--log_samples",
        "--output_path",
        str(out),
        "--verbosity",
        "DEBUG",
        "--gen_kwargs",
        "max_new_tokens=6",
        *extra,
    ]
    proc = subprocess.run(
        cmd, cwd=setup["root"], env=setup["env"], capture_output=True, text=True, timeout=600
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert "Traceback" not in log, log[-4000:]
    return log


def _close(a, b) -> bool:
    return a is not None and b is not None and abs(a - b) < 1e-6


def check_consistent(run, tasks: list[str]) -> None:
    """results.json metrics == the same metrics recomputed from the per-sample logs."""
    assert set(tasks) <= set(run.results), sorted(run.results)
    scores = score_run(run)
    reported = scores["lmms_eval_reported"]
    for task in tasks:
        samples = run.samples[task]
        assert len(samples) == ROWS, (task, len(samples))
        assert all(isinstance(s["filtered_resps"], str) for s in samples)
    if "mmvp" in tasks:
        assert _close(
            scores["mmvp"]["exact"]["pair_accuracy"], reported["mmvp"]["mmvp_pair_accuracy"]
        )
        assert _close(scores["mmvp"]["exact"]["accuracy"], reported["mmvp"]["mmvp_accuracy"])
        assert scores["mmvp"]["exact"]["pairs"] == ROWS // 2
    for task in [t for t in tasks if t.startswith("cv_bench")]:
        from genhancer_llava.evaluation.lmms_report import _cv_bench

        exact = _cv_bench(run.samples[task])["exact"]
        assert _close(exact["sample_accuracy"], reported[task]["cv_bench_acc"]), task
    for task in [t for t in tasks if t.startswith("pope")]:
        from genhancer_llava.evaluation.lmms_report import _pope

        exact = _pope(run.samples[task])["exact"]
        for ours, theirs in (
            ("accuracy", "pope_accuracy"),
            ("precision", "pope_precision"),
            ("recall", "pope_recall"),
            ("f1", "pope_f1_score"),
        ):
            assert _close(exact[ours], reported[task][theirs]), (task, ours)
        truths = [s["pope_accuracy"]["ground_truth"] for s in run.samples[task]]
        assert _close(
            100 * truths.count("yes") / len(truths), reported[task]["ground_truth_yes_ratio"]
        )


def test_llava_hf_with_load_time_swap_chat_mode(setup, tmp_path, capsys):
    """`--tasks mmvp,cv_bench,cv_bench_2d,cv_bench_3d,pope,pope_full` as users type it."""
    out = tmp_path / "out"
    log = lmms_eval(
        setup,
        f"pretrained={setup['hf']},vision_tower={setup['enc']}",
        "mmvp,cv_bench,cv_bench_2d,cv_bench_3d,pope,pope_full",
        out,
    )
    assert "genhancer_llava: llava-hf checkpoint" in log
    assert f"vision tower swapped to {setup['enc']}" in log
    assert "llava_finetune.sh" in log  # the one-time projector warning
    run = load_lmms_run(out)
    check_consistent(run, ALL_TASKS)

    # The real ids, configs and splits were read: each task saw its own fixture rows.
    cv = {t: [s["cv_bench_acc"] for s in run.samples[t]] for t in ALL_TASKS if "cv" in t}
    assert {r["source"] for r in cv["cv_bench"]} == {"ADE20K", "COCO", "Omni3D"}
    assert {r["type"] for r in cv["cv_bench_2d"]} == {"2D"}
    assert {r["source"] for r in cv["cv_bench_3d"]} == {"Omni3D"}
    ids = {
        t: sorted(s["pope_accuracy"]["question_id"] for s in run.samples[t])
        for t in ALL_TASKS
        if t.startswith("pope")
    }
    assert ids == {
        "pope": ["0", "1", "2", "3"],
        "pope_adv": ["100", "101", "102", "103"],
        "pope_pop": ["200", "201", "202", "203"],
        "pope_random": ["300", "301", "302", "303"],
    }
    assert [s["target"] for s in run.samples["mmvp"]] == ["A", "B", "B", "A"]

    # ... and the report reads it: CV-Bench 2D/3D/overall and POPE's mean F1 are defined.
    from genhancer_llava.cli.main import main

    main(["eval", "report", str(out), "--name", "tiny", "--output", str(tmp_path / "report")])
    assert (tmp_path / "report" / "report.png").stat().st_size > 0
    scores = score_run(run)
    assert scores["cv_bench"]["exact"]["overall"] is not None
    assert scores["pope"]["mean_f1_lenient"] is not None


def test_original_format_simple_mode(setup, tmp_path):
    """A swapped original-format checkpoint, through llava_patches, with --force_simple."""
    out = tmp_path / "out"
    log = lmms_eval(
        setup, f"pretrained={setup['orig']},dtype=float32", "mmvp,pope_full", out, "--force_simple"
    )
    assert "genhancer_llava: original checkpoint" in log
    check_consistent(load_lmms_run(out), ["mmvp", "pope_adv", "pope_pop", "pope_random"])


def test_manifest_registers_twice():
    """Installed metadata + the test's entry point (or a reinstall) is no conflict."""
    from lmms_eval.api.model import lmms
    from lmms_eval.models.registry_v2 import ModelRegistryV2

    from genhancer_llava.lmms import MANIFEST

    registry = ModelRegistryV2()
    registry.register_manifest(MANIFEST)
    registry.register_manifest(MANIFEST)  # what two declarations of the entry point do
    chat = registry.get_model_class("genhancer_llava")
    simple = registry.get_model_class("genhancer_llava", force_simple=True)
    assert issubclass(chat, lmms) and not chat.is_simple and simple.is_simple


def test_gen_kwargs_cleaned_before_generate():
    greedy = clean_gen_kwargs(
        {
            "until": ["\n\n", "USER:"],
            "max_new_tokens": 16,
            "temperature": 0,
            "top_p": 0,
            "num_beams": 1,
            "do_sample": False,
            "image_sizes": [(3, 4)],
        }
    )
    assert greedy.kwargs == {"max_new_tokens": 16, "do_sample": False, "num_beams": 1}
    assert greedy.until == ["\n\n", "USER:"] and greedy.dropped == ["image_sizes"]
    sampled = clean_gen_kwargs({"until": "###", "temperature": 0.7, "top_p": 0.9})
    assert sampled.kwargs == {
        "max_new_tokens": 1024,
        "do_sample": True,
        "num_beams": 1,
        "temperature": 0.7,
        "top_p": 0.9,
    }
    assert sampled.until == ["###"]
    assert apply_until("Yes.\n\nUSER: more", greedy.until) == "Yes."


def test_eval_llava_script(setup, tmp_path):
    """scripts/eval_llava.sh: base and load-time-swapped model through lmms-eval, then report."""
    out = tmp_path / "eval"
    env = dict(setup["env"], PYTHON=sys.executable)
    proc = subprocess.run(
        [
            "bash",
            str(REPO / "scripts" / "eval_llava.sh"),
            "--base",
            str(setup["hf"]),
            "--vision_tower",
            str(setup["enc"]),
            "--output",
            str(out),
            "--tasks",
            "mmvp",
            "--device",
            "cpu",
            "--",
            "--gen_kwargs",
            "max_new_tokens=4",
        ],
        cwd=setup["root"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert "| base |" in proc.stdout and "| enhanced |" in proc.stdout
    report = json.loads((out / "report" / "report.json").read_text())
    assert [r["model"] for r in report] == ["base", "enhanced"]
    assert all(r["mmvp"]["exact"]["pairs"] == ROWS // 2 for r in report)
    bad = subprocess.run(
        ["bash", str(REPO / "scripts" / "eval_llava.sh"), "--base", "x"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert bad.returncode == 2 and bad.stderr.startswith("error: pass --base")
