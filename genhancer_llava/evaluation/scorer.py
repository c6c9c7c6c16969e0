"""Image-text scorers for CLIP-family folders: encode images and texts once, in batches.

A scorer turns a list of image paths and a list of texts into L2-normalised embeddings, and a
pair of embedding matrices into `logits_per_text` exactly as the model's own forward computes
them (`logit_scale.exp() * t @ i.T`, plus `logit_bias` for SigLIP). The benchmark runners only
talk to this small interface, so tests can inject a scorer with known logits.

The family is read from the folder's `config.json` (`model_type`), never guessed from its name;
what differs per family lives in `models/families.py`:

| model_type | class       | text input                                                     |
|------------|-------------|----------------------------------------------------------------|
| clip       | CLIPModel   | padded to the longest text, with its attention mask (EOS pool) |
| siglip     | SiglipModel | padded to max_length, input_ids only (as SigLIP was trained:   |
|            |             | no text mask, pooled at the last position)                     |
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import torch
import torch.nn.functional as F
import transformers
from PIL import Image

from ..errors import GenhancerError
from ..models.families import FAMILIES, family_of_model_type
from ..utils import default_device, quiet_transformers

__all__ = [
    "FAMILIES",
    "Scorer",
    "HFScorer",
    "read_family",
    "load_scorer",
    "model_label",
    "pick_device",
    "scoring_dtype",
    "DTYPES",
]

# `--dtype` values. The reference scores in float32 whatever the folder stores.
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class Scorer(Protocol):
    """What the runners need from a model."""

    name: str
    family: str

    def encode_images(self, paths: Sequence[Path]) -> torch.Tensor:
        """(N, d) L2-normalised image embeddings, one row per path, in order."""

    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """(M, d) L2-normalised text embeddings, one row per text, in order."""

    def logits_per_text(self, text_emb: torch.Tensor, image_emb: torch.Tensor) -> torch.Tensor:
        """(M, N) logits as the model's forward computes them from normalised embeddings."""


# any one of these marks a folder that has a tokenizer (fast, sentencepiece or BPE)
TOKENIZER_FILES = ("tokenizer.json", "spiece.model", "tokenizer.model", "vocab.json")


def read_family(path: str | Path) -> str:
    """The folder's model family ("clip" or "siglip"); a one-line error for anything else."""
    path = Path(path)
    config_file = path / "config.json"
    if not path.is_dir():
        raise GenhancerError(f"model folder {path} does not exist; pass a Hugging Face folder")
    if not config_file.is_file():
        raise GenhancerError(f"{path} has no config.json; it is not a Hugging Face model folder")
    model_type = json.loads(config_file.read_text()).get("model_type")
    found = family_of_model_type(model_type)
    if found is not None and not found[1]:
        raise GenhancerError(
            f"{path} holds a vision tower only ('{model_type}'); image-text scoring needs the text "
            "tower too: pass the full CLIPModel/SiglipModel folder (genhancer export writes one "
            "when the base had a text tower)"
        )
    if found is None:
        raise GenhancerError(
            f"{path} holds a '{model_type}' model; scoring knows the families "
            f"{', '.join(sorted(FAMILIES))} (config.json model_type)"
        )
    return found[0].name


def model_label(path: str | Path) -> str:
    """A short name for tables: the folder's name."""
    return Path(path).resolve().name


def pick_device(device: str | None = None) -> torch.device:
    """As given, else this process's GPU or the CPU."""
    return torch.device(default_device(device))


def scoring_dtype(dtype: str | torch.dtype, device: torch.device) -> torch.dtype:
    """The torch dtype to score in; a one-line error for a name we do not know, or for float16
    on the CPU (half-precision matmuls there are slow or unsupported; the folder is converted
    to float32 by default)."""
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise GenhancerError(f"--dtype {dtype} is unknown; choose {', '.join(DTYPES)}")
        dtype = DTYPES[dtype]
    if dtype == torch.float16 and device.type == "cpu":
        raise GenhancerError(
            "--dtype float16 on the CPU: score in float32 (the default, as the "
            "paper) or pass --device cuda"
        )
    return dtype


def _embeds(output) -> torch.Tensor:
    """get_*_features returns a tensor (transformers 4) or an output whose pooler_output holds
    the projected embeddings (transformers 5)."""
    if isinstance(output, torch.Tensor):
        return output
    return output.pooler_output


class HFScorer:
    """A CLIP or SigLIP model folder behind the `Scorer` interface.

    Args:
        path: the model folder (config.json, weights, image processor and tokenizer files).
        batch_size: images or texts per forward.
        device: torch device; default cuda when available, else cpu.
        name: label in tables; default the folder's name.
        dtype: the dtype weights are converted to and scored in, whatever the folder stores
            (default float32, as the reference: an fp16 export is scored in fp32).
    """

    def __init__(
        self,
        path: str | Path,
        batch_size: int = 64,
        device: str | None = None,
        name: str | None = None,
        dtype: str | torch.dtype = "float32",
    ):
        self.path = Path(path)
        self.family = read_family(self.path)
        self.name = name or model_label(self.path)
        self.batch_size = batch_size
        self.device = pick_device(device)
        self.dtype = scoring_dtype(dtype, self.device)
        spec = FAMILIES[self.family]
        model_class = spec.cls("full_model")
        if not any((self.path / f).is_file() for f in TOKENIZER_FILES):
            raise GenhancerError(
                f"{self.path} has no tokenizer files ({', '.join(TOKENIZER_FILES)}); scoring "
                "encodes texts: copy the base model's tokenizer files into it (`genhancer "
                "export` copies them when the base has them)"
            )
        try:
            with quiet_transformers():
                self.model = (
                    model_class.from_pretrained(self.path, dtype=self.dtype).to(self.device).eval()
                )
                self.image_processor = transformers.AutoImageProcessor.from_pretrained(self.path)
                self.tokenizer = transformers.AutoTokenizer.from_pretrained(self.path)
        except (OSError, ValueError) as err:  # sentencepiece: ValueError on a missing model
            first = (str(err).splitlines() or [type(err).__name__])[0]
            raise GenhancerError(
                f"{self.path} could not be loaded as a {spec.full_model} with its processor and "
                f"tokenizer files ({first})"
            ) from None
        text_config = self.model.config.text_config
        self.max_length = min(
            int(self.tokenizer.model_max_length), int(text_config.max_position_embeddings)
        )
        self.pad_to_max_length = spec.text_pad_to_max_length
        self.text_inputs = (
            ("input_ids", "attention_mask") if spec.text_attention_mask else ("input_ids",)
        )

    @torch.no_grad()
    def encode_images(self, paths: Sequence[Path]) -> torch.Tensor:
        chunks = []
        for start in range(0, len(paths), self.batch_size):
            images = []
            for p in paths[start : start + self.batch_size]:
                with Image.open(p) as image:
                    images.append(image.convert("RGB"))
            pixels = self.image_processor(images=images, return_tensors="pt")["pixel_values"]
            pixels = pixels.to(self.device, self.dtype)
            out = self.model.get_image_features(pixel_values=pixels)  # (B, d)
            chunks.append(F.normalize(_embeds(out).float(), dim=-1).cpu())
        return torch.cat(chunks) if chunks else torch.empty(0)

    @torch.no_grad()
    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        chunks = []
        for start in range(0, len(texts), self.batch_size):
            tokens = self.tokenizer(
                list(texts[start : start + self.batch_size]),
                padding="max_length" if self.pad_to_max_length else True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            )
            tokens = {k: v.to(self.device) for k, v in tokens.items() if k in self.text_inputs}
            out = self.model.get_text_features(**tokens)  # (B, d)
            chunks.append(F.normalize(_embeds(out).float(), dim=-1).cpu())
        return torch.cat(chunks) if chunks else torch.empty(0)

    @torch.no_grad()
    def logits_per_text(self, text_emb: torch.Tensor, image_emb: torch.Tensor) -> torch.Tensor:
        logits = text_emb @ image_emb.T * self.model.logit_scale.float().exp().cpu()  # (M, N)
        bias = getattr(self.model, "logit_bias", None)
        if bias is not None:
            logits = logits + bias.float().cpu()
        return logits


def load_scorer(
    path: str | Path,
    batch_size: int = 64,
    device: str | None = None,
    name: str | None = None,
    dtype: str | torch.dtype = "float32",
) -> HFScorer:
    """`HFScorer` for a model folder (see its Args)."""
    return HFScorer(path, batch_size=batch_size, device=device, name=name, dtype=dtype)
