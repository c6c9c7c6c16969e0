"""open_clip -> HF CLIPModel: parity on tiny random models (quick-GELU and GELU), the paper's
architectures map to the right shapes, and bad input is a one-line error."""

import json

import pytest
import torch

open_clip = pytest.importorskip("open_clip")

from safetensors.torch import save_file  # noqa: E402
from transformers import CLIPModel, CLIPTokenizer  # noqa: E402

from genhancer_llava.cli.main import main  # noqa: E402
from genhancer_llava.errors import GenhancerError  # noqa: E402
from genhancer_llava.models.convert import (  # noqa: E402
    convert_open_clip,
    convertible_architectures,
    hf_config_from_open_clip,
)
from genhancer_llava.models.encoders import CLIPEncoder, load_encoder  # noqa: E402

from .conftest import cli_error  # noqa: E402

TEXTS = ["a photo of a cat", "Two dogs, playing in the SNOW!", "the fox's 3 red hats"]


def _tiny_cfg(quick_gelu: bool) -> dict:
    return {
        "embed_dim": 32,
        "quick_gelu": quick_gelu,
        "vision_cfg": {
            "image_size": 32,
            "layers": 2,
            "width": 64,
            "head_width": 32,
            "patch_size": 8,
        },
        # the OpenAI BPE's 49408 ids, so the real tokenizer runs through the text tower
        "text_cfg": {
            "context_length": 77,
            "vocab_size": 49408,
            "width": 64,
            "heads": 2,
            "layers": 2,
        },
    }


def _random_open_clip(cfg: dict) -> torch.nn.Module:
    torch.manual_seed(0)
    model = open_clip.CLIP(**cfg)
    with torch.no_grad():  # open_clip zero-inits some biases; make every tensor matter
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
        model.logit_scale.fill_(3.3)
    return model.eval()


def _write_checkpoint(model, path):
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
    return path


@pytest.fixture
def open_clip_folder(tmp_path):
    """A local open_clip folder (open_clip_config.json + weights), as `local-dir:` reads it."""

    def build(quick_gelu: bool):
        folder = tmp_path / f"open-clip-{'quickgelu' if quick_gelu else 'gelu'}"
        folder.mkdir()
        cfg = _tiny_cfg(quick_gelu)
        (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg}))
        _write_checkpoint(_random_open_clip(cfg), folder / "open_clip_model.safetensors")
        return folder

    return build


def _registered_arch(tmp_path, quick_gelu: bool) -> str:
    """A tiny architecture registered with open_clip by name, like the built-in ViT-L-14."""
    name = f"genhancer-tiny-ViT-{'quickgelu' if quick_gelu else 'gelu'}"
    config = tmp_path / f"{name}.json"
    config.write_text(json.dumps(_tiny_cfg(quick_gelu)))
    open_clip.add_model_config(config)
    return name


@pytest.mark.parametrize("quick_gelu", [True, False], ids=["quickgelu", "gelu"])
@pytest.mark.parametrize("source", ["file+arch", "local-dir"])
def test_converted_clip_model_matches_open_clip(tmp_path, open_clip_folder, quick_gelu, source):
    if source == "local-dir":
        folder = open_clip_folder(quick_gelu)
        out = convert_open_clip(folder, tmp_path / "hf")
        reference = open_clip.create_model(f"local-dir:{folder}")
    else:
        arch = _registered_arch(tmp_path, quick_gelu)
        ckpt = tmp_path / "epoch_1.pt"  # as open_clip's trainer saves it
        torch.save(
            {
                "state_dict": {
                    f"module.{k}": v
                    for k, v in _random_open_clip(_tiny_cfg(quick_gelu)).state_dict().items()
                }
            },
            ckpt,
        )
        out = convert_open_clip(ckpt, tmp_path / "hf", arch=arch)
        reference = open_clip.create_model(arch, pretrained=str(ckpt))
    reference.eval()
    hf = CLIPModel.from_pretrained(out).eval()
    assert hf.config.vision_config.hidden_act == ("quick_gelu" if quick_gelu else "gelu")
    assert hf.config.text_config.hidden_act == hf.config.vision_config.hidden_act

    # the tokenizer written from open_clip's BPE file gives open_clip's ids
    tokenizer = CLIPTokenizer.from_pretrained(out)
    ids = open_clip.get_tokenizer("ViT-B-32")(TEXTS)  # (3, 77), zero-padded
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    mask = batch.attention_mask
    assert torch.equal(ids[:, : mask.shape[1]] * mask, batch.input_ids * mask)

    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        image_ref, text_ref = reference.encode_image(x), reference.encode_text(ids)
        image = hf.get_image_features(pixel_values=x)
        text = hf.get_text_features(**batch)
        image = getattr(image, "pooler_output", image)  # transformers 5 returns an output object
        text = getattr(text, "pooler_output", text)
        logits = hf(pixel_values=x, **batch).logits_per_image
        img_n, txt_n, scale = reference(x, ids)
    assert (image - image_ref).abs().max() < 1e-4
    assert (text - text_ref).abs().max() < 1e-4
    # the logit scale carried over: the same logits
    assert torch.allclose(hf.logit_scale, reference.logit_scale)
    assert (logits - scale * img_n @ txt_n.T).abs().max() < 1e-3

    # control: the other activation gives visibly different embeddings
    hf.config.vision_config.hidden_act = "gelu" if quick_gelu else "quick_gelu"
    wrong = CLIPModel.from_pretrained(out, config=hf.config).eval()
    with torch.no_grad():
        wrong_image = wrong.get_image_features(pixel_values=x)
    wrong_image = getattr(wrong_image, "pooler_output", wrong_image)
    assert (wrong_image - image_ref).abs().max() > 1e-3


def test_converted_folder_is_an_encoder_and_has_its_processor(tmp_path, open_clip_folder):
    out = tmp_path / "hf"
    main(["convert-open-clip", str(open_clip_folder(True)), str(out)])
    encoder = load_encoder(out, 32, family="clip")
    assert isinstance(encoder, CLIPEncoder) and encoder.global_dim == 32
    processor = json.loads((out / "preprocessor_config.json").read_text())
    assert processor["image_mean"] == pytest.approx([0.48145466, 0.4578275, 0.40821073])
    assert processor["crop_size"] == {"height": 32, "width": 32}
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json", "open_clip_source.json"):
        assert (out / name).is_file(), name


@pytest.mark.parametrize(
    "arch,hidden,layers,heads,inner,proj,act",
    [
        ("ViT-L-14-quickgelu", 1024, 24, 16, 4096, 768, "quick_gelu"),  # MetaCLIP L/14
        ("ViT-H-14-quickgelu", 1280, 32, 16, 5120, 1024, "quick_gelu"),  # MetaCLIP H/14
        ("ViT-L-14-336", 1024, 24, 16, 4096, 768, "gelu"),
    ],
)
def test_paper_architectures_map_to_clip_configs(arch, hidden, layers, heads, inner, proj, act):
    config = hf_config_from_open_clip(open_clip.get_model_config(arch))
    v = config.vision_config
    assert (v.hidden_size, v.num_hidden_layers, v.num_attention_heads, v.intermediate_size) == (
        hidden,
        layers,
        heads,
        inner,
    )
    assert (v.patch_size, v.projection_dim, config.projection_dim, v.hidden_act) == (
        14,
        proj,
        proj,
        act,
    )
    assert config.text_config.vocab_size == 49408
    assert arch in convertible_architectures()


def test_unknown_architecture_is_a_one_line_error(capsys, tmp_path):
    ckpt = tmp_path / "w.pt"
    torch.save({}, ckpt)
    err = cli_error(
        capsys, ["convert-open-clip", str(ckpt), str(tmp_path / "o"), "--arch", "ViT-Q-99"]
    )
    assert "unknown open_clip architecture 'ViT-Q-99'" in err and "ViT-H-14-quickgelu" in err
    assert not (tmp_path / "o").exists()


def test_architecture_without_a_clip_model_layout(capsys, tmp_path):
    ckpt = tmp_path / "w.pt"
    torch.save({}, ckpt)
    err = cli_error(
        capsys, ["convert-open-clip", str(ckpt), str(tmp_path / "o"), "--arch", "coca_ViT-B-32"]
    )
    assert "'coca_ViT-B-32' cannot become a CLIPModel" in err


def test_checkpoint_that_does_not_fit_the_architecture(capsys, tmp_path):
    arch = _registered_arch(tmp_path, True)
    ckpt = _write_checkpoint(_random_open_clip(_tiny_cfg(True)), tmp_path / "w.safetensors")
    err = cli_error(
        capsys, ["convert-open-clip", str(ckpt), str(tmp_path / "o"), "--arch", "ViT-B-32"]
    )
    assert "open_clip could not load" in err and "'ViT-B-32'" in err
    assert arch  # the tiny one would have fitted


def test_weights_file_needs_an_architecture(tmp_path):
    ckpt = tmp_path / "w.pt"
    torch.save({}, ckpt)
    with pytest.raises(GenhancerError, match="name the architecture"):
        convert_open_clip(ckpt, tmp_path / "o")
