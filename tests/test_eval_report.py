"""The eval commands end to end on tiny CLIPs and generated data: files, numbers, figures."""

import csv
import json
from pathlib import Path

import pytest
from PIL import Image

from genhancer_llava.cli.main import main
from genhancer_llava.demo import demo_scores
from genhancer_llava.evaluation import PATTERNS, make_mmvp_benchmark, make_zeroshot_fixture
from genhancer_llava.models.tiny import make_tiny_clip


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("evaldata")
    bench = make_mmvp_benchmark(root / "bench", pairs_per_pattern=2, image_size=64)
    cls, ret = make_zeroshot_fixture(root / "zs", images_per_class=2, image_size=32)
    other = make_tiny_clip(root / "other-clip", seed=1)
    return {"bench": bench, "cls": cls, "ret": ret, "other": other}


def _png(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        assert image.format == "PNG"
        return image.size


def test_mmvp_vlm_command_writes_table_json_csv_predictions_and_chart(
    capsys, data, tiny_clip, tmp_path
):
    out = tmp_path / "mmvp"
    main(
        [
            "eval",
            "mmvp-vlm",
            "--model",
            str(tiny_clip),
            "--model",
            str(data["other"]),
            "--data",
            str(data["bench"]),
            "--output",
            str(out),
            "--batch_size",
            "7",
        ]
    )
    stdout = capsys.readouterr().out
    assert stdout.startswith(
        "| Model | Orientation | Presence | State | Quantity | Position |"
        " Color | Structure | Text | Viewpoint | Average |"
    )
    assert "| tiny-clip |" in stdout and "| other-clip |" in stdout and "| delta |" in stdout
    results = json.loads((out / "mmvp_vlm.json").read_text())
    assert [r["model"] for r in results] == ["tiny-clip", "other-clip"]
    for r in results:
        assert list(r["scores"]) == list(PATTERNS) and r["pairs"] == dict.fromkeys(PATTERNS, 2)
        assert all(v in (0.0, 50.0, 100.0) for v in r["scores"].values())
        assert r["average"] == pytest.approx(sum(r["scores"].values()) / 9)
    with open(out / "mmvp_vlm.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["model", *PATTERNS, "average"] and len(rows) == 3
    assert float(rows[1][-1]) == pytest.approx(results[0]["average"])
    predictions = [json.loads(line) for line in (out / "mmvp_vlm_predictions.jsonl").open()]
    assert len(predictions) == 2 * 36
    assert {
        "model",
        "qid",
        "pattern",
        "statement",
        "prob_image1",
        "pred",
        "truth",
        "correct",
        "pair_correct",
    } <= set(predictions[0])
    for r in results:  # the table is the predictions' pair rule, per pattern
        for pattern in PATTERNS:
            rows = [p for p in predictions if p["model"] == r["model"] and p["pattern"] == pattern]
            pairs = sum(
                a["correct"] and b["correct"] for a, b in zip(rows[::2], rows[1::2], strict=True)
            )
            assert r["correct"][pattern] == pairs
    assert "| tiny-clip |" in (out / "mmvp_vlm.md").read_text()
    width, height = _png(out / "mmvp_vlm.png")
    assert width > 400 and height > 200
    import matplotlib

    assert matplotlib.get_backend().lower() == "agg"


def test_compare_writes_one_report_with_mmvp_and_zeroshot_deltas(capsys, data, tiny_clip, tmp_path):
    out = tmp_path / "compare"
    main(
        [
            "eval",
            "compare",
            str(tiny_clip),
            str(data["other"]),
            "--mmvp",
            str(data["bench"]),
            "--classification",
            str(data["cls"]),
            "--retrieval",
            str(data["ret"]),
            "--output",
            str(out),
        ]
    )
    stdout = capsys.readouterr().out
    assert "| base |" in stdout and "| enhanced |" in stdout and "classification/top1" in stdout
    report = json.loads((out / "report.json").read_text())
    mmvp, zs = report["mmvp_vlm"], report["zeroshot"]
    for p in PATTERNS:
        assert mmvp["delta"][p] == mmvp["enhanced"]["scores"][p] - mmvp["base"]["scores"][p]
    assert mmvp["delta_average"] == pytest.approx(
        mmvp["enhanced"]["average"] - mmvp["base"]["average"]
    )
    assert set(zs["delta"]) == {
        "classification/top1",
        "classification/top5",
        *(f"retrieval/{d}_R@{k}" for d in ("image_to_text", "text_to_image") for k in (1, 5, 10)),
    }
    for m, d in zs["delta"].items():
        assert d == pytest.approx(zs["enhanced"]["metrics"][m] - zs["base"]["metrics"][m])
    markdown = (out / "report.md").read_text()
    assert "## MMVP-VLM" in markdown and "## Zero-shot preservation" in markdown
    assert _png(out / "report.png")[0] > 800  # two panels side by side
    for name in ("mmvp_vlm.json", "mmvp_vlm_predictions.jsonl", "zeroshot.json", "zeroshot.csv"):
        assert (out / name).is_file()


def test_zeroshot_command(capsys, data, tiny_clip, tmp_path):
    templates = tmp_path / "templates.txt"
    templates.write_text("a {c}.\nan image of a {c}.\n")
    main(
        [
            "eval",
            "zeroshot",
            "--model",
            str(tiny_clip),
            "--classification",
            str(data["cls"]),
            "--templates",
            str(templates),
            "--output",
            str(tmp_path / "zs"),
        ]
    )
    assert "| classification/top1 |" in capsys.readouterr().out
    results = json.loads((tmp_path / "zs" / "zeroshot.json").read_text())
    assert set(results[0]["metrics"]) == {"classification/top1", "classification/top5"}


def test_make_benchmark_command_and_no_silent_overwrite(capsys, tmp_path):
    main(
        [
            "eval",
            "make-benchmark",
            str(tmp_path / "b"),
            "--pairs_per_pattern",
            "1",
            "--image_size",
            "32",
            "--with_zeroshot",
        ]
    )
    assert "not MMVP-VLM" in capsys.readouterr().out
    assert len(list((tmp_path / "b").rglob("*.jpg"))) == 18
    assert (tmp_path / "b" / "zeroshot" / "retrieval" / "captions.json").is_file()
    with pytest.raises(SystemExit) as info:
        main(["eval", "make-benchmark", str(tmp_path / "b")])
    assert info.value.code == 2 and "--overwrite" in capsys.readouterr().err


def test_demo_final_step_prints_the_mmvp_table_and_writes_the_chart(capsys, tmp_path):
    """`genhancer demo`'s last step on two 64 px tiny CLIPs (the demo's base size)."""
    base = make_tiny_clip(tmp_path / "base-clip", image_size=64, projection_dim=64)
    enhanced = make_tiny_clip(tmp_path / "encoder", image_size=64, projection_dim=64, seed=3)
    capsys.readouterr()
    demo_scores(tmp_path, base, enhanced)
    stdout = capsys.readouterr().out
    assert "== MMVP-VLM format, generated benchmark (a format fixture, not MMVP-VLM) ==" in stdout
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| Model | Orientation |"))
    table = lines[start : start + 5]
    assert [line.split(" | ")[0] for line in table] == [
        "| Model",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        "| base",
        "| enhanced",
        "| delta",
    ]
    assert all(line.count("|") == 12 for line in table)  # model, 9 patterns, average
    chart = tmp_path / "eval" / "report" / "mmvp_vlm.png"
    assert f"bar chart: {chart}" in stdout and _png(chart)[0] > 400
