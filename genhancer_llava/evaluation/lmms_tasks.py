"""The hooks of the lmms-eval tasks in `eval/lmms_tasks/` (the paper's own metrics).

lmms-eval's task yamls name these with `!function genhancer_llava.evaluation.lmms_tasks.NAME`
(lmms-eval imports a dotted name that is not a file beside the yaml as a module), so the
formulas stay in one place, `lmms_report`, which also scores the stock tasks' sample logs:

- `cv_bench_cambrian`: CV-Bench with Cambrian's overall ((ADE20K + COCO)/2 + Omni3D)/2,
  answers read with `lenient_letter`;
- `pope_llava` and the group `pope_llava_full` (adversarial, popular, random): POPE with
  LLaVA's eval_pope parse (`lenient_yes_no`); the group's `pope_llava_f1` is the unweighted mean
  F1 over the three splits, LLaVA-1.5's POPE number.

`process_results` stores one record per sample (the reply, its parse, the truth) under every
metric of the task; each aggregation reads the records. Values are fractions, as lmms-eval's.
Nothing here imports lmms_eval.
"""

from __future__ import annotations

from typing import Any

from .lmms_report import cambrian_scores, lenient_letter, lenient_yes_no, pope_scores

__all__ = [
    "CV_METRICS",
    "POPE_METRICS",
    "cv_bench_2d",
    "cv_bench_3d",
    "cv_bench_overall",
    "cv_bench_process_results",
    "pope_accuracy",
    "pope_f1",
    "pope_precision",
    "pope_process_results",
    "pope_recall",
    "pope_yes_ratio",
]

CV_METRICS = ("cv_bench_overall", "cv_bench_2d", "cv_bench_3d")
POPE_METRICS = (
    "pope_llava_accuracy",
    "pope_llava_precision",
    "pope_llava_recall",
    "pope_llava_f1",
    "pope_llava_yes_ratio",
)


def _reply(results: list[Any]) -> str:
    reply = results[0] if results else ""
    return reply if isinstance(reply, str) else str(reply)


# --- CV-Bench --------------------------------------------------------------------------------


def cv_bench_process_results(doc: dict[str, Any], results: list[Any]) -> dict[str, dict]:
    """One CV-Bench sample: the reply's letter (`lenient_letter`) against `answer` ("(B)")."""
    reply = _reply(results)
    truth = str(doc["answer"]).strip().strip("()")
    parsed = lenient_letter(reply)
    record = {
        "idx": doc["idx"],
        "source": doc["source"],
        "type": doc["type"],
        "reply": reply,
        "parsed": parsed,
        "answer": truth,
        "correct": parsed == truth,
    }
    return {metric: record for metric in CV_METRICS}


def _cambrian(records: list[dict[str, Any]]) -> dict[str, float | None]:
    by_source: dict[str, list[bool]] = {}
    for rec in records:
        by_source.setdefault(rec["source"], []).append(bool(rec["correct"]))
    return cambrian_scores(by_source)


def _number(value: float | None) -> float:
    # lmms-eval expects a number; a benchmark without one of the sources has no Cambrian score
    return float("nan") if value is None else float(value)


def cv_bench_overall(records: list[dict[str, Any]]) -> float:
    """Cambrian's overall: mean(2D, 3D) with 2D = mean(ADE20K, COCO), 3D = Omni3D."""
    return _number(_cambrian(records)["overall"])


def cv_bench_2d(records: list[dict[str, Any]]) -> float:
    """mean(ADE20K accuracy, COCO accuracy)."""
    return _number(_cambrian(records)["2D"])


def cv_bench_3d(records: list[dict[str, Any]]) -> float:
    """Omni3D accuracy."""
    return _number(_cambrian(records)["3D"])


# --- POPE ------------------------------------------------------------------------------------


def pope_process_results(doc: dict[str, Any], results: list[Any]) -> dict[str, dict]:
    """One POPE sample: the reply read as LLaVA's eval_pope does (`lenient_yes_no`)."""
    reply = _reply(results)
    truth = str(doc["answer"]).strip().lower()
    record = {
        "question_id": doc["question_id"],
        "reply": reply,
        "prediction": lenient_yes_no(reply),
        "ground_truth": truth,
    }
    return {metric: record for metric in POPE_METRICS}


def _pope(records: list[dict[str, Any]]) -> dict[str, float]:
    return pope_scores([r["prediction"] for r in records], [r["ground_truth"] for r in records])


def pope_accuracy(records: list[dict[str, Any]]) -> float:
    return _number(_pope(records)["accuracy"])


def pope_precision(records: list[dict[str, Any]]) -> float:
    return _pope(records)["precision"]


def pope_recall(records: list[dict[str, Any]]) -> float:
    return _pope(records)["recall"]


def pope_f1(records: list[dict[str, Any]]) -> float:
    return _pope(records)["f1"]


def pope_yes_ratio(records: list[dict[str, Any]]) -> float:
    """The share of samples the MODEL answered yes (LLaVA's 'Yes ratio')."""
    return _number(_pope(records)["model_yes_ratio"])
