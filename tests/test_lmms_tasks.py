"""eval/lmms_tasks: the paper's metrics as lmms-eval tasks (`--include_path eval/lmms_tasks`).

The hooks are checked on hand-made samples with known scores; then the REAL lmms-eval (0.7.3)
loads the yamls, runs them offline on the fixture datasets (under the real dataset ids) with a
tiny llava-hf model, and each reported metric must equal the value recomputed here, by hand,
from the per-sample logs (`--log_samples`).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from genhancer_llava.evaluation import lmms_tasks as hooks
from genhancer_llava.evaluation.lmms_report import lenient_letter, lenient_yes_no

from .conftest import REPO

TASKS_DIR = REPO / "eval" / "lmms_tasks"


def _cv_doc(idx: int, source: str, answer: str) -> dict:
    return {
        "idx": idx,
        "source": source,
        "type": "3D" if source == "Omni3D" else "2D",
        "answer": answer,
    }


def test_cv_bench_hooks_give_cambrians_overall():
    samples = [
        (_cv_doc(0, "ADE20K", "(B)"), "(B) left"),  # right
        (_cv_doc(1, "ADE20K", "(A)"), "B"),  # wrong
        (_cv_doc(2, "COCO", "(A)"), "The answer is A."),  # right (first letter: T)
        (_cv_doc(3, "Omni3D", "(C)"), "(A)"),  # wrong
        (_cv_doc(4, "Omni3D", "(D)"), "no idea"),
    ]  # wrong: no letter
    records = [
        hooks.cv_bench_process_results(doc, [reply])["cv_bench_overall"] for doc, reply in samples
    ]
    assert [r["correct"] for r in records] == [True, False, True, False, False]
    assert hooks.cv_bench_2d(records) == pytest.approx((0.5 + 1.0) / 2)
    assert hooks.cv_bench_3d(records) == 0.0
    assert hooks.cv_bench_overall(records) == pytest.approx(0.375)  # sample accuracy: 0.4
    assert math.isnan(hooks.cv_bench_overall(records[:3]))  # no Omni3D: no overall


def test_pope_hooks_use_llavas_parse():
    replies = ["Yes.", "No, there is not.", "There is a cat.", "Yes, it is."]
    truths = ["yes", "no", "no", "yes"]
    records = [
        hooks.pope_process_results({"question_id": str(i), "answer": t}, [r])["pope_llava_f1"]
        for i, (r, t) in enumerate(zip(replies, truths, strict=True))
    ]
    assert [r["prediction"] for r in records] == ["yes", "no", "yes", "yes"]
    # tp 2, fp 1, fn 0 (lmms-eval's exact match would score "Yes." as wrong)
    assert hooks.pope_precision(records) == pytest.approx(2 / 3)
    assert hooks.pope_recall(records) == 1.0
    assert hooks.pope_f1(records) == pytest.approx(0.8)
    assert hooks.pope_accuracy(records) == 0.75
    assert hooks.pope_yes_ratio(records) == 0.75  # the model's, not the ground truth's (0.5)


def test_lmms_eval_reads_the_yamls_as_the_projects_hooks():
    """lmms-eval's own loader (TaskManager + load_yaml_config) resolves every `!function`."""
    pytest.importorskip("lmms_eval", reason="lmms-eval is the [lmms] extra")
    from lmms_eval.tasks import TaskManager
    from lmms_eval.utils import load_yaml_config

    manager = TaskManager(include_path=str(TASKS_DIR))

    def config(name: str) -> dict:
        return load_yaml_config(manager.task_index[name]["yaml_path"], mode="full")

    cv = config("cv_bench_cambrian")
    assert cv["process_results"] is hooks.cv_bench_process_results
    assert {m["metric"]: m["aggregation"] for m in cv["metric_list"]} == {
        "cv_bench_overall": hooks.cv_bench_overall,
        "cv_bench_2d": hooks.cv_bench_2d,
        "cv_bench_3d": hooks.cv_bench_3d,
    }
    assert cv["doc_to_text"].__module__ == "lmms_eval.tasks.cv_bench.utils"  # the stock prompt
    for name in ("pope_llava", "pope_llava_adv", "pope_llava_pop", "pope_llava_random"):
        pope = config(name)
        assert pope["process_results"] is hooks.pope_process_results, name
        assert {m["metric"]: m["aggregation"] for m in pope["metric_list"]}[
            "pope_llava_f1"
        ] is hooks.pope_f1, name
    group = config("pope_llava_full")
    assert group["task"] == ["pope_llava_adv", "pope_llava_pop", "pope_llava_random"]
    assert group["aggregate_metric_list"] == [
        {"metric": "pope_llava_f1", "aggregation": "mean", "weight_by_size": False}
    ]


# --- the real lmms-eval on the fixtures ------------------------------------------------------


@pytest.fixture(scope="module")
def lmms_run(tmp_path_factory):
    pytest.importorskip("lmms_eval", reason="lmms-eval is the [lmms] extra")
    from genhancer_llava.models.tiny import make_tiny_clip

    from .llava_tiny import make_tiny_llama, make_tiny_llava_hf
    from .lmms_fixtures import offline_env

    root = tmp_path_factory.mktemp("lmms-tasks")
    llava = make_tiny_llava_hf(
        root / "llava-hf", make_tiny_llama(root / "llm"), make_tiny_clip(root / "clip", seed=3)
    )
    env = offline_env(root)
    out = root / "out"
    cmd = [
        sys.executable,
        "-m",
        "lmms_eval",
        "--model",
        "genhancer_llava",
        "--model_args",
        f"pretrained={llava}",
        "--include_path",
        str(TASKS_DIR),
        "--tasks",
        "cv_bench_cambrian,pope_llava,pope_llava_full",
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
    ]
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=600)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "Traceback" not in log, log[-4000:]
    (results,) = out.rglob("*_results.json")
    samples = {}
    for path in results.parent.glob("*_samples_*.jsonl"):
        task = path.stem.split("_samples_", 1)[1]
        samples[task] = [json.loads(line) for line in path.read_text().splitlines() if line]
    return json.loads(results.read_text()), samples


def _reply(sample: dict) -> str:
    reply = sample["filtered_resps"]
    return reply[0] if isinstance(reply, list) else reply


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)


def test_cv_bench_cambrian_task_reports_the_overall_of_its_samples(lmms_run):
    results, samples = lmms_run
    logged = samples["cv_bench_cambrian"]
    assert len(logged) == 4
    correct: dict[str, list[bool]] = {}
    for s in logged:
        rec = s["cv_bench_overall"]
        assert rec["reply"] == _reply(s)
        truth = s["target"].strip("()")
        correct.setdefault(rec["source"], []).append(lenient_letter(_reply(s)) == truth)
    assert set(correct) == {"ADE20K", "COCO", "Omni3D"}
    acc = {k: _mean(v) for k, v in correct.items()}
    two_d = (acc["ADE20K"] + acc["COCO"]) / 2
    reported = results["results"]["cv_bench_cambrian"]
    assert reported["cv_bench_2d,none"] == pytest.approx(two_d)
    assert reported["cv_bench_3d,none"] == pytest.approx(acc["Omni3D"])
    assert reported["cv_bench_overall,none"] == pytest.approx((two_d + acc["Omni3D"]) / 2)


def _f1(logged: list[dict]) -> dict[str, float]:
    preds = [lenient_yes_no(_reply(s)) for s in logged]
    truths = [s["target"] for s in logged]
    tp = sum(p == t == "yes" for p, t in zip(preds, truths, strict=True))
    fp = sum(p == "yes" and t == "no" for p, t in zip(preds, truths, strict=True))
    fn = sum(p == "no" and t == "yes" for p, t in zip(preds, truths, strict=True))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return {
        "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
        "yes_ratio": preds.count("yes") / len(preds),
        "accuracy": _mean(p == t for p, t in zip(preds, truths, strict=True)),
    }


def test_pope_llava_tasks_and_the_mean_f1_of_the_three_splits(lmms_run):
    results, samples = lmms_run
    splits = ("pope_llava_adv", "pope_llava_pop", "pope_llava_random")
    f1 = {}
    for task in ("pope_llava", *splits):
        logged = samples[task]
        assert len(logged) == 4
        mine = _f1(logged)
        reported = results["results"][task]
        assert reported["pope_llava_f1,none"] == pytest.approx(mine["f1"]), task
        assert reported["pope_llava_yes_ratio,none"] == pytest.approx(mine["yes_ratio"]), task
        assert reported["pope_llava_accuracy,none"] == pytest.approx(mine["accuracy"]), task
        f1[task] = mine["f1"]
    group = results["results"]["pope_llava_full"]
    assert group["pope_llava_f1,none"] == pytest.approx(_mean(f1[t] for t in splits))
