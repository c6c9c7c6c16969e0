"""MMVP-VLM: the benchmark format, the paper's protocol, known scores, encode-once, bad input."""

import csv
import json
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image
from transformers import (
    AutoImageProcessor,
    AutoTokenizer,
    CLIPModel,
    CLIPVisionModel,
    SiglipConfig,
    SiglipImageProcessor,
    SiglipModel,
)

from genhancer_llava.errors import GenhancerError
from genhancer_llava.evaluation import (
    PATTERNS,
    load_benchmark,
    load_scorer,
    make_mmvp_benchmark,
    run_mmvp,
    score_pairs,
)
from genhancer_llava.evaluation.mmvp import MMVPItem, MMVPPair
from genhancer_llava.models.tiny import byte_level_clip_tokenizer

from .conftest import cli_error


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> Path:
    """The generated benchmark at full size: 9 patterns x 15 pairs, 270 images of 96 px."""
    return make_mmvp_benchmark(tmp_path_factory.mktemp("mmvp") / "bench", image_size=96)


class OracleScorer:
    """Injected logits from the ground truth: an image's embedding is the one-hot id of its own
    statement, a text's the one-hot id of itself, so a text scores 10 on exactly the images it
    describes. It never sees the runner's order, only texts and image paths."""

    family = "clip"

    def __init__(self, root: Path, name: str = "oracle"):
        self.name = name
        with open(root / "Questions.csv") as f:
            rows = list(csv.reader(f))[1:]
        self.statement_of = {int(qid): "a photo of " + text for qid, _, text in rows}
        self.ids = {t: i for i, t in enumerate(dict.fromkeys(self.statement_of.values()))}

    def _one_hot(self, texts) -> torch.Tensor:
        return torch.nn.functional.one_hot(
            torch.tensor([self.ids[t] for t in texts]), len(self.ids)
        ).float()

    def encode_images(self, paths):
        return self._one_hot([self.statement_of[int(Path(p).stem)] for p in paths])

    def encode_texts(self, texts):
        return self._one_hot(texts)

    def logits_per_text(self, text_emb, image_emb):
        return 10.0 * text_emb @ image_emb.T


class ConstantScorer(OracleScorer):
    """Every image and every text the same vector: P(image 1) = 0.5 exactly, never > 0.5."""

    def encode_images(self, paths):
        return torch.ones(len(paths), 4)

    def encode_texts(self, texts):
        return torch.ones(len(texts), 4)


def test_generated_benchmark_has_the_distributed_layout(bench):
    with open(bench / "Questions.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["Question ID", "Type", "Statement"] and len(rows) == 271
    assert [int(r[0]) for r in rows[1:]] == list(range(1, 271))
    assert [r[1] for r in rows[1::30]] == list(PATTERNS)  # paper order, 30 rows each
    for qid, pattern, _ in rows[1:]:
        assert (bench / "MLLM_VLM Images" / pattern / f"{qid}.jpg").is_file()
    loaded = load_benchmark(bench)
    assert len(loaded.pairs) == 135 and len(loaded.images) == 270
    assert loaded.patterns == list(PATTERNS)
    assert all(p.first.qid % 2 == 1 and p.second.qid == p.first.qid + 1 for p in loaded.pairs)
    assert all(p.first.statement != p.second.statement for p in loaded.pairs)
    with Image.open(loaded.pairs[0].images[0]) as image:
        assert image.size == (96, 96)
    # the same seed draws the same benchmark
    again = make_mmvp_benchmark(bench.parent / "again", image_size=96)
    assert (again / "Questions.csv").read_text() == (bench / "Questions.csv").read_text()


def _pair(qid: int, pattern: str = "Texts") -> MMVPPair:
    return MMVPPair(
        pattern,
        MMVPItem(qid, pattern, "a"),
        MMVPItem(qid + 1, pattern, "b"),
        (Path(f"{qid}.jpg"), Path(f"{qid + 1}.jpg")),
    )


def test_protocol_rules_on_injected_logits():
    pairs = [_pair(1), _pair(3), _pair(5), _pair(7)]
    logits = torch.tensor(
        [
            [[2.0, 0.0], [0.0, 2.0]],  # both right -> the pair counts
            [[2.0, 0.0], [2.0, 0.0]],  # second statement picks image 1 -> the pair fails
            [[0.0, 0.0], [0.0, 2.0]],  # tie: P = 0.5 is not > 0.5 -> image 2 -> fails
            [[0.1, 0.0], [-5.0, -4.0]],  # softmax over the pair only: P = 0.525 and 0.27 -> right
        ]
    )
    correct, total, records = score_pairs(pairs, logits)
    assert correct == {"Texts": 2} and total == {"Texts": 4}
    assert [r["pred"] for r in records] == [
        "img1",
        "img2",
        "img1",
        "img1",
        "img2",
        "img2",
        "img1",
        "img2",
    ]
    assert [r["truth"] for r in records] == ["img1", "img2"] * 4
    assert [r["pair_correct"] for r in records[::2]] == [True, False, False, True]
    assert records[6]["prob_image1"] == pytest.approx(torch.tensor([0.1, 0.0]).softmax(0)[0])


def test_oracle_scores_100_and_constant_scores_0_on_every_pattern(bench):
    benchmark = load_benchmark(bench)
    oracle = run_mmvp(benchmark, OracleScorer(bench))
    assert oracle.scores == {p: 100.0 for p in PATTERNS} and oracle.average == 100.0
    assert oracle.correct == oracle.total == {p: 15 for p in PATTERNS}
    constant = run_mmvp(benchmark, ConstantScorer(bench))
    assert constant.scores == {p: 0.0 for p in PATTERNS} and constant.average == 0.0
    # half its statements are right (every odd-qid one picks image 2 and is wrong), no pair is
    assert sum(r["correct"] for r in constant.predictions) == 135


def _count_rows(module: torch.nn.Module, counter: dict[str, int]):
    def hook(_module, _args, kwargs, _output):
        tensor = kwargs.get("pixel_values", kwargs.get("input_ids"))
        tensor = tensor if tensor is not None else _args[0]
        counter["calls"] += 1
        counter["rows"] += tensor.shape[0]

    return module.register_forward_hook(hook, with_kwargs=True)


def test_each_image_and_each_text_is_encoded_exactly_once(bench, tiny_clip):
    benchmark = load_benchmark(bench)
    scorer = load_scorer(tiny_clip, batch_size=64)
    vision, text = {"calls": 0, "rows": 0}, {"calls": 0, "rows": 0}
    handles = [
        _count_rows(scorer.model.vision_model, vision),
        _count_rows(scorer.model.text_model, text),
    ]
    seen_paths, seen_texts = [], []
    encode_images, encode_texts = scorer.encode_images, scorer.encode_texts
    scorer.encode_images = lambda paths: seen_paths.extend(paths) or encode_images(paths)
    scorer.encode_texts = lambda texts: seen_texts.extend(texts) or encode_texts(texts)
    try:
        run_mmvp(benchmark, scorer)
    finally:
        for h in handles:
            h.remove()
    unique_texts = {item.text for item in benchmark.items}
    assert sorted(map(str, seen_paths)) == sorted({str(p) for p in benchmark.images})
    assert len(seen_paths) == 270 and sorted(seen_texts) == sorted(unique_texts)
    assert vision == {"rows": 270, "calls": 5}  # 270 images in batches of 64
    assert text["rows"] == len(unique_texts) and text["calls"] == -(-len(unique_texts) // 64)


def test_batched_scores_match_the_papers_per_pair_forward(bench, tiny_clip):
    """The official script: model(two images, one text).logits_per_text.softmax per statement."""
    benchmark = load_benchmark(bench)
    result = run_mmvp(benchmark, load_scorer(tiny_clip, batch_size=64))
    model = CLIPModel.from_pretrained(tiny_clip).eval()
    processor = AutoImageProcessor.from_pretrained(tiny_clip)
    tokenizer = AutoTokenizer.from_pretrained(tiny_clip)
    records = {r["qid"]: r for r in result.predictions}
    for pair in benchmark.pairs[::15]:  # the first pair of each pattern
        images = [Image.open(p).convert("RGB") for p in pair.images]
        pixels = processor(images=images, return_tensors="pt")["pixel_values"]
        for item in (pair.first, pair.second):
            tokens = tokenizer(["a photo of " + item.statement], return_tensors="pt")
            with torch.no_grad():
                probs = model(pixel_values=pixels, **tokens).logits_per_text.softmax(dim=-1)
            assert records[item.qid]["prob_image1"] == pytest.approx(probs[0, 0].item(), abs=1e-5)
            assert records[item.qid]["pred"] == ("img1" if probs[0, 0] > 0.5 else "img2")


def test_folder_names_with_underscores_and_images_under_the_root(bench, tmp_path):
    copy = shutil.copytree(bench, tmp_path / "under")
    images = copy / "MLLM_VLM Images"
    for folder in list(images.iterdir()):
        folder.rename(images / folder.name.replace(" ", "_"))
    images.rename(copy / "MLLM_VLM_Images")
    (copy / "Questions.csv").rename(copy / "questions.csv")
    assert len(load_benchmark(copy).pairs) == 135
    for folder in list((copy / "MLLM_VLM_Images").iterdir()):
        folder.rename(copy / folder.name)
    loaded = load_benchmark(copy)
    assert len(loaded.pairs) == 135 and loaded.patterns == list(PATTERNS)


def test_bad_benchmark_folders(capsys, bench, tiny_clip, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    err = cli_error(capsys, ["eval", "mmvp-vlm", "--model", str(tiny_clip), "--data", str(empty)])
    assert "holds no questions CSV" in err
    broken = shutil.copytree(bench, tmp_path / "broken")
    for qid in (1, 4, 33):
        next(broken.rglob(f"{qid}.jpg")).unlink()
    err = cli_error(capsys, ["eval", "mmvp-vlm", "--model", str(tiny_clip), "--data", str(broken)])
    assert "3 MMVP-VLM images missing" in err
    assert "Orientation and Direction/1.jpg, Orientation and Direction/4.jpg, " in err
    assert "Presence of Specific Features/33.jpg" in err
    odd = tmp_path / "odd"
    odd.mkdir()
    (odd / "Questions.csv").write_text("qid,type,statement\n1,Texts,a sign\n")
    with pytest.raises(GenhancerError, match="needs pairs"):
        load_benchmark(odd)


def test_bad_model_folders(capsys, bench, tiny_clip, tmp_path):
    vision_only = tmp_path / "vision-only"
    CLIPVisionModel.from_pretrained(tiny_clip).save_pretrained(vision_only)
    capsys.readouterr()  # drop the loader's report
    err = cli_error(capsys, ["eval", "mmvp-vlm", "--model", str(vision_only), "--data", str(bench)])
    assert "vision tower only" in err and "needs the text tower" in err
    llama = tmp_path / "llama"
    llama.mkdir()
    (llama / "config.json").write_text(json.dumps({"model_type": "llama"}))
    err = cli_error(capsys, ["eval", "mmvp-vlm", "--model", str(llama), "--data", str(bench)])
    assert "'llama' model" in err and "clip, siglip" in err
    siglip = tmp_path / "siglip"
    siglip.mkdir()
    (siglip / "config.json").write_text(json.dumps({"model_type": "siglip"}))
    err = cli_error(
        capsys,
        [
            "eval",
            "compare",
            str(tiny_clip),
            str(siglip),
            "--mmvp",
            str(bench),
            "--output",
            str(tmp_path / "o"),
        ],
    )
    assert "base is a 'clip' model and enhanced a 'siglip' one" in err
    err = cli_error(
        capsys, ["eval", "mmvp-vlm", "--model", str(tmp_path / "nope"), "--data", str(bench)]
    )
    assert "does not exist" in err


def _tiny_siglip(folder: Path) -> Path:
    tokenizer = byte_level_clip_tokenizer(folder)
    tokenizer.save_pretrained(folder)
    common = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2)
    config = SiglipConfig(
        text_config=dict(
            common,
            vocab_size=len(tokenizer),
            max_position_embeddings=64,
            pad_token_id=tokenizer.pad_token_id,
        ),
        vision_config=dict(common, image_size=32, patch_size=8),
    )
    SiglipModel(config).save_pretrained(folder)
    SiglipImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


def test_siglip_family_same_protocol_and_matches_its_forward(tmp_path):
    """SigLIP: sigmoid-trained, but MMVP-VLM is the same softmax over the pair's two images of
    logits_per_text (the bias cancels); texts padded to max_length without a mask."""
    folder = _tiny_siglip(tmp_path / "siglip")
    data = make_mmvp_benchmark(tmp_path / "bench", pairs_per_pattern=1, image_size=48)
    scorer = load_scorer(folder)
    assert scorer.family == "siglip" and isinstance(scorer.model, SiglipModel)
    result = run_mmvp(load_benchmark(data), scorer)
    assert result.family == "siglip" and set(result.scores) == set(PATTERNS)
    pair = load_benchmark(data).pairs[0]
    images = [Image.open(p).convert("RGB") for p in pair.images]
    pixels = scorer.image_processor(images=images, return_tensors="pt")["pixel_values"]
    tokens = scorer.tokenizer(
        ["a photo of " + pair.first.statement],
        padding="max_length",
        max_length=64,
        return_tensors="pt",
    )
    with torch.no_grad():
        logits = scorer.model(pixel_values=pixels, input_ids=tokens["input_ids"]).logits_per_text
    assert result.predictions[0]["prob_image1"] == pytest.approx(
        logits.softmax(dim=-1)[0, 0].item(), abs=1e-5
    )


def test_pattern_by_position_as_the_reference_with_a_warning(tmp_path):
    """The reference assigns pair i to PATTERNS[i // 15]; a CSV whose type column says otherwise
    is scored by position, and the disagreement is named in a warning."""
    from genhancer_llava.evaluation.mmvp import positional_pattern

    assert positional_pattern(14, 135) == PATTERNS[0] and positional_pattern(15, 135) == PATTERNS[1]
    assert positional_pattern(134, 135) == PATTERNS[8]
    data = make_mmvp_benchmark(tmp_path / "bench", pairs_per_pattern=1, image_size=32)
    # relabel pair 0 (qid 1, 2) as the second pattern, moving its images with it
    rows = list(csv.reader(open(data / "Questions.csv", encoding="utf-8")))
    for row in rows[1:3]:
        row[1] = PATTERNS[1]
    with open(data / "Questions.csv", "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows)
    images = data / "MLLM_VLM Images"
    for qid in (1, 2):
        (images / PATTERNS[0] / f"{qid}.jpg").rename(images / PATTERNS[1] / f"{qid}.jpg")
    with pytest.warns(
        UserWarning,
        match=r"disagrees with the reference's positional pattern.*"
        r"qid 1 \('Presence of Specific Features' -> "
        r"'Orientation and Direction'\)",
    ):
        loaded = load_benchmark(data)
    assert [p.pattern for p in loaded.pairs] == list(PATTERNS)


def test_pair_count_the_position_rule_cannot_split_warns(tmp_path):
    data = make_mmvp_benchmark(tmp_path / "bench", pairs_per_pattern=1, image_size=32)
    rows = list(csv.reader(open(data / "Questions.csv", encoding="utf-8")))
    with open(data / "Questions.csv", "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows[:-2])  # 8 pairs
    with pytest.warns(UserWarning, match="not a multiple of 9 patterns"):
        loaded = load_benchmark(data)
    assert [p.pattern for p in loaded.pairs] == list(PATTERNS[:8])


def _fp16_copy(tiny_clip: Path, folder: Path) -> Path:
    """The tiny CLIP saved in float16, with its processor and tokenizer files."""
    shutil.copytree(tiny_clip, folder)
    CLIPModel.from_pretrained(tiny_clip).half().save_pretrained(folder)
    return folder


def test_fp16_folder_is_scored_in_fp32_by_default(tiny_clip, tmp_path, capsys):
    """The reference scores in fp32 whatever the folder stores; --dtype changes it."""
    from genhancer_llava.cli.main import build_parser

    folder = _fp16_copy(tiny_clip, tmp_path / "fp16")
    scorer = load_scorer(folder, device="cpu")
    assert scorer.model.dtype == torch.float32
    data = make_mmvp_benchmark(tmp_path / "bench", pairs_per_pattern=1, image_size=32)
    bench = load_benchmark(data)
    reference = CLIPModel.from_pretrained(folder, dtype=torch.float16).float().eval()
    pixels = AutoImageProcessor.from_pretrained(folder)(
        images=[Image.open(p).convert("RGB") for p in bench.images[:2]], return_tensors="pt"
    )["pixel_values"]
    with torch.no_grad():
        out = reference.get_image_features(pixel_values=pixels)
        out = out if isinstance(out, torch.Tensor) else out.pooler_output
        expected = torch.nn.functional.normalize(out, dim=-1)
    assert torch.allclose(scorer.encode_images(bench.images[:2]), expected, atol=1e-6)
    args = build_parser().parse_args(
        ["eval", "mmvp-vlm", "--model", str(folder), "--data", str(data)]
    )
    assert args.dtype == "float32"
    bf16 = load_scorer(folder, device="cpu", dtype="bfloat16")
    assert bf16.model.dtype == torch.bfloat16
    run_mmvp(bench, bf16)  # scores in the dtype asked for
    capsys.readouterr()  # drop the loaders' progress output
    err = cli_error(
        capsys,
        [
            "eval",
            "mmvp-vlm",
            "--model",
            str(folder),
            "--data",
            str(data),
            "--dtype",
            "float16",
            "--device",
            "cpu",
        ],
    )
    assert "--dtype float16 on the CPU" in err


def test_siglip_folder_without_tokenizer_is_one_line(capsys, bench, tiny_siglip):
    """`make-tiny-siglip` (like a vision export of a base without tokenizer files) writes no
    tokenizer; scoring texts needs one: a one-line error, not a sentencepiece traceback."""
    err = cli_error(capsys, ["eval", "mmvp-vlm", "--model", str(tiny_siglip), "--data", str(bench)])
    assert err.startswith(f"error: {tiny_siglip} has no tokenizer files (tokenizer.json, ")
    assert "copy the base model's tokenizer files into it" in err


def test_compare_errors_name_its_own_flag(capsys, tiny_clip, tmp_path):
    err = cli_error(
        capsys, ["eval", "compare", str(tiny_clip), str(tiny_clip), "--output", str(tmp_path / "o")]
    )
    assert "pass --mmvp DIR (MMVP-VLM)" in err and "--data" not in err
    err = cli_error(
        capsys,
        [
            "eval",
            "compare",
            str(tiny_clip),
            str(tiny_clip),
            "--mmvp",
            str(tmp_path / "nope"),
            "--output",
            str(tmp_path / "o"),
        ],
    )
    assert err.endswith("does not exist; pass --mmvp DIR") and "--data" not in err
    err = cli_error(
        capsys, ["eval", "mmvp-vlm", "--model", str(tiny_clip), "--data", str(tmp_path / "nope")]
    )
    assert err.endswith("does not exist; pass --data DIR")
