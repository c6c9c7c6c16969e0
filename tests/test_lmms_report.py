"""`genhancer eval lmms-report` (alias `report`) on hand-made lmms-eval logs with known answers:
the paper metrics."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from genhancer_llava.cli.main import main
from genhancer_llava.evaluation.lmms_report import (
    lenient_letter,
    lenient_yes_no,
    lmms_markdown,
    load_lmms_run,
    score_run,
)

from .conftest import cli_error

DATE = "20260101_000000"


def _mmvp(i: int, gt: str, reply: str, exact_ok: bool) -> dict:
    rec = {
        "index": i,
        "pair_index": i // 2,
        "pred": reply,
        "pred_letter": "",
        "gt": gt,
        "is_correct": exact_ok,
    }
    return {
        "doc_id": i,
        "target": gt,
        "filtered_resps": reply,
        "mmvp_accuracy": rec,
        "mmvp_pair_accuracy": rec,
    }


def _cv(i: int, source: str, gt: str, reply: str) -> dict:
    first = reply.strip().lstrip("( ")[:1].upper()  # lmms-eval's parse: the first letter
    rec = {
        "id": i,
        "gt_content": gt,
        "pred_parsed": first,
        "pred": reply,
        "type": "3D" if source == "Omni3D" else "2D",
        "task": "Count",
        "source": source,
        "is_correct": first == gt,
    }
    return {"doc_id": i, "target": f"({gt})", "filtered_resps": reply, "cv_bench_acc": rec}


def _pope(i: int, gt: str, reply: str) -> dict:
    pred = reply.lower().strip()
    rec = {
        "question_id": str(i),
        "score": float(pred == gt),
        "prediction": pred,
        "ground_truth": gt,
    }
    return {
        "doc_id": i,
        "target": gt,
        "filtered_resps": reply,
        **{
            k: rec
            for k in (
                "pope_accuracy",
                "pope_precision",
                "pope_recall",
                "pope_f1_score",
                "pope_yes_ratio",
            )
        },
    }


MMVP = [  # 3 pairs; lmms-eval's own parse already reads all of these replies
    _mmvp(0, "A", "A", True),
    _mmvp(1, "B", "(B)", True),
    _mmvp(2, "B", "The answer is (B)", True),
    _mmvp(3, "A", "B", False),
    _mmvp(4, "A", "a.", True),
    _mmvp(5, "B", "Option B is right", True),
]
CV = [
    _cv(0, "ADE20K", "B", "The answer is (B)"),  # lmms-eval reads "T"
    _cv(1, "ADE20K", "A", "(A)"),
    _cv(2, "COCO", "C", "C"),
    _cv(3, "COCO", "A", "B"),
    _cv(4, "COCO", "A", "A"),
    _cv(5, "Omni3D", "A", "A. closer"),
    _cv(6, "Omni3D", "B", "answer: B"),  # lmms-eval reads "A"
    _cv(7, "Omni3D", "B", "A"),
    _cv(8, "Omni3D", "A", "The answer is (B)"),
]
POPE = {
    "pope_adv": [
        _pope(0, "yes", "Yes."),
        _pope(1, "no", "No"),
        _pope(2, "yes", "yes"),
        _pope(3, "no", "There is no dog."),
    ],
    "pope_pop": [
        _pope(0, "yes", "Yes, there is."),
        _pope(1, "yes", "No."),
        _pope(2, "no", "yes"),
        _pope(3, "no", "no"),
    ],
    "pope_random": [
        _pope(0, "yes", "yes"),
        _pope(1, "no", "no"),
        _pope(2, "yes", "no"),
        _pope(3, "no", "yes"),
    ],
}


def write_logs(folder: Path) -> Path:
    """What `lmms-eval --output_path folder --log_samples` writes (one model sub-folder)."""
    sub = folder / "checkpoints__llava"
    sub.mkdir(parents=True)
    tasks = {"mmvp": MMVP, "cv_bench": CV, **POPE}
    results = {
        "results": {t: {"alias": t, "dummy,none": 0.5} for t in tasks},
        "model_name": "checkpoints/llava",
    }
    (sub / f"{DATE}_results.json").write_text(json.dumps(results))
    for task, samples in tasks.items():
        (sub / f"{DATE}_samples_{task}.jsonl").write_text(
            "".join(json.dumps(s) + "\n" for s in samples)
        )
    return folder


def test_parsers():
    assert lenient_yes_no("Yes.") == "yes" and lenient_yes_no("No, there is not.") == "no"
    assert lenient_yes_no("There is no dog. Yes.") == "no"
    assert lenient_letter("The answer is (B)") == "B" and lenient_letter("(C) red") == "C"
    assert lenient_letter("answer: b") == "B" and lenient_letter("Option A") == "A"
    assert lenient_letter("I think B is right") == "B" and lenient_letter("Both") == ""


def test_paper_metrics_from_known_answers(tmp_path):
    scores = score_run(load_lmms_run(write_logs(tmp_path / "run")))
    mmvp = scores["mmvp"]
    assert (
        mmvp["exact"] == mmvp["lenient"] == {"pair_accuracy": 66.67, "accuracy": 83.33, "pairs": 3}
    )
    cv = scores["cv_bench"]
    # exact: ADE20K 1/2, COCO 2/3 -> 2D 58.33; Omni3D 1/4 -> 3D 25; overall 41.67 (samples 4/9)
    assert cv["exact"] == {
        "2D": 58.33,
        "3D": 25.0,
        "overall": 41.67,
        "sample_accuracy": 44.44,
        "ADE20K": 50.0,
        "COCO": 66.67,
        "Omni3D": 25.0,
    }
    # lenient: ADE20K 2/2, COCO 2/3 -> 2D 83.33; Omni3D 2/4 -> 3D 50; overall 66.67
    assert cv["lenient"] == {
        "2D": 83.33,
        "3D": 50.0,
        "overall": 66.67,
        "sample_accuracy": 66.67,
        "ADE20K": 100.0,
        "COCO": 66.67,
        "Omni3D": 50.0,
    }
    pope = scores["pope"]
    # adversarial: "Yes." and "There is no dog." fail exact match; lenient gets all four.
    assert pope["adversarial"]["exact"]["accuracy"] == 50.0
    assert pope["adversarial"]["exact"]["f1"] == 100.0  # lmms-eval's recall ignores non-"no"
    assert pope["adversarial"]["lenient"] == {
        "accuracy": 100.0,
        "precision": 100.0,
        "recall": 100.0,
        "f1": 100.0,
        "model_yes_ratio": 50.0,
    }
    assert pope["popular"]["exact"]["accuracy"] == 25.0 and pope["popular"]["exact"]["f1"] == 0
    assert pope["popular"]["lenient"] == {
        "accuracy": 50.0,
        "precision": 50.0,
        "recall": 50.0,
        "f1": 50.0,
        "model_yes_ratio": 50.0,
    }
    assert pope["random"]["exact"]["f1"] == pope["random"]["lenient"]["f1"] == 50.0
    assert pope["mean_f1_exact"] == 50.0 and pope["mean_f1_lenient"] == 66.67
    assert scores["lmms_eval_reported"]["mmvp"] == {"dummy": 50.0}


def test_report_command_two_models(tmp_path, capsys):
    base, enhanced = write_logs(tmp_path / "base"), write_logs(tmp_path / "enhanced")
    out = tmp_path / "report"
    main(["eval", "lmms-report", str(base), str(enhanced), "--output", str(out)])
    printed = capsys.readouterr().out
    assert "| base | 66.7 | 83.3 | 50.0 | 66.7 | 66.7 |" in printed
    assert "| delta | +0.0" in printed or "| delta | 0.0" in printed
    data = json.loads((out / "report.json").read_text())
    assert [d["model"] for d in data] == ["base", "enhanced"]
    assert (out / "report.md").read_text().startswith("## LLaVA")
    assert (out / "report.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("make", ["missing", "empty"])
def test_report_bad_folders(tmp_path, capsys, make):
    folder = tmp_path / "runs"
    if make == "empty":
        folder.mkdir()
    err = cli_error(capsys, ["eval", "report", str(folder), "--output", str(tmp_path / "o")])
    assert ("does not exist" if make == "missing" else "holds no lmms-eval") in err


def test_lmms_eval_pope_yes_ratio_is_reported_as_the_ground_truths(tmp_path):
    """lmms-eval's pope_yes_ratio counts ground-truth "yes" answers (always 50% on POPE); the
    report names it so and gives the model's own share beside it."""
    run = load_lmms_run(write_logs(tmp_path / "run"))
    # what lmms-eval writes for a model that answers "yes" 3 times in 4 (pope_pop below)
    run.results["pope_pop"]["pope_yes_ratio,none"] = 0.5
    scores = score_run(run)
    reported = scores["lmms_eval_reported"]["pope_pop"]
    assert reported["ground_truth_yes_ratio"] == 50.0 and "pope_yes_ratio" not in reported
    assert scores["pope"]["popular"]["lenient"]["model_yes_ratio"] == 50.0
    assert scores["pope"]["adversarial"]["exact"]["model_yes_ratio"] == 25.0  # "yes" once in 4
    text = lmms_markdown([scores])
    assert "model yes-ratio 25.0" in text
    assert set(re.findall(r"(\S+) yes-ratio", text)) == {"model"}  # never unqualified


def test_report_refuses_a_folder_of_several_models(tmp_path, capsys):
    """base/ and enhanced/ under one folder: an error naming both, never one mixed row; the
    folders it names give one row each."""
    results = tmp_path / "results"
    base, enhanced = write_logs(results / "base"), write_logs(results / "enhanced")
    err = cli_error(capsys, ["eval", "report", str(results), "--output", str(tmp_path / "o")])
    assert err == (
        f"error: {results} holds lmms-eval runs of 2 models "
        "(base/checkpoints__llava, enhanced/checkpoints__llava); pass one RESULTS_DIR "
        "per model (one row each): genhancer eval lmms-report "
        f"{base / 'checkpoints__llava'} {enhanced / 'checkpoints__llava'}"
    )
    assert not (tmp_path / "o").exists()
    main(
        [
            "eval",
            "lmms-report",
            str(base / "checkpoints__llava"),
            str(enhanced / "checkpoints__llava"),
            "--name",
            "base",
            "--name",
            "enhanced",
            "--output",
            str(tmp_path / "o"),
        ]
    )
    rows = [r for r in capsys.readouterr().out.splitlines() if r.startswith("| ")]
    assert [r.split(" | ")[0] for r in rows[1:]] == ["| base", "| enhanced", "| delta"]
