"""Zero-shot classification and retrieval: metric definitions, and parity with a direct
computation through transformers' own CLIPModel forward on the same generated inputs."""

import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel

from genhancer_llava.errors import GenhancerError
from genhancer_llava.evaluation import (
    load_classification,
    load_retrieval,
    load_scorer,
    make_zeroshot_fixture,
    run_zeroshot,
)
from genhancer_llava.evaluation.zeroshot import recall_at_k, topk_accuracy


@pytest.fixture(scope="module")
def fixture(tmp_path_factory) -> tuple[Path, Path]:
    return make_zeroshot_fixture(tmp_path_factory.mktemp("zs"), images_per_class=3, image_size=40)


def test_metric_definitions_on_hand_made_scores():
    logits = torch.tensor([[0.9, 0.5, 0.1], [0.2, 0.3, 0.8], [0.5, 0.4, 0.6]])
    labels = torch.tensor([0, 1, 1])
    assert topk_accuracy(logits, labels, 1) == pytest.approx(100 / 3)
    assert topk_accuracy(logits, labels, 2) == pytest.approx(200 / 3)
    # 2 queries x 3 gallery items; query 0 has two positives (any one counts)
    scores = torch.tensor([[0.1, 0.9, 0.5], [0.7, 0.2, 0.6]])
    positives = torch.tensor([[True, False, True], [False, True, False]])
    assert recall_at_k(scores, positives, 1) == 0.0
    assert recall_at_k(scores, positives, 2) == 50.0
    assert recall_at_k(scores, positives, 10) == 100.0  # k past the gallery: all of it


def _direct(model, processor, tokenizer, images, texts):
    """transformers alone: one CLIPModel forward on all images and texts."""
    pixels = processor(images=[Image.open(p).convert("RGB") for p in images], return_tensors="pt")[
        "pixel_values"
    ]
    tokens = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model(pixel_values=pixels, **tokens)
    return out


def test_classification_and_retrieval_match_a_direct_transformers_computation(fixture, tiny_clip):
    cls_dir, captions = fixture
    cls, ret = load_classification(cls_dir), load_retrieval(captions)
    assert len(cls.classnames) == 12 and len(cls.templates) == 2 and len(cls.images) == 36
    folders = sorted(p.name for p in cls_dir.iterdir() if p.is_dir())
    assert cls.classnames == [f.replace("_", " ") for f in folders]  # names match folders
    result = run_zeroshot(load_scorer(tiny_clip, batch_size=16), cls, ret)

    model = CLIPModel.from_pretrained(tiny_clip).eval()
    processor = AutoImageProcessor.from_pretrained(tiny_clip)
    tokenizer = AutoTokenizer.from_pretrained(tiny_clip)

    # classification: template-averaged class embeddings, rank by cosine (= logits_per_image)
    prompts = [t.replace("{c}", n) for n in cls.classnames for t in cls.templates]
    out = _direct(model, processor, tokenizer, cls.images, prompts)
    classes = out.text_embeds.view(12, 2, -1).mean(1)
    logits = out.image_embeds @ (classes / classes.norm(dim=-1, keepdim=True)).T
    labels = torch.tensor(cls.labels)
    top = logits.topk(5, dim=1).indices
    expected_top1 = 100 * (top[:, 0] == labels).float().mean().item()
    expected_top5 = 100 * (top == labels[:, None]).any(1).float().mean().item()
    assert result.metrics["classification/top1"] == pytest.approx(expected_top1)
    assert result.metrics["classification/top5"] == pytest.approx(expected_top5)

    # retrieval: the model's own logits_per_text over all captions x all images
    out = _direct(model, processor, tokenizer, ret.images, ret.captions)
    per_text = out.logits_per_text  # (T, I)
    owner = torch.tensor(ret.caption_image)
    for k in (1, 5, 10):
        t2i = (per_text.topk(k, dim=1).indices == owner[:, None]).any(1).float().mean()
        ranked = per_text.T.topk(k, dim=1).indices  # (I, k) caption indices
        i2t = torch.stack([(owner[ranked[i]] == i).any() for i in range(len(ret.images))])
        assert result.metrics[f"retrieval/text_to_image_R@{k}"] == pytest.approx(100 * t2i.item())
        assert result.metrics[f"retrieval/image_to_text_R@{k}"] == pytest.approx(
            100 * i2t.float().mean().item()
        )
    assert result.sizes == {
        "classification_images": 36,
        "classes": 12,
        "retrieval_images": 24,
        "captions": 48,
    }


def test_class_names_from_folders_json_and_templates_argument(fixture, tmp_path):
    cls_dir, _ = fixture
    data = load_classification(cls_dir, templates=["{} drawn on paper"])
    assert data.templates == ["{} drawn on paper"]
    bare = tmp_path / "bare"
    for name in ("red_square", "green_disc"):
        (bare / name).mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(bare / name / "0.png")
    (bare / "classnames.json").write_text(json.dumps({"red_square": "scarlet square"}))
    data = load_classification(bare)
    assert data.classnames == ["green disc", "scarlet square"]
    assert data.templates == ["a photo of a {c}."] and data.labels == [0, 1]


def test_bad_zeroshot_inputs(fixture, tmp_path):
    cls_dir, captions = fixture
    with pytest.raises(GenhancerError, match="does not exist"):
        load_classification(tmp_path / "nope")
    (tmp_path / "one" / "only").mkdir(parents=True)
    with pytest.raises(GenhancerError, match="one sub-folder per class"):
        load_classification(tmp_path / "one")
    records = json.loads(captions.read_text())
    records[0]["image"] = "images/missing.png"
    bad = captions.parent / "bad.json"
    bad.write_text(json.dumps(records))
    with pytest.raises(GenhancerError, match="1 retrieval images missing.*images/missing.png"):
        load_retrieval(bad)
