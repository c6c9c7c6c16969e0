"""Charts that teach: "not measured" is drawn "n/a", never as a 0 bar; a measured 0 is visible;
the title says where the data came from (a generated fixture says so)."""

from __future__ import annotations

from genhancer_llava.evaluation import make_mmvp_benchmark
from genhancer_llava.evaluation.mmvp import MMVPResult, load_benchmark
from genhancer_llava.evaluation.report import _mpl, data_source, grouped_bars, write_mmvp


def test_not_measured_is_na_and_zero_is_a_visible_zero():
    plt = _mpl()
    fig, ax = plt.subplots()
    grouped_bars(
        ax,
        ["a", "b", "c"],
        [("base", [50.0, 0.0, None]), ("other", [None, 20.0, 0.0])],
        "title",
        "%",
    )
    heights = sorted(round(p.get_height(), 3) for p in ax.patches)
    assert heights == [0.0, 0.0, 20.0, 50.0]  # 4 measured values: no bar for the 2 n/a
    texts = [t.get_text() for t in ax.texts]
    assert sorted(texts) == ["0", "0", "20", "50", "n/a", "n/a"]
    assert len(ax.collections) == 2  # a coloured stub for each measured 0
    plt.close(fig)


def test_mmvp_chart_and_table_name_a_generated_fixture(tmp_path):
    bench = load_benchmark(
        make_mmvp_benchmark(tmp_path / "bench", pairs_per_pattern=1, image_size=32)
    )
    assert bench.source == "generated fixture, not MMVP-VLM (bench)"
    results = [
        MMVPResult("m", "", "clip", {p: 0.0 for p in bench.patterns}, {}, {}, source=bench.source)
    ]
    assert data_source(results) == bench.source
    files = write_mmvp(results, tmp_path / "out")
    assert files["markdown"].read_text().startswith(f"Data: {bench.source}\n")
    assert files["figure"].read_bytes()[:4] == b"\x89PNG"
    real = tmp_path / "real"
    (tmp_path / "bench").rename(real)
    (real / "genhancer_fixture.json").unlink()
    assert load_benchmark(real).source == f"MMVP-VLM at {real}"


def test_zeroshot_source_names_a_generated_fixture(tmp_path):
    from genhancer_llava.evaluation import make_zeroshot_fixture
    from genhancer_llava.evaluation.report import write_comparison
    from genhancer_llava.evaluation.zeroshot import ZeroShotResult, zeroshot_source

    cls, ret = make_zeroshot_fixture(tmp_path / "zs", images_per_class=1, image_size=16)
    source = zeroshot_source(cls, ret)
    assert source == "classification: generated fixture; retrieval: generated fixture"
    assert zeroshot_source(tmp_path, None) == f"classification: {tmp_path}"
    results = [
        ZeroShotResult(m, "", {"classification/top1": 50.0}, source=source)
        for m in ("base", "enhanced")
    ]
    files = write_comparison(None, results, tmp_path / "out")
    assert f"Data: {source}\n" in files["markdown"].read_text()
    assert files["figure"].read_bytes()[:4] == b"\x89PNG"
