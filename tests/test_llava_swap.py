"""`genhancer swap`: an enhanced encoder into llava-hf and original-format LLaVA checkpoints."""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from genhancer_llava.cli.main import main
from genhancer_llava.errors import GenhancerError
from genhancer_llava.mllm import swap
from genhancer_llava.models.tiny import make_tiny_clip

from .conftest import cli_error
from .llava_tiny import (
    make_exported_encoder,
    make_tiny_llama,
    make_tiny_llava_hf,
    make_tiny_llava_original,
)

TOWER = swap.ORIGINAL_TOWER_PREFIX


def _hashes(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _encoder_state(folder: Path) -> dict[str, torch.Tensor]:
    return swap.load_encoder_tower(folder).state_dict()


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    pytest.importorskip("llava", reason="llava-torch is installed by `make` (pip --no-deps)")
    import llava_patches

    llava_patches.apply()  # the original-format checkpoints are built with LLaVA's own code
    root = tmp_path_factory.mktemp("swap")
    llm = make_tiny_llama(root / "llm")
    old = make_tiny_clip(root / "old-clip", seed=5)  # the checkpoints' own (plain CLIP) tower
    return {
        "root": root,
        "llm": llm,
        "old": old,
        "enc": make_exported_encoder(root / "enc", seed=1),
        "enc_336": make_tiny_clip(root / "enc-64px", image_size=64, seed=2),
        "enc_narrow": make_tiny_clip(root / "enc-narrow", hidden_size=32, seed=3),
        "hf": make_tiny_llava_hf(root / "llava-hf", llm, old),
        "orig": make_tiny_llava_original(root / "llava-orig", llm, str(old)),
        "orig_bare": make_tiny_llava_original(
            root / "llava-orig-bare", llm, str(old), strip_tower=True
        ),
    }


def test_swap_into_llava_hf(parts, tmp_path, capsys, monkeypatch):
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    before = _hashes(parts["hf"])
    out = tmp_path / "swapped"
    monkeypatch.setattr(swap, "_WARNED", False)
    with pytest.warns(UserWarning, match="llava_finetune.sh"):
        main(
            [
                "swap",
                "--llava",
                str(parts["hf"]),
                "--vision-tower",
                str(parts["enc"]),
                "--output",
                str(out),
            ]
        )
    assert "swapped checkpoint" in capsys.readouterr().out
    assert _hashes(parts["hf"]) == before  # CKPT untouched

    original = LlavaForConditionalGeneration.from_pretrained(parts["hf"]).state_dict()
    model = LlavaForConditionalGeneration.from_pretrained(out).eval()
    swapped = model.state_dict()
    encoder = _encoder_state(parts["enc"])
    assert swapped.keys() == original.keys()
    tower_keys = {k for k in swapped if k.startswith("model.vision_tower.")}
    assert {k[len("model.vision_tower.") :] for k in tower_keys} == set(encoder)
    for key in tower_keys:
        assert torch.equal(swapped[key], encoder[key[len("model.vision_tower.") :]]), key
    for key in swapped.keys() - tower_keys:
        assert torch.equal(swapped[key], original[key]), key
    assert not torch.equal(
        original["model.vision_tower.embeddings.patch_embedding.weight"],
        swapped["model.vision_tower.embeddings.patch_embedding.weight"],
    )

    record = json.loads((out / "genhancer.json").read_text())["swap"]
    assert record["format"] == "llava-hf" and record["encoder"] == str(parts["enc"].resolve())
    assert record["retrained"] is False and record["encoder_provenance"]["family"] == "clip"

    processor = AutoProcessor.from_pretrained(out)  # saved with the model
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is it?"}]}
    ]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs = processor(images=Image.new("RGB", (40, 24), "red"), text=prompt, return_tensors="pt")
    generated = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert generated.shape[1] > inputs["input_ids"].shape[1]


def _generate_original(folder: Path) -> tuple[object, torch.Tensor]:
    import llava_patches

    llava_patches.apply()
    from llava.constants import IMAGE_TOKEN_INDEX
    from llava.mm_utils import process_images, tokenizer_image_token
    from llava.model.language_model.llava_llama import LlavaLlamaForCausalLM
    from transformers import AutoTokenizer

    model = LlavaLlamaForCausalLM.from_pretrained(folder).eval()
    tower = model.get_vision_tower()
    if not tower.is_loaded:
        tower.load_model()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    images = process_images(
        [Image.new("RGB", (40, 24), "blue")], tower.image_processor, model.config
    )
    ids = tokenizer_image_token(
        "USER: <image>\nWhat is it? ASSISTANT:", tokenizer, IMAGE_TOKEN_INDEX, return_tensors="pt"
    ).unsqueeze(0)
    out = model.generate(
        ids,
        images=images,
        image_sizes=[(40, 24)],
        do_sample=False,
        max_new_tokens=4,
        pad_token_id=0,
    )
    return model, out


@pytest.mark.parametrize("which", ["orig", "orig_bare"])
def test_swap_into_original_format(parts, tmp_path, which):
    ckpt = parts[which]
    before = _hashes(ckpt)
    out = tmp_path / "swapped"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        swap.swap_checkpoint(ckpt, parts["enc"], out)
    assert _hashes(ckpt) == before

    config = json.loads((out / "config.json").read_text())
    assert config["mm_vision_tower"] == f"genhancer:{parts['enc'].resolve()}"
    old_config = json.loads((ckpt / "config.json").read_text())
    assert {k: v for k, v in config.items() if k != "mm_vision_tower"} == {
        k: v for k, v in old_config.items() if k != "mm_vision_tower"
    }
    original, swapped = load_file(ckpt / "model.safetensors"), load_file(out / "model.safetensors")
    encoder = _encoder_state(parts["enc"])
    assert swapped.keys() == original.keys()
    tower_keys = {k for k in swapped if k.startswith(TOWER)}
    assert bool(tower_keys) == (which == "orig")
    for key in tower_keys:
        assert torch.equal(swapped[key], encoder[key[len(TOWER) :]]), key
    for key in swapped.keys() - tower_keys:
        assert torch.equal(swapped[key], original[key]), key
    record = json.loads((out / "genhancer.json").read_text())["swap"]
    assert record["format"] == "original"
    assert record["old_mm_vision_tower"] == str(parts["old"])
    assert record["tower_weights_in_checkpoint"] == (which == "orig")

    # Loaded through LLaVA's own code with the hook: the tower is the encoder, and it generates.
    model, generated = _generate_original(out)
    tower_state = model.get_vision_tower().vision_tower.state_dict()
    assert all(torch.equal(tower_state[k], encoder[k]) for k in encoder)
    assert generated.shape[0] == 1 and 1 <= generated.shape[1] <= 4  # new tokens only


def test_projector_warning_once(monkeypatch):
    monkeypatch.setattr(swap, "_WARNED", False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        swap.warn_projector_once()
        swap.warn_projector_once()
    assert len(caught) == 1 and "scripts/llava_finetune.sh" in str(caught[0].message)


# --- bad input: one line, exit 2, checkpoint untouched ---------------------------------------


def _refused(capsys, parts, ckpt_key: str, tower: Path, out: Path) -> str:
    before = _hashes(parts[ckpt_key])
    err = cli_error(
        capsys,
        [
            "swap",
            "--llava",
            str(parts[ckpt_key]),
            "--vision-tower",
            str(tower),
            "--output",
            str(out),
        ],
    )
    assert _hashes(parts[ckpt_key]) == before
    assert not out.exists() and not out.with_name(out.name + ".tmp-swap").exists()
    return err


@pytest.mark.parametrize("ckpt_key", ["hf", "orig"])
def test_image_size_that_does_not_fit(parts, tmp_path, capsys, ckpt_key):
    err = _refused(capsys, parts, ckpt_key, parts["enc_336"], tmp_path / "out")
    old = "32 px, a 4 x 4 grid" if ckpt_key == "hf" else "a 4 x 4 grid"  # stored weights: grid
    assert f"token grid: the checkpoint's tower sees {old} (16 image tokens)" in err
    assert "the encoder 64 px, a 8 x 8 grid (64 image tokens)" in err


@pytest.mark.parametrize("ckpt_key", ["hf", "orig", "orig_bare"])
def test_width_that_does_not_fit(parts, tmp_path, capsys, ckpt_key):
    err = _refused(capsys, parts, ckpt_key, parts["enc_narrow"], tmp_path / "out")
    assert "width:" in err and "64-wide features" in err and "gives 32" in err


def test_checkpoint_of_neither_format(parts, tmp_path, capsys):
    parts["plain"] = parts["old"]
    err = _refused(capsys, parts, "plain", parts["enc"], tmp_path / "out")
    assert "is neither a llava-hf checkpoint" in err and "'clip'" in err


def test_existing_output_folder(parts, tmp_path, capsys):
    out = tmp_path / "exists"
    out.mkdir()
    before = _hashes(parts["hf"])
    err = cli_error(
        capsys,
        [
            "swap",
            "--llava",
            str(parts["hf"]),
            "--vision-tower",
            str(parts["enc"]),
            "--output",
            str(out),
        ],
    )
    assert "already exists" in err and _hashes(parts["hf"]) == before
    assert list(out.iterdir()) == []


def test_siglip_384_patch_14_into_an_original_checkpoint_storing_its_tower(parts, tmp_path):
    """SO400M/14 @ 384: stored weights give 27 x 27 patches (378 px); the grids match."""
    from transformers import AutoTokenizer

    from genhancer_llava.models.tiny import make_tiny_siglip

    from .llava_tiny import tiny_llava

    kwargs = dict(image_size=384, patch_size=14, hidden_size=32, num_layers=2)
    old = make_tiny_siglip(tmp_path / "old-siglip", seed=1, **kwargs)
    new = make_tiny_siglip(tmp_path / "new-siglip", seed=2, **kwargs)
    ckpt = tmp_path / "llava-siglip"
    model = tiny_llava(parts["llm"], f"genhancer:{old}", mm_vision_select_feature="cls_patch")
    model.save_pretrained(ckpt)
    AutoTokenizer.from_pretrained(parts["llm"]).save_pretrained(ckpt)
    stored = {k: v for k, v in load_file(ckpt / "model.safetensors").items() if k.startswith(TOWER)}
    positions = next(v for k, v in stored.items() if k.endswith("position_embedding.weight"))
    assert positions.shape[0] == 27 * 27  # stored weights show a 27 x 27 grid (378 px)
    out = tmp_path / "swapped"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        swap.swap_checkpoint(ckpt, new, out)
    swapped, encoder = load_file(out / "model.safetensors"), _encoder_state(new)
    for key in stored:
        assert torch.equal(swapped[key], encoder[swap.tower_key(key[len(TOWER) :])]), key


def test_original_checkpoint_naming_another_tower_than_it_stores(parts, tmp_path, capsys):
    """config.json names a 64 px tower; the stored tower weights are the 32 px one."""
    import shutil

    bad = shutil.copytree(parts["orig"], tmp_path / "bad")
    config = json.loads((bad / "config.json").read_text())
    config["mm_vision_tower"] = str(parts["enc_336"])
    (bad / "config.json").write_text(json.dumps(config))
    parts["bad_orig"] = bad
    err = _refused(capsys, parts, "bad_orig", parts["enc"], tmp_path / "out")
    assert "config names the tower" in err and "a 8 x 8 grid" in err
    assert "tower weights stored in it are 64 wide, patch 8, a 4 x 4 grid" in err


def test_llava_hf_checkpoint_whose_vision_config_disagrees_with_its_weights(parts, tmp_path):
    import shutil

    bad = shutil.copytree(parts["hf"], tmp_path / "bad-hf")
    config = json.loads((bad / "config.json").read_text())
    config["vision_config"]["num_hidden_layers"] = 3  # the stored tower has 2
    (bad / "config.json").write_text(json.dumps(config))
    encoder = make_tiny_clip(tmp_path / "enc-3-layers", num_layers=3, seed=4)
    before, out = _hashes(bad), tmp_path / "out"
    with pytest.raises(GenhancerError) as err:  # in-process: the loader's progress bar is noise
        swap.swap_checkpoint(bad, encoder, out)
    assert "vision_config disagrees with the weights stored in it" in str(err.value)
    assert "\n" not in str(err.value) and _hashes(bad) == before and not out.exists()
