"""The study's report: report.md (tables, mean +- std over seeds), plots and results.json."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from .world import ATTRIBUTES, COARSE, FINE

__all__ = ["write_report", "study_markdown"]

ATTRS = (*FINE, *COARSE)


def _cell(stats: dict[str, float], base: float | None = None) -> str:
    text = f"{stats['mean']:.1f} ± {stats['std']:.1f}"
    if base is not None:
        text += f" ({stats['mean'] - base:+.1f})"
    return text


def study_markdown(results: dict[str, Any]) -> str:
    """The tables of the study, as markdown."""
    from .study import SETTINGS

    base = results["base"]
    seeds = results["config"]["seeds"]
    chance = {a: 100 / len(v) for a, v in ATTRIBUTES.items()}
    lines = [
        "# GenHancer at toy scale: study report",
        "",
        f"Seeds {seeds}; cells are mean ± std over seeds (delta to the base). Probe: logistic "
        f"regression of the 64-d global token, {results['config']['probe_train']} train / "
        f"{results['config']['probe_test']} test held-out scenes. Wall time "
        f"{results.get('wall_seconds', 0):.0f} s.",
        "",
        "## Linear probes of the global token (accuracy %)",
        "",
        "| setting | " + " | ".join(ATTRS) + " | zero-shot top-1 | shuffle gap % (stage 1) |",
        "|---" * (len(ATTRS) + 3) + "|",
        "| chance | " + " | ".join(f"{chance[a]:.1f}" for a in ATTRS) + " | 16.7 | |",
        "| base | "
        + " | ".join(f"{base['probe'][a]:.1f}" for a in ATTRS)
        + f" | {base['zeroshot_top1']:.1f} | |",
    ]
    for setting, row in results["table"].items():
        lines.append(
            f"| {setting} | "
            + " | ".join(_cell(row["probe"][a], base["probe"][a]) for a in ATTRS)
            + f" | {_cell(row['zeroshot_top1'], base['zeroshot_top1'])}"
            + f" | {_cell(row['shuffle_gap'])} |"
        )
    lines += [
        "",
        "## MMVP-VLM-format pairs from the toy world (pair accuracy %, chance 25)",
        "",
        "| setting | " + " | ".join(ATTRS) + " |",
        "|---" * (len(ATTRS) + 1) + "|",
        "| base | " + " | ".join(f"{base['mmvp'][a]:.1f}" for a in ATTRS) + " |",
    ]
    for setting, row in results["table"].items():
        lines.append(
            f"| {setting} | "
            + " | ".join(_cell(row["mmvp"][a], base["mmvp"][a]) for a in ATTRS)
            + " |"
        )
    lines += ["", "## Settings", ""]
    for setting in results["table"]:
        overrides, claim = SETTINGS[setting]
        extra = results["config"]["overrides"]
        lines.append(f"- **{setting}**: {claim}; overrides `{' '.join(overrides + extra)}`")
    lines += [
        "",
        "## Shuffle gap at fixed noise levels (stage 1, mean over seeds, %)",
        "",
        "| setting | t=0.25 | t=0.5 | t=0.75 | t=0.95 |",
        "|---|---|---|---|---|",
    ]
    for setting, per_seed in results["runs"].items():
        gaps = [
            r["stages"].get("stage1", r["stages"].get("end-to-end", {})).get("shuffle_gap", {})
            for r in per_seed.values()
        ]
        cells = []
        for t in ("0.25", "0.5", "0.75", "0.95"):
            vals = [g[f"gap_t{t}"] for g in gaps if f"gap_t{t}" in g]
            cells.append(f"{100 * sum(vals) / len(vals):.1f}" if vals else "")
        lines.append(f"| {setting} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Plots: `probes.png`, `mmvp.png`; reconstruction grids (top: inputs, bottom: "
        "rebuilt from the global token, seed 0, end of the first stage): `previews/`.",
        "",
    ]
    return "\n".join(lines)


def _plot(results: dict[str, Any], part: str, path: Path, title: str) -> None:
    from ..evaluation.report import _mpl

    plt = _mpl()
    names = ["base", *results["table"]]
    fig, ax = plt.subplots(figsize=(9, 3.6))
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        if name == "base":
            means, errs = [results["base"][part][a] for a in ATTRS], [0] * len(ATTRS)
        else:
            row = results["table"][name][part]
            means, errs = [row[a]["mean"] for a in ATTRS], [row[a]["std"] for a in ATTRS]
        xs = [j + (i - (len(names) - 1) / 2) * width for j in range(len(ATTRS))]
        ax.bar(xs, means, width, yerr=errs, label=name, capsize=2)
    ax.set_xticks(range(len(ATTRS)), ATTRS)
    ax.set_ylabel("accuracy %")
    ax.set_title(title)
    ax.legend(fontsize=7, ncol=3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(results: dict[str, Any], out: str | Path) -> Path:
    """report.md, results.json, probes.png, mmvp.png and previews/ under `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    if results["table"]:
        _plot(results, "probe", out / "probes.png", "linear probe of the global token")
        _plot(results, "mmvp", out / "mmvp.png", "MMVP-VLM-format pairs (toy world)")
    previews = out / "previews"
    previews.mkdir(exist_ok=True)
    for setting, per_seed in results["runs"].items():
        first = per_seed[min(per_seed, key=int)]
        for stage, png in first["previews"].items():
            if Path(png).is_file():
                shutil.copy(png, previews / f"{setting}-{stage}.png")
    (out / "report.md").write_text(study_markdown(results))
    return out / "report.md"
