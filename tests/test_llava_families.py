"""`genhancer swap` and the runner on LLaVA-NeXT and LLaVA-OneVision checkpoints.

llava-hf checkpoints on the published configs (tests/fixtures/configs/, widths tiny, see
llava_families_tiny.py), the full published tower sizes on the meta device, and an
original-format LLaVA-NeXT (llava-v1.6-*) checkpoint through the hook.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from genhancer_llava.cli.main import main
from genhancer_llava.mllm import swap
from genhancer_llava.mllm.checkpoints import CHECKPOINT_FAMILIES, checkpoint_family
from genhancer_llava.models.paper_towers import PAPER_TOWERS

from .conftest import cli_error
from .llava_families_tiny import (
    NEXT,
    ONEVISION,
    SO400M_LAYERS,
    make_next_encoder,
    make_onevision_encoder,
    make_tiny_next,
    make_tiny_onevision,
    published_config,
)

# Where llava-hf files keep the tower (transformers writes the legacy layout for some classes).
HF_TOWER = ("model.vision_tower.", "vision_tower.")
# Images of several aspect ratios: wide, tall, square (several tiles each) and a small one.
SIZES = [(700, 300), (300, 700), (500, 500), (40, 24)]
EXPECTED = {  # family, kept feature selection, tokens per tile, tower depth
    NEXT: (
        "LLaVA-NeXT (llava-hf)",
        {"vision_feature_layer": -2, "vision_feature_select_strategy": "default"},
        576,
        24,
    ),
    ONEVISION: (
        "LLaVA-OneVision (llava-hf)",
        {"vision_feature_layer": -1, "vision_feature_select_strategy": "full"},
        729,
        26,
    ),
}


def _hashes(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _bytes(t: torch.Tensor) -> bytes:
    return t.contiguous().view(torch.uint8).numpy().tobytes()


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    root = tmp_path_factory.mktemp("families")
    return {
        "root": root,
        NEXT: make_tiny_next(root / NEXT),
        ONEVISION: make_tiny_onevision(root / ONEVISION),
        "enc-" + NEXT: make_next_encoder(root / "clip-336"),
        "enc-" + ONEVISION: make_onevision_encoder(root / "siglip-384"),
    }


def _generate(model, processor, size: tuple[int, int]) -> tuple[int, int]:
    """(tiles incl. the base view, new tokens) for one image of `size` and a question."""
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is it?"}]}
    ]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs = processor(images=Image.new("RGB", size, "red"), text=prompt, return_tensors="pt")
    out = model.generate(**inputs, max_new_tokens=4, do_sample=False, pad_token_id=0)
    return inputs["pixel_values"].shape[1], out.shape[1] - inputs["input_ids"].shape[1]


@pytest.mark.parametrize("name", [NEXT, ONEVISION])
def test_swap_into_family(parts, tmp_path, capsys, name):
    """Tower = encoder (OneVision: its first 26 of 27 layers), all else byte-identical."""
    from transformers import AutoProcessor, SiglipVisionModel

    ckpt, enc = parts[name], parts["enc-" + name]
    family, kept, tokens, depth = EXPECTED[name]
    before = _hashes(ckpt)
    out = tmp_path / "swapped"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        main(["swap", "--llava", str(ckpt), "--vision-tower", str(enc), "--output", str(out)])
    assert "swapped checkpoint" in capsys.readouterr().out
    assert _hashes(ckpt) == before  # the source is only read

    after = _hashes(out)
    assert set(after) == set(before) | {"genhancer.json"}
    changed = {f for f in before if after[f] != before[f]}
    assert changed == {"model.safetensors"}  # config, processor, tokenizer: byte-identical
    original, swapped = load_file(ckpt / "model.safetensors"), load_file(out / "model.safetensors")
    assert swapped.keys() == original.keys()
    encoder = swap.load_encoder_tower(enc).state_dict()
    tower = {k: k.split("vision_tower.", 1)[1] for k in swapped if k.startswith(HF_TOWER)}
    assert set(tower.values()) <= set(encoder)
    layers = {int(n.split(".")[2]) for n in tower.values() if n.startswith("encoder.layers.")}
    assert layers == set(range(depth))
    for key, inner in tower.items():  # in the stored dtype (the NeXT config says float16)
        assert torch.equal(swapped[key], encoder[inner].to(swapped[key].dtype)), key
    for key in swapped.keys() - set(tower):
        assert _bytes(swapped[key]) == _bytes(original[key]), key
    assert any(not torch.equal(original[k], swapped[k]) for k in tower)

    record = json.loads((out / "genhancer.json").read_text())["swap"]
    assert record["family"] == family and record["kept"] == kept
    assert record["tower_layers"] == depth and record["replaced_weight_files"] == [
        "model.safetensors"
    ]
    if name == ONEVISION:  # SO400M's last layer and the pooling head are not LLaVA's
        assert record["unused_encoder_weights"] == [
            f"encoder.layers.{depth}-{SO400M_LAYERS - 1}",
            "head (SigLIP pooling head)",
        ]
    else:
        assert record["unused_encoder_weights"] == []

    # transformers' own class reloads it: the checkpoint's feature layer of the new tower is the
    # encoder's (OneVision: the last of 26 = SO400M's penultimate), and anyres tiles generate.
    cls = CHECKPOINT_FAMILIES[family].transformers_class()
    model = cls.from_pretrained(out, dtype=torch.float32).eval()
    assert type(model).__name__ == CHECKPOINT_FAMILIES[family].model_class
    assert (
        model.config.vision_feature_layer,
        model.config.vision_feature_select_strategy,
    ) == tuple(kept.values())
    size = model.config.vision_config.image_size
    assert (size // model.config.vision_config.patch_size) ** 2 == tokens
    pixels = torch.randn(1, 3, size, size)
    full = swap.load_encoder_tower(enc).eval()
    dtype = next(iter(swapped.values())).dtype
    full.load_state_dict({k: v.to(dtype).float() for k, v in full.state_dict().items()})
    with torch.no_grad():
        ours = model.model.vision_tower(pixels, output_hidden_states=True).hidden_states
        theirs = full(pixels, output_hidden_states=True).hidden_states
    layer = kept["vision_feature_layer"]
    offset = SO400M_LAYERS - depth if isinstance(full, SiglipVisionModel) else 0
    assert torch.allclose(ours[layer], theirs[layer - offset], atol=1e-5)
    processor = AutoProcessor.from_pretrained(out)
    results = [_generate(model, processor, s) for s in SIZES]
    assert all(new >= 1 for _, new in results)
    assert max(tiles for tiles, _ in results) >= 4  # multi-tile images
    assert len({tiles for tiles, _ in results}) >= 2  # tiling follows the aspect ratio


@pytest.mark.parametrize("name", [NEXT, ONEVISION])
def test_load_time_swap_runner(parts, name):
    """`load_llava(..., vision_tower=...)`: the family's class, the encoder's tower, answers."""
    from genhancer_llava.mllm.runner import load_llava

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        runner = load_llava(parts[name], vision_tower=str(parts["enc-" + name]), device="cpu")
    family = EXPECTED[name][0]
    assert runner.family.name == family and runner.format == "llava-hf"
    assert type(runner.model).__name__ == CHECKPOINT_FAMILIES[family].model_class
    encoder = swap.load_encoder_tower(parts["enc-" + name]).state_dict()
    tower = runner.model.model.vision_tower.state_dict()
    assert all(torch.equal(v, encoder[k]) for k, v in tower.items())
    for size in SIZES[:2]:
        answer = runner.answer(
            [Image.new("RGB", size, "blue")], "What is it?", {"max_new_tokens": 3, "temperature": 0}
        )
        assert isinstance(answer, str)


def _as_hub_upload(src: Path, dst: Path) -> Path:
    """src as the hub's llava-hf uploads store it: `vision_tower.vision_model.*` keys (the
    transformers 4 layout) in two shards with an index, the tower in the second only."""
    import shutil

    shutil.copytree(src, dst)
    state = load_file(dst / "model.safetensors")
    (dst / "model.safetensors").unlink()
    state = {
        "vision_tower.vision_model." + k[len("vision_tower.") :]
        if k.startswith("vision_tower.")
        else k: v
        for k, v in state.items()
    }
    shards = {
        "model-00001-of-00002.safetensors": [k for k in state if "vision_tower" not in k],
        "model-00002-of-00002.safetensors": [k for k in state if "vision_tower" in k],
    }
    for name, keys in shards.items():
        save_file({k: state[k] for k in keys}, dst / name, metadata={"format": "pt"})
    weight_map = {k: name for name, keys in shards.items() for k in keys}
    (dst / "model.safetensors.index.json").write_text(
        json.dumps(
            {
                "metadata": {
                    "total_size": sum(v.numel() * v.element_size() for v in state.values())
                },
                "weight_map": weight_map,
            },
            indent=2,
        )
    )
    return dst


def test_swap_hub_layout_sharded(parts, tmp_path):
    """A sharded upload in the transformers 4 key layout: only the tower's shard changes."""
    ckpt = _as_hub_upload(parts[ONEVISION], tmp_path / "hub")
    enc = parts["enc-" + ONEVISION]
    before = _hashes(ckpt)
    out = tmp_path / "swapped"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        swap.swap_checkpoint(ckpt, enc, out)
    after = _hashes(out)
    assert _hashes(ckpt) == before
    assert {f for f in before if after[f] != before[f]} == {"model-00002-of-00002.safetensors"}
    shard = load_file(out / "model-00002-of-00002.safetensors")
    assert set(shard) == set(load_file(ckpt / "model-00002-of-00002.safetensors"))
    encoder = swap.load_encoder_tower(enc).state_dict()
    prefix = "vision_tower.vision_model."
    assert all(
        torch.equal(v, encoder[k[len(prefix) :]]) for k, v in shard.items() if k.startswith(prefix)
    )

    from transformers import LlavaOnevisionForConditionalGeneration

    model = LlavaOnevisionForConditionalGeneration.from_pretrained(out)
    tower = model.model.vision_tower.state_dict()
    assert all(torch.equal(v, encoder[k]) for k, v in tower.items())


# --- the published tower sizes, on the meta device -------------------------------------------


def _meta_checkpoint(name: str):
    from transformers import AutoConfig

    config = published_config(name)
    config["text_config"] = dict(
        model_type=config["text_config"]["model_type"],
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
    )
    model_type = config.pop("model_type")
    config.pop("architectures")
    hf_config = AutoConfig.for_model(model_type, **config)
    cls = checkpoint_family("x", dict(config, model_type=model_type))[0].transformers_class()
    with torch.device("meta"):
        return cls(hf_config)


@pytest.mark.parametrize(
    "name,tower,image_size", [(NEXT, "clip-l14", 336), (ONEVISION, "siglip-so400m", 384)]
)
def test_published_towers_fit(name, tower, image_size):
    """CLIP-L/14@336 fits NeXT; SO400M/14@384 (27 layers) fits OneVision's 26-layer tower."""
    from genhancer_llava.models.families import get_family

    model = _meta_checkpoint(name)
    family = checkpoint_family("x", {**published_config(name)})[0]
    kind, shape = PAPER_TOWERS[tower]
    config = get_family(kind).cls("vision_config")(**shape, image_size=image_size)
    with torch.device("meta"):
        encoder = get_family(kind).cls("vision_model")(config)
    old = swap.llava_hf_geometry(model.config, name)
    new = swap.geometry_of(
        kind,
        config.hidden_size,
        config.patch_size,
        config.image_size,
        config.num_hidden_layers,
        "encoder",
    )
    swap.check_fits(old, new, family.dropped_last_layers)
    assert old.tokens == EXPECTED[name][2] and old.num_layers == EXPECTED[name][3]
    stored = {k: tuple(v.shape) for k, v in model.model.vision_tower.state_dict().items()}
    state, unused = swap.tower_state(stored, encoder.state_dict(), name)
    assert set(state) == set(stored)
    if name == ONEVISION:
        assert unused == ["encoder.layers.26-26", "head (SigLIP pooling head)"]
        assert old.hidden_size == 1152 and new.num_layers == 27
    else:
        assert unused == [] and old.hidden_size == 1024


def test_family_table_reads_config_not_names(tmp_path):
    for name in (NEXT, ONEVISION):
        family, _ = checkpoint_family(tmp_path, published_config(name))
        assert family.name == EXPECTED[name][0]
    original = {
        "mm_vision_tower": "openai/clip-vit-large-patch14-336",
        "image_aspect_ratio": "anyres",
        "mm_vision_select_layer": -2,
    }
    assert checkpoint_family(tmp_path, original)[0].name == "LLaVA-NeXT (original)"
    original["image_aspect_ratio"] = "pad"
    assert checkpoint_family(tmp_path, original)[0].name == "LLaVA-1.5 (original)"


# --- bad input: one line that says what fits; nothing written ---------------------------------


FITS = {  # what the error names as fitting each published checkpoint
    NEXT: "what fits: a clip encoder 1024 wide, patch 14, 336 px, a 24 x 24 grid (576 image "
    "tokens), 24 layers (presets openai-clip-l14-336, openai-clip-l14-336-masked)",
    ONEVISION: "what fits: a siglip encoder 1152 wide, patch 14, 384 px, a 27 x 27 grid (729 "
    "image tokens), 26 or 27 layers (presets siglip-so400m-384, "
    "siglip-so400m-384-masked)",
}


def _config_folder(folder: Path, config) -> Path:
    """A folder with only a config.json (enough for every check that runs before weights)."""
    folder.mkdir(parents=True)
    if isinstance(config, dict):
        (folder / "config.json").write_text(json.dumps(config))
    else:
        config.save_pretrained(folder)
    return folder


def _paper_encoder(folder: Path, tower: str, image_size: int) -> Path:
    from genhancer_llava.models.families import get_family

    kind, shape = PAPER_TOWERS[tower]
    return _config_folder(
        folder, get_family(kind).cls("vision_config")(**shape, image_size=image_size)
    )


@pytest.mark.parametrize(
    "name,tower,image_size,expected",
    [
        (
            ONEVISION,
            "clip-l14",
            336,
            "family: the checkpoint's tower is siglip, the encoder is clip",
        ),
        (
            NEXT,
            "clip-l14",
            224,
            "token grid: the checkpoint's tower sees 336 px, a 24 x 24 grid (576 "
            "image tokens), what the LLM was trained on; the encoder 224 px, a "
            "16 x 16 grid (256 image tokens)",
        ),
        (
            ONEVISION,
            "siglip-so400m",
            224,
            "token grid: the checkpoint's tower sees 384 px, a 27 x 27 "
            "grid (729 image tokens), what the LLM was trained on; the "
            "encoder 224 px, a 16 x 16 grid (256 image tokens)",
        ),
        (
            NEXT,
            "siglip-so400m",
            384,
            "family: the checkpoint's tower is clip, the encoder is siglip",
        ),
    ],
)
def test_encoder_that_does_not_fit(tmp_path, capsys, name, tower, image_size, expected):
    ckpt = _config_folder(tmp_path / name, published_config(name))
    enc = _paper_encoder(tmp_path / "enc", tower, image_size)
    out = tmp_path / "out"
    err = cli_error(
        capsys, ["swap", "--llava", str(ckpt), "--vision-tower", str(enc), "--output", str(out)]
    )
    assert expected in err, err
    assert FITS[name] in err, err
    assert not out.exists() and not out.with_name(out.name + ".tmp-swap").exists()


def test_depth_that_does_not_fit(parts, tmp_path, capsys):
    enc = make_onevision_encoder(tmp_path / "siglip-25")
    config = json.loads((enc / "config.json").read_text())
    config["vision_config"]["num_hidden_layers"] = 25
    (enc / "config.json").write_text(json.dumps(config))
    capsys.readouterr()  # building the encoder printed progress
    err = cli_error(
        capsys,
        [
            "swap",
            "--llava",
            str(parts[ONEVISION]),
            "--vision-tower",
            str(enc),
            "--output",
            str(tmp_path / "out"),
        ],
    )
    assert (
        "depth: 26 layers in the checkpoint's tower, 25 in the encoder" in err
        and "encoders of 26 or 27 layers fit; this family keeps the first 26" in err
    ), err


def test_unsupported_family(tmp_path, capsys):
    config = dict(published_config(NEXT), model_type="llava_next_video")
    ckpt = _config_folder(tmp_path / "video", config)
    enc = _paper_encoder(tmp_path / "enc", "clip-l14", 336)
    err = cli_error(
        capsys,
        [
            "swap",
            "--llava",
            str(ckpt),
            "--vision-tower",
            str(enc),
            "--output",
            str(tmp_path / "out"),
        ],
    )
    assert "model_type 'llava_next_video'" in err and "what fits:" in err
    for model_type in ("'llava'", "'llava_next'", "'llava_onevision'", "mm_vision_tower"):
        assert model_type in err, err


# --- original-format LLaVA-NeXT (llava-v1.6-*) through the hook ------------------------------


def test_original_format_next(tmp_path):
    pytest.importorskip("llava", reason="llava-torch is installed by `make` (pip --no-deps)")
    import llava_patches
    from genhancer_llava.models.tiny import make_tiny_clip

    from .llava_tiny import make_exported_encoder, make_tiny_llama, tiny_llava

    llava_patches.apply()
    from llava.constants import IMAGE_TOKEN_INDEX
    from llava.mm_utils import process_images, tokenizer_image_token
    from llava.model.language_model.llava_llama import LlavaLlamaForCausalLM
    from transformers import AutoTokenizer

    llm = make_tiny_llama(tmp_path / "llm")
    old = make_tiny_clip(tmp_path / "old-clip", seed=5)
    enc = make_exported_encoder(tmp_path / "enc", seed=1)
    model = tiny_llava(llm, str(old), mm_patch_merge_type="spatial_unpad")
    # llava-v1.6's settings (liuhaotian/llava-v1.6-vicuna-7b config.json): anyres tiling, here at
    # the tiny tower's 32 px, and a fine-tuned tower stored in the checkpoint.
    model.config.image_aspect_ratio = "anyres"
    model.config.image_grid_pinpoints = [[32, 64], [64, 32], [64, 64]]
    model.config.unfreeze_mm_vision_tower = True
    ckpt = tmp_path / "llava-v1.6-tiny"
    model.save_pretrained(ckpt)
    AutoTokenizer.from_pretrained(llm).save_pretrained(ckpt)
    state = load_file(ckpt / "model.safetensors")
    tuned = "model.vision_tower.vision_tower.embeddings.patch_embedding.weight"
    state[tuned] = state[tuned] + 0.25  # the "fine-tuned" tower differs from its folder
    save_file(state, ckpt / "model.safetensors", metadata={"format": "pt"})
    before = _hashes(ckpt)
    out = tmp_path / "swapped"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        swap.swap_checkpoint(ckpt, enc, out)
    assert _hashes(ckpt) == before
    record = json.loads((out / "genhancer.json").read_text())["swap"]
    assert record["family"] == "LLaVA-NeXT (original)" and record["format"] == "original"
    assert record["kept"] == {"mm_vision_select_layer": -2, "mm_vision_select_feature": "patch"}
    config = json.loads((out / "config.json").read_text())
    assert config["image_aspect_ratio"] == "anyres"
    assert config["mm_patch_merge_type"] == "spatial_unpad"

    loaded = LlavaLlamaForCausalLM.from_pretrained(out).eval()
    tower = loaded.get_vision_tower()
    if not tower.is_loaded:
        tower.load_model()
    encoder = swap.load_encoder_tower(enc).state_dict()
    assert all(torch.equal(tower.vision_tower.state_dict()[k], v) for k, v in encoder.items())
    tokenizer = AutoTokenizer.from_pretrained(out)
    ids = tokenizer_image_token(
        "USER: <image>\nWhat is it? ASSISTANT:", tokenizer, IMAGE_TOKEN_INDEX, return_tensors="pt"
    ).unsqueeze(0)
    tiles = set()
    for size in [(70, 30), (30, 70), (50, 50)]:
        image = Image.new("RGB", size, "green")
        pixels = process_images([image], tower.image_processor, loaded.config)
        tiles.add(pixels[0].shape[0])
        generated = loaded.generate(
            ids,
            images=pixels,
            image_sizes=[size],
            do_sample=False,
            max_new_tokens=3,
            pad_token_id=0,
        )
        assert 1 <= generated.shape[1] <= 3
    assert max(tiles) >= 3  # a base view + at least two tiles

    # ... and what the lmms-eval model loads (the original-format runner): the swapped
    # checkpoint and a load-time swap run the encoder; the checkpoint as is, its stored tower.
    from genhancer_llava.mllm.runner import load_llava

    stored = swap.stored_tower_state(ckpt)
    for folder, tower_arg, expected in (
        (out, None, encoder),
        (ckpt, str(enc), encoder),
        (ckpt, None, stored),
    ):
        runner = load_llava(folder, vision_tower=tower_arg, device="cpu", dtype="float32")
        assert runner.format == "original" and runner.family.name == "LLaVA-NeXT (original)"
        weights = runner.model.get_vision_tower().vision_tower.state_dict()
        assert all(torch.equal(weights[k], v) for k, v in expected.items())
        answer = runner.answer(
            [Image.new("RGB", (70, 30), "red")],
            "What is it?",
            {"max_new_tokens": 2, "temperature": 0},
        )
        assert isinstance(answer, str)
    assert not torch.equal(
        stored["embeddings.patch_embedding.weight"], encoder["embeddings.patch_embedding.weight"]
    )
