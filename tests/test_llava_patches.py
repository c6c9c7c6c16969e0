"""The LLaVA hook, towers, tower switch and transformers-5 shims, on the real llava-torch code."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch
from PIL import Image

pytest.importorskip("llava", reason="llava-torch is installed by `make` (pip --no-deps)")

import llava_patches  # noqa: E402
from genhancer_llava.errors import GenhancerError  # noqa: E402
from llava_patches import hook, shims  # noqa: E402
from llava_patches.towers import GenhancerCLIPTower, GenhancerSiglipTower  # noqa: E402

from .conftest import REPO  # noqa: E402
from .llava_tiny import (  # noqa: E402
    make_exported_encoder,
    make_tiny_llama,
    make_tiny_siglip,
    model_args,
    tiny_llava,
)


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    root = tmp_path_factory.mktemp("llava-parts")
    llava_patches.apply()
    return {
        "llm": make_tiny_llama(root / "llm"),
        "enc_a": make_exported_encoder(root / "enc-a", seed=1),
        "enc_b": make_exported_encoder(root / "enc-b", seed=2),
        "siglip": make_tiny_siglip(root / "siglip"),
    }


def _vision_state(folder, model_class):
    return model_class.from_pretrained(folder).state_dict()


def _same_weights(module, reference) -> bool:
    state = module.state_dict()
    return state.keys() == reference.keys() and all(
        torch.equal(state[k].float(), reference[k].to(state[k].dtype).float()) for k in reference
    )


# --- the hook ------------------------------------------------------------------------------


def test_apply_twice_is_harmless(parts):
    import llava.model.llava_arch as arch
    import llava.model.multimodal_encoder.builder as builder
    from llava.train.llava_trainer import LLaVATrainer

    llava_patches.apply()
    llava_patches.apply()
    hook.install_builder()  # even re-installing by hand keeps LLaVA's original as fallback
    assert builder.build_vision_tower is hook.build_vision_tower
    assert arch.build_vision_tower is hook.build_vision_tower
    assert hook._ORIGINAL["build_vision_tower"].__module__ == builder.__name__
    assert hook._ORIGINAL["build_vision_tower"] is not hook.build_vision_tower
    for shim in shims.SHIMS:
        shim()  # each shim is idempotent: wrapping once, never twice
    assert not getattr(LLaVATrainer.__init__.__wrapped__, "_genhancer_shim", False)
    tower = hook.build_vision_tower(model_args(f"genhancer:{parts['enc_a']}"))
    assert isinstance(tower, GenhancerCLIPTower)


def test_other_names_go_to_llavas_builder(parts):
    from llava.model.multimodal_encoder.clip_encoder import CLIPVisionTower

    with pytest.raises(ValueError, match="Unknown vision tower: my-tower"):
        hook.build_vision_tower(model_args("my-tower"))
    # A plain CLIP folder without genhancer.json stays LLaVA's business.
    plain = parts["enc_a"].parent / "plain-clip"
    if not plain.exists():
        from genhancer_llava.models.tiny import make_tiny_clip

        make_tiny_clip(plain)
    assert type(hook.build_vision_tower(model_args(str(plain)))) is CLIPVisionTower


def test_without_apply_genhancer_fails_as_llava_does(parts):
    code = textwrap.dedent(f"""
        from types import SimpleNamespace
        from llava.model.llava_arch import build_vision_tower
        for name in ("genhancer", "genhancer:{parts["enc_a"]}"):
            try:
                build_vision_tower(SimpleNamespace(vision_tower=name))
            except ValueError as exc:
                print(exc)
    """)
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "Unknown vision tower: genhancer",
        f"Unknown vision tower: genhancer:{parts['enc_a']}",
    ]


def test_folder_with_genhancer_json_builds_our_tower(parts):
    tower = hook.build_vision_tower(model_args(str(parts["enc_a"])))
    assert isinstance(tower, GenhancerCLIPTower)


# --- towers --------------------------------------------------------------------------------


def test_clip_tower_loads_the_encoder_and_selects_tokens(parts):
    from transformers import CLIPVisionModel

    tower = hook.build_vision_tower(model_args(f"genhancer:{parts['enc_a']}"))
    assert _same_weights(tower.vision_tower, _vision_state(parts["enc_a"], CLIPVisionModel))
    assert tower.hidden_size == 64 and tower.num_patches == 16 and tower.num_patches_per_side == 4
    images = torch.randn(2, 3, 32, 32)
    assert tower(images).shape == (2, 16, 64)  # patch: CLS dropped
    keep = hook.build_vision_tower(
        model_args(f"genhancer:{parts['enc_a']}", mm_vision_select_feature="cls_patch")
    )
    assert keep(images).shape == (2, 17, 64)
    assert [f.shape for f in tower([images[0], images[1]])] == [(1, 16, 64)] * 2


def test_tower_delay_load_reads_only_the_config(parts):
    tower = hook.build_vision_tower(model_args(f"genhancer:{parts['enc_a']}"), delay_load=True)
    assert not tower.is_loaded and tower.hidden_size == 64
    tower.load_model()
    assert tower.is_loaded and tower.image_processor.crop_size["height"] == 32


def test_tower_gradients_follow_requires_grad(parts):
    """Frozen (the recipe): no graph, as LLaVA's no_grad. Unfrozen: real gradients."""
    tower = hook.build_vision_tower(model_args(f"genhancer:{parts['enc_a']}"))
    images = torch.randn(1, 3, 32, 32)
    assert not any(p.requires_grad for p in tower.parameters())
    assert not tower(images).requires_grad
    tower.vision_tower.requires_grad_(True)
    tower(images).sum().backward()
    grad = dict(tower.vision_tower.named_parameters())["embeddings.patch_embedding.weight"].grad
    assert grad is not None and grad.abs().sum() > 0


def test_siglip_tower_keeps_every_token(parts):
    from transformers import SiglipVisionModel

    name = f"genhancer:{parts['siglip']}"
    tower = hook.build_vision_tower(model_args(name, mm_vision_select_feature="cls_patch"))
    assert isinstance(tower, GenhancerSiglipTower)
    assert _same_weights(tower.vision_tower, _vision_state(parts["siglip"], SiglipVisionModel))
    assert tower(torch.randn(2, 3, 32, 32)).shape == (2, 16, 32)  # 16 patches, none dropped


def test_towers_processors_have_the_crop_size_llavas_text_only_samples_read(parts):
    """LLaVA's dataset makes a zero image of crop_size['height'] x crop_size['width'] for a
    sample without an image; SigLIP's processor has crop_size None."""
    from transformers import AutoImageProcessor

    assert AutoImageProcessor.from_pretrained(parts["siglip"]).crop_size is None
    for folder, feature in ((parts["siglip"], "cls_patch"), (parts["enc_a"], "patch")):
        tower = hook.build_vision_tower(
            model_args(f"genhancer:{folder}", mm_vision_select_feature=feature)
        )
        assert tower.image_processor.crop_size == {"height": 32, "width": 32}
        pixels = tower.image_processor(images=[Image.new("RGB", (40, 24))], return_tensors="pt")[
            "pixel_values"
        ]
        assert pixels.shape[-2:] == (32, 32)  # the zero image matches real ones in a batch


def test_siglip_with_patch_select_feature_is_a_one_line_error(parts):
    with pytest.raises(GenhancerError, match="without a CLS token") as err:
        hook.build_vision_tower(model_args(f"genhancer:{parts['siglip']}"))  # default: patch
    assert "\n" not in str(err.value) and "cls_patch" in str(err.value)


def test_bad_names_through_the_hook(parts, tmp_path):
    with pytest.raises(GenhancerError, match="unknown genhancer tower 'missing'"):
        hook.build_vision_tower(model_args("genhancer:missing"))
    with pytest.raises(GenhancerError, match="is not an encoder folder"):
        hook.build_vision_tower(model_args(f"genhancer:{tmp_path}"))


# --- the continue-from-checkpoint pitfall ----------------------------------------------------


def test_continuing_with_another_tower_loads_the_new_weights(parts, tmp_path):
    from llava.model.language_model.llava_llama import LlavaLlamaForCausalLM
    from transformers import CLIPVisionModel

    old = tiny_llava(parts["llm"], f"genhancer:{parts['enc_a']}")
    old.save_pretrained(tmp_path / "llava-a")  # a LLaVA checkpoint trained on tower A
    model = LlavaLlamaForCausalLM.from_pretrained(tmp_path / "llava-a")
    new_name = f"genhancer:{parts['enc_b']}"
    model.get_model().initialize_vision_modules(model_args(new_name))
    tower = model.get_vision_tower()
    assert tower.vision_tower_name == new_name == model.config.mm_vision_tower
    assert _same_weights(tower.vision_tower, _vision_state(parts["enc_b"], CLIPVisionModel))
    assert not _same_weights(tower.vision_tower, _vision_state(parts["enc_a"], CLIPVisionModel))


def test_continuing_with_a_tower_of_another_width_stops(parts, tmp_path):
    from llava.model.language_model.llava_llama import LlavaLlamaForCausalLM

    tiny_llava(parts["llm"], f"genhancer:{parts['enc_a']}").save_pretrained(tmp_path / "llava-a")
    model = LlavaLlamaForCausalLM.from_pretrained(tmp_path / "llava-a")
    args = model_args(f"genhancer:{parts['siglip']}", mm_vision_select_feature="cls_patch")
    with pytest.raises(GenhancerError, match="projector takes 64-wide features") as err:
        model.get_model().initialize_vision_modules(args)
    assert "\n" not in str(err.value)


# --- shims ---------------------------------------------------------------------------------


def test_shim_layernorm_layers_import():
    import transformers.trainer
    from transformers.pytorch_utils import ALL_LAYERNORM_LAYERS

    shims.shim_layernorm_layers_import()
    assert transformers.trainer.ALL_LAYERNORM_LAYERS is ALL_LAYERNORM_LAYERS
    import llava.train.llava_trainer  # noqa: F401  (ImportError without the shim)


def _trainer(parts, tmp_path, **args):
    from llava.train.llava_trainer import LLaVATrainer
    from llava.train.train import TrainingArguments
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(parts["llm"])
    model = tiny_llava(parts["llm"], f"genhancer:{parts['enc_a']}")
    training = TrainingArguments(
        output_dir=str(tmp_path), report_to="none", per_device_train_batch_size=2, **args
    )
    return LLaVATrainer(model=model, tokenizer=tokenizer, args=training), tokenizer


def test_shim_trainer_tokenizer_kwarg(parts, tmp_path):
    trainer, tokenizer = _trainer(parts, tmp_path)
    assert trainer.processing_class is tokenizer


class _Lengths(torch.utils.data.Dataset):
    """LLaVA's dataset interface for the sampler: signed lengths (negative = text only)."""

    modality_lengths = [5, -3, 7, -2, 4, 6]

    def __len__(self):
        return len(self.modality_lengths)

    def __getitem__(self, i):
        return {}


def test_shim_train_sampler_signature(parts, tmp_path):
    from llava.train.llava_trainer import LengthGroupedSampler

    trainer, _ = _trainer(parts, tmp_path, group_by_modality_length=True)
    trainer.train_dataset = _Lengths()
    sampler = trainer._get_train_sampler(trainer.train_dataset)  # transformers 5's call
    assert isinstance(sampler, LengthGroupedSampler)
    assert sorted(sampler) == list(range(6))


def test_shim_generate_cache_kwargs(parts):
    """generate (with the KV cache) == greedy decoding by full forwards without a cache."""
    model = tiny_llava(parts["llm"], f"genhancer:{parts['enc_a']}").eval()
    images = torch.randn(1, 3, 32, 32)
    ids = torch.tensor([[1, 30, 40, -200, 50, 60]])  # -200: LLaVA's image token
    out = model.generate(ids, images=images, do_sample=False, max_new_tokens=5, pad_token_id=0)
    with torch.no_grad():
        embeds = model.prepare_inputs_labels_for_multimodal(ids, None, None, None, None, images)[4]
        expected = []
        for _ in range(5):
            token = model(inputs_embeds=embeds, use_cache=False).logits[0, -1].argmax()
            expected.append(int(token))
            embeds = torch.cat([embeds, model.get_model().embed_tokens(token.view(1, 1))], 1)
    assert out[0].tolist() == expected


def test_shim_llava_model_type(parts, tmp_path):
    import json

    from llava.model.language_model.llava_llama import LlavaConfig, LlavaLlamaForCausalLM

    tiny_llava(parts["llm"], f"genhancer:{parts['enc_a']}").save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "model_type": "llava"}))
    loaded = LlavaConfig.from_pretrained(tmp_path)
    assert loaded.model_type == "llava_llama"
    assert loaded.to_dict()["model_type"] == "llava_llama"  # saves without the collision
    model = LlavaLlamaForCausalLM.from_pretrained(tmp_path)
    assert model.config.mm_vision_tower == f"genhancer:{parts['enc_a']}"


def test_shim_save_without_cuda(monkeypatch, tmp_path):
    from llava.train import train as llava_train

    if torch.cuda.is_available():
        pytest.skip("the shim only acts without CUDA")
    saved = []

    class Args:
        tune_mm_mlp_adapter = False

    class DeepSpeedTrainer:  # the two attributes LLaVA's save reads on this path
        args = Args()
        deepspeed = object()

        def save_model(self, output_dir):
            saved.append(output_dir)

    synchronize = torch.cuda.synchronize
    llava_train.safe_save_model_for_hf_trainer(trainer=DeepSpeedTrainer(), output_dir=str(tmp_path))
    assert saved == [str(tmp_path)]
    assert torch.cuda.synchronize is synchronize


def test_legacy_flags_parse_with_llavas_arguments(tmp_path):
    from llava.train.train import DataArguments, ModelArguments, TrainingArguments
    from transformers import HfArgumentParser

    argv = shims.translate_legacy_flags(
        [
            "--output_dir",
            str(tmp_path),
            "--evaluation_strategy",
            "no",
            "--warmup_ratio",
            "0.03",
            "--report_to",
            "none",
        ]
    )
    assert argv[2:4] == ["--eval_strategy", "no"] and "--warmup_steps=0.03" in argv
    parser = HfArgumentParser((ModelArguments, DataArguments, TrainingArguments))
    _, _, training = parser.parse_args_into_dataclasses(argv)
    assert training.eval_strategy == "no" and training.warmup_steps == 0.03
    assert shims.rename_eval_strategy_flag(["--evaluation_strategy=steps"]) == [
        "--eval_strategy=steps"
    ]
    with pytest.raises(ValueError, match="must be in"):
        shims.rename_warmup_ratio_flag(["--warmup_ratio", "1.5"])


def test_siglip_tower_in_a_llava_model(parts):
    """A LLaVA model on a SigLIP tower: 16 image tokens (none dropped), a finite loss."""
    from llava.mm_utils import process_images
    from PIL import Image

    model = tiny_llava(
        parts["llm"], f"genhancer:{parts['siglip']}", mm_vision_select_feature="cls_patch"
    )
    assert model.config.mm_hidden_size == 32
    model.config.image_aspect_ratio = "pad"
    processor = model.get_vision_tower().image_processor
    images = process_images([Image.new("RGB", (40, 24), (200, 10, 10))], processor, model.config)
    assert images.shape == (1, 3, 32, 32)
    ids = torch.tensor([[1, 30, -200, 50, 60]])
    labels = torch.tensor([[-100, -100, -100, 50, 60]])
    out = model(input_ids=ids, labels=labels, images=images, attention_mask=torch.ones_like(ids))
    assert out.logits.shape[1] == 4 + 16 and torch.isfinite(out.loss)
