"""open_clip checkpoints -> Hugging Face `CLIPModel` folders, so that enhancement, export, LLaVA
and MMVP-VLM all read one format.

The model is built and its weights loaded by `open_clip_torch` itself (from a local file or a
local open_clip folder; nothing is fetched), then its tensors are renamed into a `CLIPModel`:

| open_clip                                   | transformers CLIPModel                        |
|---------------------------------------------|-----------------------------------------------|
| visual.conv1 / class_embedding / positional | vision_model.embeddings.patch_embedding / ... |
| visual.ln_pre, visual.ln_post               | vision_model.pre_layrnorm, post_layernorm     |
| *.resblocks.i.attn.in_proj_{weight,bias}    | *.layers.i.self_attn.{q,k,v}_proj (split 3)   |
| *.resblocks.i.mlp.c_fc / c_proj             | *.layers.i.mlp.fc1 / fc2                      |
| visual.proj, text_projection (x @ P)        | visual_projection, text_projection (P.T)      |
| logit_scale (log)                           | logit_scale (log)                             |

The activation carries over as `hidden_act` (`quick_gelu` for the `-quickgelu` architectures and
OpenAI/MetaCLIP weights, exact `gelu` otherwise). The tokenizer files (vocab.json, merges.txt)
are built from the OpenAI BPE merges that open_clip ships inside its package
(`bpe_simple_vocab_16e6.txt.gz`), with HF's names for the two special tokens (ids 49406 and
49407, as in open_clip); the image processor gets the checkpoint's preprocessing (size, mean,
std, interpolation).

Only the standard CLIP layout converts (ViT image tower with a CLS token, causal text tower with
argmax pooling and the OpenAI BPE vocabulary); anything else is a one-line error naming why.
"""

from __future__ import annotations

import gzip
import json
import math
import pickle
from pathlib import Path
from typing import Any

import torch
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer

from ..errors import GenhancerError
from ..utils import atomic_dir

__all__ = [
    "convert_open_clip",
    "convertible_architectures",
    "unsupported_reason",
    "hf_config_from_open_clip",
    "open_clip_to_hf_state_dict",
    "openai_bpe_tokenizer",
]

OPENAI_BPE_VOCAB = 49408  # 256 bytes x 2 + 48894 merges + 2 special tokens
_SOT, _EOT = 49406, 49407
_OPEN_CLIP_CONFIG = "open_clip_config.json"

# Features of open_clip configs that a CLIPModel cannot express (key -> the default that is fine).
_VISION_DEFAULTS: dict[str, Any] = {
    "attentional_pool": False,
    "ls_init_value": None,
    "no_ln_pre": False,
    "pool_type": "tok",
    "final_ln_after_pool": False,
    "pos_embed_type": "learnable",
    "qk_norm": False,
    "scaled_cosine_attn": False,
    "scale_heads": False,
    "scale_attn_inner": False,
    "scale_attn": False,
    "scale_fc": False,
    "act_kwargs": None,
    "norm_kwargs": None,
    "timm_model_name": None,
    "block_type": None,
}
_TEXT_DEFAULTS: dict[str, Any] = {
    "embed_cls": False,
    "no_causal_mask": False,
    "pool_type": "argmax",
    "proj_bias": False,
    "proj_type": "linear",
    "final_ln_after_pool": False,
    "ls_init_value": None,
    "hf_model_name": None,
    "hf_tokenizer_name": None,
    "tokenizer_kwargs": None,
    "act_kwargs": None,
    "norm_kwargs": None,
    "qk_norm": False,
    "scaled_cosine_attn": False,
    "scale_heads": False,
    "scale_attn_inner": False,
    "scale_attn": False,
    "scale_fc": False,
    "block_type": None,
}


def _open_clip():
    try:
        import open_clip
    except ImportError:
        raise GenhancerError(
            "converting open_clip checkpoints needs open_clip_torch; install it with "
            "pip install 'genhancer-llava[openclip]'"
        ) from None
    return open_clip


def unsupported_reason(model_cfg: dict[str, Any]) -> str | None:
    """Why an open_clip model config cannot become a CLIPModel, or None when it can."""
    vision, text = model_cfg.get("vision_cfg", {}), model_cfg.get("text_cfg", {})
    if model_cfg.get("custom_text") or "multimodal_cfg" in model_cfg:
        return "it has a custom text tower (CoCa / CustomTextCLIP)"
    if model_cfg.get("init_logit_bias") is not None:
        return "it has a SigLIP-style logit bias (use an HF SiglipModel folder instead)"
    if isinstance(vision.get("layers"), (list, tuple)):
        return "its image tower is a ResNet"
    if isinstance(vision.get("image_size"), (list, tuple)) and len(set(vision["image_size"])) > 1:
        return "its image size is not square"
    towers = ((vision, _VISION_DEFAULTS, "vision"), (text, _TEXT_DEFAULTS, "text"))
    for cfg, defaults, tower in towers:
        for key, default in defaults.items():
            if cfg.get(key, default) != default:
                return f"its {tower}_cfg sets {key}={cfg[key]!r}"
    if text.get("vocab_size", OPENAI_BPE_VOCAB) != OPENAI_BPE_VOCAB:
        return (
            f"its text vocab_size is {text['vocab_size']}, not the OpenAI BPE's {OPENAI_BPE_VOCAB}"
        )
    return None


def convertible_architectures() -> list[str]:
    """open_clip's built-in architecture names that convert to a CLIPModel."""
    open_clip = _open_clip()
    return [
        name
        for name in open_clip.list_models()
        if unsupported_reason(open_clip.get_model_config(name)) is None
    ]


def _vision_size(vision: dict[str, Any]) -> int:
    size = vision.get("image_size", 224)
    return int(size[0] if isinstance(size, (list, tuple)) else size)


def hf_config_from_open_clip(
    model_cfg: dict[str, Any], quick_gelu: bool | None = None, logit_scale: float | None = None
) -> CLIPConfig:
    """The `CLIPConfig` of an open_clip model config (the standard CLIP layout).

    Args:
        model_cfg: open_clip's model config (embed_dim, quick_gelu, vision_cfg, text_cfg).
        quick_gelu: override the config's activation (open_clip's `force_quick_gelu`).
        logit_scale: the trained log logit scale (default: CLIP's init, log(1 / 0.07)).
    """
    vision, text = model_cfg["vision_cfg"], model_cfg["text_cfg"]
    quick = model_cfg.get("quick_gelu", False) if quick_gelu is None else quick_gelu
    act = "quick_gelu" if quick else "gelu"  # open_clip's nn.GELU is the exact (erf) GELU
    v_width = vision.get("width", 768)
    t_width = text.get("width", 512)
    return CLIPConfig(
        vision_config=dict(
            hidden_size=v_width,
            intermediate_size=int(v_width * vision.get("mlp_ratio", 4.0)),
            num_hidden_layers=vision.get("layers", 12),
            num_attention_heads=v_width // vision.get("head_width", 64),
            image_size=_vision_size(vision),
            patch_size=vision.get("patch_size", 16),
            hidden_act=act,
            layer_norm_eps=1e-5,
            projection_dim=model_cfg["embed_dim"],
        ),
        text_config=dict(
            vocab_size=text.get("vocab_size", OPENAI_BPE_VOCAB),
            hidden_size=t_width,
            intermediate_size=int(t_width * text.get("mlp_ratio", 4.0)),
            num_hidden_layers=text.get("layers", 12),
            num_attention_heads=text.get("heads", 8),
            max_position_embeddings=text.get("context_length", 77),
            hidden_act=act,
            layer_norm_eps=1e-5,
            # pooled at the first end-of-text token, which is open_clip's argmax for this BPE
            bos_token_id=_SOT,
            eos_token_id=_EOT,
            pad_token_id=_EOT,
            projection_dim=model_cfg["embed_dim"],
        ),
        projection_dim=model_cfg["embed_dim"],
        logit_scale_init_value=math.log(1 / 0.07) if logit_scale is None else logit_scale,
    )


def _blocks(sd: dict[str, torch.Tensor], src: str, dst: str, layers: int) -> dict[str, Any]:
    out = {}
    for i in range(layers):
        s, d = f"{src}.{i}", f"{dst}.{i}"
        for part in ("weight", "bias"):
            q, k, v = sd.pop(f"{s}.attn.in_proj_{part}").chunk(3, dim=0)
            out.update(
                {
                    f"{d}.self_attn.q_proj.{part}": q,
                    f"{d}.self_attn.k_proj.{part}": k,
                    f"{d}.self_attn.v_proj.{part}": v,
                }
            )
            for a, b in (
                ("attn.out_proj", "self_attn.out_proj"),
                ("ln_1", "layer_norm1"),
                ("ln_2", "layer_norm2"),
                ("mlp.c_fc", "mlp.fc1"),
                ("mlp.c_proj", "mlp.fc2"),
            ):
                out[f"{d}.{b}.{part}"] = sd.pop(f"{s}.{a}.{part}")
    return out


def open_clip_to_hf_state_dict(
    state_dict: dict[str, torch.Tensor], vision_layers: int, text_layers: int
) -> dict[str, torch.Tensor]:
    """Rename an open_clip `CLIP` state dict into `CLIPModel`'s; every source tensor is used."""
    sd = dict(state_dict)
    out = _blocks(sd, "visual.transformer.resblocks", "vision_model.encoder.layers", vision_layers)
    out.update(_blocks(sd, "transformer.resblocks", "text_model.encoder.layers", text_layers))
    renames = {
        "visual.class_embedding": "vision_model.embeddings.class_embedding",
        "visual.conv1.weight": "vision_model.embeddings.patch_embedding.weight",
        "visual.positional_embedding": "vision_model.embeddings.position_embedding.weight",
        "visual.ln_pre.weight": "vision_model.pre_layrnorm.weight",
        "visual.ln_pre.bias": "vision_model.pre_layrnorm.bias",
        "visual.ln_post.weight": "vision_model.post_layernorm.weight",
        "visual.ln_post.bias": "vision_model.post_layernorm.bias",
        "token_embedding.weight": "text_model.embeddings.token_embedding.weight",
        "positional_embedding": "text_model.embeddings.position_embedding.weight",
        "ln_final.weight": "text_model.final_layer_norm.weight",
        "ln_final.bias": "text_model.final_layer_norm.bias",
        "logit_scale": "logit_scale",
    }
    for src, dst in renames.items():
        out[dst] = sd.pop(src)
    # open_clip projects as x @ P (width, dim); nn.Linear stores P.T (dim, width)
    out["visual_projection.weight"] = sd.pop("visual.proj").t().contiguous()
    out["text_projection.weight"] = sd.pop("text_projection").t().contiguous()
    sd.pop("attn_mask", None)
    if sd:
        raise GenhancerError(
            f"{len(sd)} open_clip tensors have no CLIPModel counterpart (first: {sorted(sd)[0]})"
        )
    return out


def _byte_characters() -> list[str]:
    """CLIP's 256 byte characters in CLIP's vocabulary order: the printable bytes as themselves,
    then the other bytes mapped to chr(256 + i) (the GPT-2 table, in its insertion order)."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    extra = [b for b in range(256) if b not in printable]
    return [chr(b) for b in printable] + [chr(256 + i) for i in range(len(extra))]


def openai_bpe_tokenizer(folder: str | Path, bpe_path: str | Path | None = None) -> CLIPTokenizer:
    """Write vocab.json and merges.txt of OpenAI's CLIP BPE and return the HF tokenizer.

    Built the way open_clip's SimpleTokenizer builds its table from the same gzip file: 256 byte
    characters, the same with `</w>`, one token per merge (48,894 of them), then start and end
    of text (49406, 49407).

    Args:
        folder: where to write the two files.
        bpe_path: the gzip merges file (default: the one inside the open_clip package).
    """
    if bpe_path is None:
        bpe_path = _open_clip().tokenizer.default_bpe()
    lines = gzip.open(bpe_path).read().decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1 : 49152 - 256 - 2 + 1]]
    chars = _byte_characters()
    tokens = chars + [c + "</w>" for c in chars] + ["".join(m) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {t: i for i, t in enumerate(tokens)}
    assert len(vocab) == OPENAI_BPE_VOCAB, len(vocab)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (folder / "merges.txt").write_text(
        "#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n", encoding="utf-8"
    )
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)


def _image_processor(preprocess: dict[str, Any], size: int) -> CLIPImageProcessor:
    resample = {"bicubic": 3, "bilinear": 2, "nearest": 0}.get(
        preprocess.get("interpolation", "bicubic"), 3
    )
    return CLIPImageProcessor(
        size={"shortest_edge": size},
        crop_size={"height": size, "width": size},
        image_mean=list(preprocess.get("mean", (0.48145466, 0.4578275, 0.40821073))),
        image_std=list(preprocess.get("std", (0.26862954, 0.26130258, 0.27577711))),
        resample=resample,
    )


def _resolve(checkpoint: Path, arch: str | None) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(model_name for open_clip.create_model, model_cfg, create_model kwargs)."""
    open_clip = _open_clip()
    if checkpoint.is_dir():
        config_file = checkpoint / _OPEN_CLIP_CONFIG
        if not config_file.is_file():
            raise GenhancerError(
                f"{checkpoint} is a folder without {_OPEN_CLIP_CONFIG}; pass the checkpoint file "
                "and its architecture (--arch NAME) instead"
            )
        if arch:
            raise GenhancerError(
                f"{checkpoint} names its architecture in {_OPEN_CLIP_CONFIG}; drop --arch {arch}"
            )
        model_cfg = json.loads(config_file.read_text()).get("model_cfg")
        if not model_cfg:
            raise GenhancerError(f"{config_file} has no model_cfg")
        return f"local-dir:{checkpoint}", model_cfg, {}
    if not checkpoint.is_file():
        raise GenhancerError(f"open_clip checkpoint {checkpoint} does not exist")
    if not arch:
        raise GenhancerError(
            f"name the architecture of {checkpoint} with --arch (e.g. ViT-L-14-quickgelu, "
            "ViT-H-14-quickgelu for MetaCLIP)"
        )
    model_cfg = open_clip.get_model_config(arch)
    if model_cfg is None:
        raise GenhancerError(
            f"unknown open_clip architecture '{arch}'; convertible ones: "
            f"{', '.join(convertible_architectures())}"
        )
    return arch, model_cfg, {"pretrained": str(checkpoint)}


def convert_open_clip(
    checkpoint: str | Path,
    output: str | Path,
    arch: str | None = None,
    force_quick_gelu: bool = False,
    overwrite: bool = False,
) -> Path:
    """Convert a local open_clip checkpoint into a Hugging Face `CLIPModel` folder.

    Args:
        checkpoint: a weights file (.safetensors / .bin / .pt, with `arch`), or a local open_clip
            folder holding open_clip_config.json and its weights.
        output: the folder to write (config, weights, tokenizer, image processor).
        arch: open_clip's architecture name for a weights file, e.g. `ViT-L-14-quickgelu`.
        force_quick_gelu: use QuickGELU whatever the architecture says (open_clip's flag of the
            same name; MetaCLIP and OpenAI weights were trained with it).
        overwrite: replace an existing output folder.
    """
    open_clip = _open_clip()
    checkpoint, output = Path(checkpoint), Path(output)
    if output.exists() and any(output.iterdir()) and not overwrite:
        raise GenhancerError(f"{output} already exists; pass --overwrite to replace it")
    name, model_cfg, kwargs = _resolve(checkpoint, arch)
    reason = unsupported_reason(model_cfg)
    if reason:
        raise GenhancerError(
            f"open_clip architecture '{arch or checkpoint.name}' cannot become a CLIPModel: "
            f"{reason}"
        )
    try:
        model = open_clip.create_model(
            name, device="cpu", precision="fp32", force_quick_gelu=force_quick_gelu, **kwargs
        )
    except (
        RuntimeError,
        ValueError,
        KeyError,
        AssertionError,
        OSError,
        pickle.UnpicklingError,
    ) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise GenhancerError(
            f"open_clip could not load {checkpoint} as '{arch or name}': {first}"
        ) from None
    model.eval()
    quick = force_quick_gelu or bool(model_cfg.get("quick_gelu", False))
    config = hf_config_from_open_clip(
        model_cfg, quick_gelu=quick, logit_scale=float(model.logit_scale.detach())
    )
    state = open_clip_to_hf_state_dict(
        model.state_dict(),
        config.vision_config.num_hidden_layers,
        config.text_config.num_hidden_layers,
    )
    hf = CLIPModel(config)
    missing, unexpected = hf.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise GenhancerError(
            f"converted weights do not fit CLIPModel (missing {missing[:3]}, unexpected "
            f"{unexpected[:3]})"
        )

    with atomic_dir(output, ".tmp-convert") as tmp:
        hf.save_pretrained(tmp, safe_serialization=True)
        tokenizer = openai_bpe_tokenizer(tmp)
        tokenizer.save_pretrained(tmp)
        preprocess = getattr(model.visual, "preprocess_cfg", {}) or {}
        _image_processor(preprocess, config.vision_config.image_size).save_pretrained(tmp)
        (tmp / "open_clip_source.json").write_text(
            json.dumps(
                {
                    "checkpoint": str(checkpoint.resolve()),
                    "architecture": arch or model_cfg,
                    "quick_gelu": quick,
                    "open_clip_version": getattr(open_clip, "__version__", None),
                },
                indent=2,
                default=str,
            )
        )
    return output
