"""Tables (markdown, JSON, CSV), per-statement predictions (JSONL) and figures (PNG).

Figures use matplotlib's Agg backend (headless); matplotlib is the `eval` extra.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import GenhancerError
from .mmvp import SHORT_NAMES, MMVPResult
from .zeroshot import ZeroShotResult

__all__ = [
    "grouped_bars",
    "data_source",
    "mmvp_markdown",
    "write_mmvp",
    "plot_mmvp",
    "zeroshot_markdown",
    "write_zeroshot",
    "compare_results",
    "write_comparison",
]


def _patterns(results: Sequence[MMVPResult]) -> list[str]:
    return list(dict.fromkeys(p for r in results for p in r.scores))


def _short(pattern: str) -> str:
    return SHORT_NAMES.get(pattern, pattern)


def mmvp_markdown(results: Sequence[MMVPResult], delta: bool = False) -> str:
    """The MMVP-VLM table: one row per model, one column per pattern, then the average.

    With `delta`, a last row holds the second model minus the first (points).
    """
    patterns = _patterns(results)
    head = ["Model", *(_short(p) for p in patterns), "Average"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        cells = [f"{r.scores.get(p, float('nan')):.1f}" for p in patterns]
        lines.append(f"| {r.model} | " + " | ".join(cells) + f" | {r.average:.1f} |")
    if delta and len(results) == 2:
        a, b = results
        cells = [f"{b.scores[p] - a.scores[p]:+.1f}" for p in patterns]
        lines.append("| delta | " + " | ".join(cells) + f" | {b.average - a.average:+.1f} |")
    return "\n".join(lines) + "\n"


def _mpl():
    try:
        import matplotlib
    except ImportError as err:
        raise GenhancerError(
            "figures need matplotlib: pip install 'genhancer-llava[eval]'"
        ) from err
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def grouped_bars(
    ax, categories: Sequence[str], series: Sequence[tuple[str, Sequence]], title: str, ylabel: str
) -> None:
    """Side-by-side bars, one group per category, one bar per series (label, values).

    Every bar carries its value, so a measured 0 reads "0"; a value of None (not measured) gets
    no bar and an "n/a" where the bar would be: the two never look alike.
    """
    width = 0.8 / max(1, len(series))
    for i, (label, values) in enumerate(series):
        xs = [j + (i - (len(series) - 1) / 2) * width for j in range(len(categories))]
        measured = [(x, v) for x, v in zip(xs, values, strict=True) if v is not None]
        ax.bar(
            [x for x, _ in measured],
            [v for _, v in measured],
            width=width,
            label=label,
            color=f"C{i}",
        )
        for x, value in zip(xs, values, strict=True):
            if value is None:
                ax.text(
                    x,
                    1.5,
                    "n/a",
                    ha="center",
                    va="bottom",
                    fontsize=8,
                    color="dimgray",
                    fontweight="bold",
                )
                continue
            if value == 0:  # a bar of height 0 is invisible: a stub in the series' colour
                ax.hlines(0.8, x - width * 0.4, x + width * 0.4, colors=f"C{i}", linewidth=3)
            ax.text(x, value + 1.5, f"{value:.0f}", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(categories)))
    ax.set_xticklabels(categories, rotation=30, ha="right")
    ax.set_ylim(0, 105)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)


def data_source(results: Sequence[MMVPResult]) -> str:
    """The data the results came from, for titles (a generated fixture says so)."""
    sources = list(dict.fromkeys(r.source for r in results if r.source))
    return "; ".join(sources) or "unknown"


def _bars(ax, results: Sequence[MMVPResult], patterns: list[str]) -> None:
    series = [
        (f"{r.model} ({r.average:.1f})", [r.scores.get(p) for p in patterns] + [r.average])
        for r in results
    ]
    grouped_bars(
        ax,
        [_short(p) for p in patterns] + ["Average"],
        series,
        f"MMVP-VLM per pattern\ndata: {data_source(results)}",
        "pairs correct (%)",
    )


def plot_mmvp(results: Sequence[MMVPResult], path: str | Path) -> Path:
    """Bar chart: the models side by side for each pattern (and the average)."""
    plt = _mpl()
    patterns = _patterns(results)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.0 * len(patterns) + 2), 4.0))
    _bars(ax, results, patterns)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_mmvp(
    results: Sequence[MMVPResult], out: str | Path, stem: str = "mmvp_vlm"
) -> dict[str, Path]:
    """Write STEM.md, STEM.json, STEM.csv, STEM_predictions.jsonl and STEM.png under `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = {
        k: out / f"{stem}{suffix}"
        for k, suffix in (
            ("markdown", ".md"),
            ("json", ".json"),
            ("csv", ".csv"),
            ("predictions", "_predictions.jsonl"),
            ("figure", ".png"),
        )
    }
    files["markdown"].write_text(f"Data: {data_source(results)}\n\n" + mmvp_markdown(results))
    files["json"].write_text(json.dumps([r.to_dict() for r in results], indent=2))
    patterns = _patterns(results)
    with open(files["csv"], "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["model", *patterns, "average"])
        for r in results:
            writer.writerow(
                [r.model, *(f"{r.scores[p]:.4f}" for p in patterns), f"{r.average:.4f}"]
            )
    with open(files["predictions"], "w") as f:
        for r in results:
            for record in r.predictions:
                f.write(json.dumps(record) + "\n")
    plot_mmvp(results, files["figure"])
    return files


def _metric_names(results: Sequence[ZeroShotResult]) -> list[str]:
    return list(dict.fromkeys(m for r in results for m in r.metrics))


def zeroshot_markdown(results: Sequence[ZeroShotResult], delta: bool = False) -> str:
    """One row per metric, one column per model (and the delta of the second over the first)."""
    names = _metric_names(results)
    head = ["Metric", *(r.model for r in results)]
    if delta and len(results) == 2:
        head.append("delta")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in names:
        cells = [f"{r.metrics[name]:.1f}" if name in r.metrics else "-" for r in results]
        if delta and len(results) == 2:
            cells.append(f"{results[1].metrics[name] - results[0].metrics[name]:+.1f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_zeroshot(results: Sequence[ZeroShotResult], out: str | Path) -> dict[str, Path]:
    """Write zeroshot.md, zeroshot.json and zeroshot.csv under `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "markdown": out / "zeroshot.md",
        "json": out / "zeroshot.json",
        "csv": out / "zeroshot.csv",
    }
    files["markdown"].write_text(zeroshot_markdown(results, delta=len(results) == 2))
    files["json"].write_text(json.dumps([r.to_dict() for r in results], indent=2))
    with open(files["csv"], "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["metric", *(r.model for r in results)])
        for name in _metric_names(results):
            writer.writerow([name, *(f"{r.metrics.get(name, float('nan')):.4f}" for r in results)])
    return files


def compare_results(
    mmvp: Sequence[MMVPResult] | None, zeroshot: Sequence[ZeroShotResult] | None
) -> dict[str, Any]:
    """The comparison record: base and enhanced numbers and enhanced-minus-base deltas."""
    report: dict[str, Any] = {}
    if mmvp:
        base, enhanced = mmvp
        report["mmvp_vlm"] = {
            "base": base.to_dict(),
            "enhanced": enhanced.to_dict(),
            "delta": {p: enhanced.scores[p] - base.scores[p] for p in base.scores},
            "delta_average": enhanced.average - base.average,
        }
    if zeroshot:
        base, enhanced = zeroshot
        report["zeroshot"] = {
            "base": base.to_dict(),
            "enhanced": enhanced.to_dict(),
            "delta": {m: enhanced.metrics[m] - base.metrics[m] for m in base.metrics},
        }
    return report


def write_comparison(
    mmvp: Sequence[MMVPResult] | None, zeroshot: Sequence[ZeroShotResult] | None, out: str | Path
) -> dict[str, Path]:
    """One markdown report, one JSON and one figure (MMVP per pattern; zero-shot deltas)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "markdown": out / "report.md",
        "json": out / "report.json",
        "figure": out / "report.png",
    }
    data = compare_results(mmvp, zeroshot)
    parts = ["# Base vs enhanced encoder\n"]
    if mmvp:
        parts += [
            "## MMVP-VLM (pairs correct, %; delta in points)\n",
            f"Data: {data_source(mmvp)}\n",
            mmvp_markdown(mmvp, delta=True),
        ]
    if zeroshot:
        source = "; ".join(dict.fromkeys(r.source for r in zeroshot if r.source))
        parts += [
            "## Zero-shot preservation (%; delta in points)\n",
            f"Data: {source or 'unknown'}\n",
            zeroshot_markdown(zeroshot, delta=True),
        ]
    files["markdown"].write_text("\n".join(parts))
    files["json"].write_text(json.dumps(data, indent=2))

    plt = _mpl()
    panels = int(bool(mmvp)) + int(bool(zeroshot))
    fig, axes = plt.subplots(1, panels, figsize=(7.0 * panels, 4.2), squeeze=False)
    axes = list(axes[0])
    if mmvp:
        _bars(axes.pop(0), mmvp, _patterns(mmvp))
    if zeroshot:
        ax = axes.pop(0)
        deltas = data["zeroshot"]["delta"]
        names = list(deltas)
        bars = ax.barh(
            range(len(names)),
            [deltas[n] for n in names],
            color=["tab:green" if deltas[n] >= 0 else "tab:red" for n in names],
        )
        ax.bar_label(
            bars, labels=[f"{deltas[n]:+.1f}" for n in names], fontsize=7, padding=3
        )  # a 0.0 delta reads "+0.0", not an empty row
        ax.set_yticks(range(len(names)))
        ax.set_yticklabels(names, fontsize=8)
        ax.axvline(0, color="black", linewidth=0.8)
        ax.invert_yaxis()
        ax.margins(x=0.15)
        ax.set_xlabel("enhanced - base (points)")
        source = "; ".join(dict.fromkeys(r.source for r in zeroshot if r.source))
        ax.set_title(f"Zero-shot deltas\ndata: {source or 'unknown'}", fontsize=10)
    fig.tight_layout()
    fig.savefig(files["figure"], dpi=120)
    plt.close(fig)
    return files
