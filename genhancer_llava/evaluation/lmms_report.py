"""Paper-faithful scores from lmms-eval runs (mmvp, cv_bench, pope), for one or more models.

Reads what `lmms-eval ... --output_path OUT --log_samples` writes
(`OUT/<model>/<date>_results.json` and `<date>_samples_<task>.jsonl`; a RESULTS_DIR holds one
model's runs, newer runs win per task; a folder holding several models' runs is an error, never
a row mixing them) and reports:

- MMVP: pair accuracy (a pair counts when both questions are right; what the papers quote),
  beside per-question accuracy;
- CV-Bench (Cambrian): per-source accuracy, 2D = mean(ADE20K, COCO), 3D = Omni3D,
  overall = mean(2D, 3D). lmms-eval ships plain sample accuracy;
- POPE: accuracy, precision, recall, F1 and the model's yes-ratio (`model_yes_ratio`) per split
  (adversarial, popular, random from `pope_full`; `all` from `pope`), and the mean F1 over the
  three splits (LLaVA-1.5's POPE number). lmms-eval's own `pope_yes_ratio` counts the ground
  truth's "yes" answers (50% on POPE), not the model's: it is reported as
  `ground_truth_yes_ratio`, never as the model's.

Each is computed twice from the logged samples: `exact`, lmms-eval's own parse (POPE: exact
match after lower/strip, so "Yes." scores 0; CV-Bench: the reply's first letter, so
"The answer is (B)" reads as "T"), and `lenient` (POPE: LLaVA's eval_pope rule, "no" when the
first sentence holds "no" or "not", else "yes"; letters: a leading (bracketed) letter,
"answer is X" / "option X", the first bracketed letter, then a capital letter on its own).
Numbers are percentages.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import GenhancerError
from .report import _mpl, grouped_bars

__all__ = [
    "LmmsRun",
    "load_lmms_run",
    "score_run",
    "lenient_letter",
    "lenient_yes_no",
    "cambrian_scores",
    "pope_scores",
    "LMMS_RENAMED",
    "lmms_markdown",
    "write_lmms_report",
    "POPE_SPLITS",
]

POPE_SPLITS = {
    "pope_adv": "adversarial",
    "pope_pop": "popular",
    "pope_random": "random",
    "pope": "all",
}
CV_SOURCES = ("ADE20K", "COCO", "Omni3D")
# lmms-eval metric names that do not say what they measure -> what they measure
# (lmms-eval's pope_yes_ratio is the share of "yes" in the ground truth, not in the replies)
LMMS_RENAMED = {"pope_yes_ratio": "ground_truth_yes_ratio"}


@dataclass
class LmmsRun:
    """One model's lmms-eval outputs: reported metrics and logged samples per task."""

    name: str
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    samples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)


def load_lmms_run(results_dir: str | Path, name: str | None = None) -> LmmsRun:
    """Collect every `*_results.json` (and its `*_samples_<task>.jsonl`) under a folder."""
    root = Path(results_dir)
    if not root.is_dir():
        raise GenhancerError(f"results folder {root} does not exist")
    found = sorted(root.rglob("*_results.json"))
    if not found:
        raise GenhancerError(
            f"{root} holds no lmms-eval *_results.json; run lmms-eval with "
            f"--output_path {root} --log_samples"
        )
    _one_model(root, found)
    run = LmmsRun(name=name or root.name)
    for path in sorted(found, key=lambda p: p.name):  # date-prefixed: older first, newer win
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise GenhancerError(f"{path} is not valid JSON ({exc})") from exc
        date = path.name[: -len("_results.json")]
        run.files.append(str(path))
        for task, metrics in data.get("results", {}).items():
            run.results[task] = metrics
            samples = path.with_name(f"{date}_samples_{task}.jsonl")
            if samples.is_file():
                run.samples[task] = [
                    json.loads(line) for line in samples.read_text().splitlines() if line.strip()
                ]
    return run


def _one_model(root: Path, found: list[Path]) -> None:
    """Newer results win per task, which is only right within one model's runs: lmms-eval
    writes each model's files into a folder of its own (named after its --model_args)."""
    folders = sorted({str(p.parent.relative_to(root)) for p in found})
    if len(folders) > 1:
        dirs = " ".join(str(root / f) for f in folders)
        raise GenhancerError(
            f"{root} holds lmms-eval runs of {len(folders)} models ({', '.join(folders)}); pass "
            f"one RESULTS_DIR per model (one row each): genhancer eval lmms-report {dirs}"
        )


# --- parsing -------------------------------------------------------------------------------


def lenient_yes_no(reply: str) -> str:
    """LLaVA's POPE rule: the first sentence; 'no' if it holds the word no/not, else 'yes'."""
    text = reply.strip()
    if "." in text:
        text = text.split(".")[0]
    words = re.findall(r"[a-z']+", text.lower())
    return "no" if ("no" in words or "not" in words) else "yes"


def lenient_letter(reply: str, letters: str = "ABCDEF") -> str:
    """The chosen option letter of a reply ('' when none); see the module docstring."""
    text = reply.strip()
    allowed = f"[{letters}{letters.lower()}]"
    for pattern in (
        rf"^\(?({allowed})\)?(?:[.:)\s]|$)",
        rf"(?:answer|option)\s*(?:is|:)?\s*\(?({allowed})\)?(?![a-z])",
        rf"\(({allowed})\)",
    ):
        match = re.search(pattern, text, flags=re.IGNORECASE)
        if match:
            return match.group(1).upper()
    match = re.search(rf"(?<![A-Za-z])([{letters}])(?![A-Za-z])", text)  # a capital on its own
    return match.group(1) if match else ""


def _pct(value: float | None) -> float | None:
    return None if value is None else round(100.0 * value, 2)


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


# --- per benchmark -------------------------------------------------------------------------


def _mmvp(samples: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"questions": len(samples)}
    for mode in ("exact", "lenient"):
        pairs: dict[int, list[bool]] = {}
        correct = []
        for s in samples:
            rec = s["mmvp_pair_accuracy"]
            ok = (
                rec["is_correct"]
                if mode == "exact"
                else lenient_letter(rec["pred"], "AB") == rec["gt"]
            )
            correct.append(bool(ok))
            pairs.setdefault(rec["pair_index"], []).append(bool(ok))
        full = [v for v in pairs.values() if len(v) == 2]
        out[mode] = {
            "pair_accuracy": _pct(_mean([all(v) for v in full])),
            "accuracy": _pct(_mean(correct)),
            "pairs": len(full),
        }
    return out


def cambrian_scores(correct_by_source: dict[str, list[bool]]) -> dict[str, float | None]:
    """CV-Bench as Cambrian reports it, from per-source correctness (fractions, not %).

    2D = mean(ADE20K, COCO), 3D = Omni3D, overall = mean(2D, 3D); `None` where a source is
    missing. Also each source's accuracy and the plain sample accuracy (lmms-eval's number).
    """
    acc = {src: _mean(v) for src, v in correct_by_source.items()}
    two_d = [acc[s] for s in ("ADE20K", "COCO") if acc.get(s) is not None]
    d2 = _mean(two_d) if len(two_d) == 2 else None
    d3 = acc.get("Omni3D")
    overall = (d2 + d3) / 2 if d2 is not None and d3 is not None else None
    return {
        "2D": d2,
        "3D": d3,
        "overall": overall,
        "sample_accuracy": _mean([x for v in correct_by_source.values() for x in v]),
        **{src: acc.get(src) for src in CV_SOURCES},
    }


def _cv_bench(samples: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"questions": len(samples)}
    for mode in ("exact", "lenient"):
        by_source: dict[str, list[bool]] = {}
        for s in samples:
            rec = s["cv_bench_acc"]
            ok = (
                rec["is_correct"]
                if mode == "exact"
                else lenient_letter(rec["pred"]) == rec["gt_content"]
            )
            by_source.setdefault(rec["source"], []).append(bool(ok))
        out[mode] = {k: _pct(v) for k, v in cambrian_scores(by_source).items()}
    return out


def pope_scores(preds: Sequence[str], truths: Sequence[str]) -> dict[str, float]:
    """POPE as LLaVA's eval_pope reports it (fractions): 'yes' is the positive class.

    Accuracy, precision, recall, F1 and the MODEL's yes-ratio (lmms-eval's `pope_yes_ratio` is
    the ground truth's; see `LMMS_RENAMED`). `preds` are already parsed to 'yes'/'no'
    (`lenient_yes_no`).
    """
    tp = sum(p == "yes" and t == "yes" for p, t in zip(preds, truths, strict=True))
    fp = sum(p == "yes" and t == "no" for p, t in zip(preds, truths, strict=True))
    fn = sum(p != "yes" and t == "yes" for p, t in zip(preds, truths, strict=True))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "accuracy": _mean([p == t for p, t in zip(preds, truths, strict=True)]),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "model_yes_ratio": _mean([p == "yes" for p in preds]),
    }


def _binary(preds: list[str], truths: list[str]) -> dict[str, float | None]:
    return {k: _pct(v) for k, v in pope_scores(preds, truths).items()}


def _pope_exact(records: list[dict[str, Any]]) -> dict[str, float | None]:
    """lmms-eval's POPE metrics as shipped (its recall counts a miss only on a literal 'no')."""
    preds = [r["prediction"] for r in records]
    truths = [r["ground_truth"] for r in records]
    tp = sum(p == "yes" and t == "yes" for p, t in zip(preds, truths, strict=True))
    fp = sum(p == "yes" and t == "no" for p, t in zip(preds, truths, strict=True))
    fn = sum(p == "no" and t == "yes" for p, t in zip(preds, truths, strict=True))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "accuracy": _pct(_mean([r["score"] for r in records])),
        "precision": _pct(precision),
        "recall": _pct(recall),
        "f1": _pct(f1),
        "model_yes_ratio": _pct(_mean([p == "yes" for p in preds])),
    }


def _pope(samples: list[dict[str, Any]]) -> dict[str, Any]:
    records = [s["pope_accuracy"] for s in samples]
    replies = [s.get("filtered_resps", s["pope_accuracy"]["prediction"]) for s in samples]
    replies = [r[0] if isinstance(r, list) else r for r in replies]
    return {
        "questions": len(records),
        "exact": _pope_exact(records),
        "lenient": _binary(
            [lenient_yes_no(r) for r in replies], [r["ground_truth"] for r in records]
        ),
    }


def score_run(run: LmmsRun) -> dict[str, Any]:
    """The paper metrics of one model (benchmarks it has samples for), plus what lmms-eval said."""
    scores: dict[str, Any] = {"model": run.name, "files": run.files}
    if "mmvp" in run.samples:
        scores["mmvp"] = _mmvp(run.samples["mmvp"])
    cv = run.samples.get("cv_bench") or (
        run.samples.get("cv_bench_2d", []) + run.samples.get("cv_bench_3d", [])
    )
    if cv:
        scores["cv_bench"] = _cv_bench(cv)
    pope = {
        split: _pope(run.samples[task])
        for task, split in POPE_SPLITS.items()
        if task in run.samples
    }
    if pope:
        three = [s for s in ("adversarial", "popular", "random") if s in pope]
        for mode in ("exact", "lenient"):
            pope[f"mean_f1_{mode}"] = (
                round(_mean([pope[s][mode]["f1"] for s in three]), 2) if len(three) == 3 else None
            )
        scores["pope"] = pope
    scores["lmms_eval_reported"] = {
        task: {
            LMMS_RENAMED.get(k.split(",")[0], k.split(",")[0]): _pct(v)
            for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and "stderr" not in k
        }
        for task, metrics in run.results.items()
    }
    return scores


# --- output --------------------------------------------------------------------------------


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.1f}"


HEADLINES = (
    ("MMVP pair acc", lambda s: s.get("mmvp", {}).get("lenient", {}).get("pair_accuracy")),
    ("CV-Bench 2D", lambda s: s.get("cv_bench", {}).get("lenient", {}).get("2D")),
    ("CV-Bench 3D", lambda s: s.get("cv_bench", {}).get("lenient", {}).get("3D")),
    ("CV-Bench overall", lambda s: s.get("cv_bench", {}).get("lenient", {}).get("overall")),
    ("POPE mean F1", lambda s: s.get("pope", {}).get("mean_f1_lenient")),
)


def lmms_markdown(all_scores: Sequence[dict[str, Any]]) -> str:
    """Headline table (lenient parse) and the detail per benchmark (exact and lenient)."""
    lines = [
        "## LLaVA on mmvp / cv_bench / pope (paper metrics, %)",
        "",
        "| model | " + " | ".join(h for h, _ in HEADLINES) + " |",
        "|---|" + "---:|" * len(HEADLINES),
    ]
    for s in all_scores:
        lines.append(f"| {s['model']} | " + " | ".join(_fmt(f(s)) for _, f in HEADLINES) + " |")
    if len(all_scores) == 2:
        a, b = all_scores
        cells = [
            _fmt(f(b) - f(a)) if f(a) is not None and f(b) is not None else "n/a"
            for _, f in HEADLINES
        ]
        lines.append("| delta | " + " | ".join(cells) + " |")
    lines += ["", "Lenient parse; the `exact` rows below use lmms-eval's own parse.", ""]
    for s in all_scores:
        lines.append(f"### {s['model']}")
        if "mmvp" in s:
            for mode in ("exact", "lenient"):
                m = s["mmvp"][mode]
                lines.append(
                    f"- MMVP ({mode}): pair accuracy {_fmt(m['pair_accuracy'])} over "
                    f"{m['pairs']} pairs; question accuracy {_fmt(m['accuracy'])}"
                )
        if "cv_bench" in s:
            for mode in ("exact", "lenient"):
                c = s["cv_bench"][mode]
                lines.append(
                    f"- CV-Bench ({mode}): 2D {_fmt(c['2D'])} (ADE20K "
                    f"{_fmt(c['ADE20K'])}, COCO {_fmt(c['COCO'])}), 3D {_fmt(c['3D'])}, "
                    f"overall {_fmt(c['overall'])}; sample accuracy "
                    f"{_fmt(c['sample_accuracy'])}"
                )
        if "pope" in s:
            for split, p in s["pope"].items():
                if split.startswith("mean_f1"):
                    continue
                for mode in ("exact", "lenient"):
                    v = p[mode]
                    lines.append(
                        f"- POPE {split} ({mode}): acc {_fmt(v['accuracy'])}, F1 "
                        f"{_fmt(v['f1'])}, precision {_fmt(v['precision'])}, recall "
                        f"{_fmt(v['recall'])}, model yes-ratio "
                        f"{_fmt(v['model_yes_ratio'])}"
                    )
            lines.append(
                f"- POPE mean F1 (adversarial/popular/random): exact "
                f"{_fmt(s['pope']['mean_f1_exact'])}, lenient "
                f"{_fmt(s['pope']['mean_f1_lenient'])}"
            )
        lines.append("")
    return "\n".join(lines)


def plot_lmms(all_scores: Sequence[dict[str, Any]], path: Path, source: str = "") -> Path:
    """Headline metrics side by side; a metric a run has no samples for is drawn "n/a"."""
    plt = _mpl()
    fig, ax = plt.subplots(figsize=(8.0, 4.4))
    series = [(s["model"], [f(s) for _, f in HEADLINES]) for s in all_scores]
    title = "LLaVA: MMVP, CV-Bench, POPE (paper metrics, lenient parse)"
    grouped_bars(
        ax, [h for h, _ in HEADLINES], series, f"{title}\ndata: {source}" if source else title, "%"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_lmms_report(
    results_dirs: Sequence[str | Path], out: str | Path, names: Sequence[str] | None = None
) -> tuple[list[dict], dict[str, Path]]:
    """Score every RESULTS_DIR (one model each) and write report.md, report.json, report.png."""
    if names and len(names) != len(results_dirs):
        raise GenhancerError(f"{len(names)} --name for {len(results_dirs)} results folders")
    runs = [load_lmms_run(d, names[i] if names else None) for i, d in enumerate(results_dirs)]
    all_scores = [score_run(r) for r in runs]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "markdown": out / "report.md",
        "json": out / "report.json",
        "figure": out / "report.png",
    }
    files["markdown"].write_text(lmms_markdown(all_scores))
    files["json"].write_text(json.dumps(all_scores, indent=2))
    source = "lmms-eval logs in " + ", ".join(str(d) for d in results_dirs)
    plot_lmms(all_scores, files["figure"], source)
    return all_scores, files
