"""`genhancer toy study` (`make study`): the paper's claims at toy scale, through the real pipeline.

Steps: a toy CLIP is pretrained (or `--base` given); training images, an MMVP-VLM-format
benchmark and a zero-shot class folder are drawn from the toy world; the base is scored; then for
every setting and seed the project's own `enhance` runs (same trainer, presets, launcher, export)
and the exported encoder is scored the same way: linear probes of the global token per
attribute, MMVP-VLM-format pairs (`evaluation.mmvp`), zero-shot colour classification
(`evaluation.zeroshot`), and each stage's shuffle gap (`models.diagnostics`). Writes
`report.md`, `results.json` (every number) and plots.

Settings (the paper's claims):

| setting     | claim                                                         |
|-------------|---------------------------------------------------------------|
| global      | (a) the global token gains fine detail; colour/zero-shot kept |
| local       | (b) conditioning on local tokens as well destroys the gain    |
| end-to-end  | (c) two-stage beats end-to-end                                |
| uniform     | (d) scaled logit-normal timesteps beat uniform                |
| strong      | (e) a stronger denoiser does not give a stronger encoder      |
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import GenhancerError
from .benchmark import PATTERN_OF, write_images, write_mmvp, write_zeroshot
from .clip_pretrain import PretrainConfig, pretrain_clip
from .probe import probe_encoder
from .report import write_report
from .world import COARSE, FINE

__all__ = ["SETTINGS", "StudyConfig", "run_study", "score_encoder"]

# setting -> (overrides on top of the toy preset, the claim it tests)
SETTINGS: dict[str, tuple[list[str], str]] = {
    "global": ([], "(a) global token only: fine detail up, colour and zero-shot kept"),
    "local": (["encoder.local_token_ratio=1.0"], "(b) + local tokens as condition"),
    "end-to-end": (["schedule=end-to-end"], "(c) end-to-end instead of two-stage"),
    "uniform": (["denoiser.timestep_sampling=uniform"], "(d) uniform timesteps"),
    "strong": (
        ["denoiser.num_layers=4", "denoiser.num_single_layers=8", "denoiser.num_attention_heads=4"],
        "(e) a 2x deeper, 2x wider denoiser",
    ),
}
ATTRS = (*FINE, *COARSE)


@dataclass
class StudyConfig:
    output: str = "runs/study"
    base: str | None = None  # a CLIP folder; None: pretrain one into output/base-clip
    preset: str = "toy"
    settings: list[str] = field(default_factory=lambda: list(SETTINGS))
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    overrides: list[str] = field(default_factory=list)  # applied to every run
    train_images: int = 8000
    probe_train: int = 3000
    probe_test: int = 3000
    mmvp_pairs: int = 100
    zeroshot_per_class: int = 50
    jobs: int = 1  # enhancement runs at once
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)

    def check(self) -> None:
        unknown = [s for s in self.settings if s not in SETTINGS]
        if unknown:
            raise GenhancerError(
                f"unknown study setting(s) {', '.join(unknown)}; choose from {', '.join(SETTINGS)}"
            )
        if not self.seeds:
            raise GenhancerError("the study needs at least one seed")
        if self.base and not Path(self.base, "config.json").is_file():
            raise GenhancerError(f"--base {self.base} is not a CLIP folder (no config.json)")


def score_encoder(model_dir: Path, data: dict[str, Path], cfg: StudyConfig) -> dict[str, Any]:
    """Probes, MMVP-VLM-format scores and zero-shot accuracy of one CLIP folder."""
    from ..evaluation.runs import evaluate

    probes = probe_encoder(model_dir, cfg.probe_train, cfg.probe_test)
    mmvp, zeroshot = evaluate([model_dir], mmvp_data=data["mmvp"], classification=data["zeroshot"])
    by_pattern = mmvp[0].scores
    return {
        "probe": probes,
        "mmvp": {a: round(by_pattern[PATTERN_OF[a]], 2) for a in ATTRS},
        "zeroshot_top1": round(zeroshot[0].metrics["classification/top1"], 2),
    }


def _prepare(cfg: StudyConfig, out: Path) -> tuple[Path, dict[str, Path]]:
    base = Path(cfg.base) if cfg.base else out / "base-clip"
    if not cfg.base and not (base / "config.json").is_file():
        print(f"study: pretraining the toy CLIP into {base}", flush=True)
        pretrain_clip(base, cfg.pretrain)
    data_dir = out / "data"
    data = {
        "train": data_dir / "train-images",
        "mmvp": data_dir / "mmvp-vlm",
        "zeroshot": data_dir / "zeroshot",
    }
    if not data["train"].is_dir() or len(list(data["train"].iterdir())) != cfg.train_images:
        shutil.rmtree(data["train"], ignore_errors=True)
        write_images(data["train"], cfg.train_images)
    if not (data["mmvp"] / "Questions.csv").is_file():
        write_mmvp(data["mmvp"], cfg.mmvp_pairs)
    if not (data["zeroshot"] / "classnames.txt").is_file():
        write_zeroshot(data["zeroshot"], cfg.zeroshot_per_class)
    return base, data


def _enhance_one(
    cfg: StudyConfig, base: Path, data: dict[str, Path], setting: str, seed: int, run_dir: Path
) -> dict[str, Any]:
    """`genhancer enhance --preset <preset> ...` in a child process, its output to a log."""
    from ..config import load_config
    from ..stages import stages
    from ..train.run_dir import RunDir

    overrides = [
        f"encoder.path={base}",
        f"data.path={data['train']}",
        f"run.output_dir={run_dir}",
        f"run.seed={seed}",
        *SETTINGS[setting][0],
        *cfg.overrides,
    ]
    run_cfg = load_config(cfg.preset, overrides=overrides)  # a bad override fails here, early
    tic = time.perf_counter()
    log = run_dir.with_suffix(".log")
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "genhancer_llava.cli",
        "enhance",
        "--preset",
        cfg.preset,
        "--overwrite",
        *overrides,
    ]
    with open(log, "w") as f:
        code = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT).returncode
    if code != 0:
        raise GenhancerError(f"study run {setting} seed {seed} failed; see {log}")
    run = RunDir(run_dir)
    summaries = {s.name: run.summary(s.name) for s in stages(run_cfg)}
    return {
        "seconds": round(time.perf_counter() - tic, 1),
        "encoder": str(run.encoder_dir),
        "stages": {
            name: {
                "loss_first": s["loss_first"],
                "loss_last": s["loss_last"],
                "shuffle_gap": s.get("shuffle_gap", {}),
            }
            for name, s in summaries.items()
        },
        "previews": {name: str(run.stage(name) / "previews" / "final.png") for name in summaries},
    }


def _stats(values: list[float]) -> dict[str, float]:
    mean = statistics.fmean(values)
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": round(mean, 2), "std": round(spread, 2), "n": len(values)}


def _aggregate(results: dict[str, Any]) -> dict[str, Any]:
    table = {}
    for setting, per_seed in results["runs"].items():
        rows = [r for r in per_seed.values() if "scores" in r]
        if not rows:
            continue
        entry: dict[str, Any] = {}
        for part in ("probe", "mmvp"):
            entry[part] = {a: _stats([r["scores"][part][a] for r in rows]) for a in ATTRS}
        entry["zeroshot_top1"] = _stats([r["scores"]["zeroshot_top1"] for r in rows])
        first = "stage1" if "stage1" in rows[0]["stages"] else "end-to-end"
        entry["shuffle_gap"] = _stats(
            [100 * r["stages"][first]["shuffle_gap"].get("gap", 0.0) for r in rows]
        )
        table[setting] = entry
    return table


def run_study(cfg: StudyConfig) -> Path:
    """Run the whole study; returns the report folder (report.md, results.json, plots)."""
    cfg.check()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")
    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    tic = time.perf_counter()
    base, data = _prepare(cfg, out)
    print("study: scoring the base", flush=True)
    results: dict[str, Any] = {
        "config": asdict(cfg),
        "base_dir": str(base),
        "base": score_encoder(base, data, cfg),
        "runs": {},
    }
    print(f"study: base {json.dumps(results['base'])}", flush=True)
    jobs = [(s, seed) for s in cfg.settings for seed in cfg.seeds]
    report_dir = out / "report"
    lock = threading.Lock()

    def work(job) -> None:
        setting, seed = job
        info = _enhance_one(cfg, base, data, setting, seed, out / "runs" / f"{setting}-seed{seed}")
        info["scores"] = score_encoder(Path(info["encoder"]), data, cfg)
        print(
            f"study: {setting} seed {seed} ({info['seconds']:.0f} s): {json.dumps(info['scores'])}",
            flush=True,
        )
        with lock:  # the report grows run by run: an interrupted study keeps what it has
            results["runs"].setdefault(setting, {})[str(seed)] = info
            results["table"] = _aggregate(results)
            results["wall_seconds"] = round(time.perf_counter() - tic, 1)
            write_report(results, report_dir)

    with ThreadPoolExecutor(max_workers=max(1, cfg.jobs)) as pool:
        for future in [pool.submit(work, job) for job in jobs]:
            future.result()
    print(f"study: done in {results['wall_seconds']:.0f} s; report {report_dir / 'report.md'}")
    return report_dir
