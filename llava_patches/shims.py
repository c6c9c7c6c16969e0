"""Small runtime shims that make llava-torch 1.2.2.post1 run on the transformers we pin (5.x).

llava-torch pins transformers 4.36.2; it is installed with `--no-deps` beside transformers 5.
Each shim is one function that fixes one break, says what broke and why, and is safe to call
twice. `apply_all()` runs them in order; `llava_patches.apply()` calls it.
"""

from __future__ import annotations

import functools

__all__ = [
    "SHIMS",
    "apply_all",
    "rename_eval_strategy_flag",
    "rename_warmup_ratio_flag",
    "translate_legacy_flags",
    "shim_generate_cache_kwargs",
    "shim_layernorm_layers_import",
    "shim_llava_model_type",
    "shim_save_without_cuda",
    "shim_train_sampler_signature",
    "shim_trainer_tokenizer_kwarg",
]

_MARK = "_genhancer_shim"


def _marked(func):
    setattr(func, _MARK, True)
    return func


def shim_layernorm_layers_import() -> None:
    """`llava.train.llava_trainer` imports `ALL_LAYERNORM_LAYERS` from `transformers.trainer`.

    transformers 5 no longer re-exports it there (it lives in `transformers.pytorch_utils`), so
    importing LLaVA's trainer fails with ImportError. Put the name back where LLaVA looks.
    """
    import transformers.trainer
    from transformers.pytorch_utils import ALL_LAYERNORM_LAYERS

    if not hasattr(transformers.trainer, "ALL_LAYERNORM_LAYERS"):
        transformers.trainer.ALL_LAYERNORM_LAYERS = ALL_LAYERNORM_LAYERS


def shim_trainer_tokenizer_kwarg() -> None:
    """LLaVA's `train()` builds `LLaVATrainer(tokenizer=...)`.

    transformers 5's Trainer renamed that argument `processing_class` and rejects `tokenizer`
    with a TypeError. Map the old keyword to the new one in LLaVATrainer's constructor.
    """
    shim_layernorm_layers_import()
    from llava.train.llava_trainer import LLaVATrainer

    if getattr(LLaVATrainer.__init__, _MARK, False):
        return
    original = LLaVATrainer.__init__

    @functools.wraps(original)
    def __init__(self, *args, tokenizer=None, **kwargs):
        if tokenizer is not None:
            kwargs.setdefault("processing_class", tokenizer)
        original(self, *args, **kwargs)

    LLaVATrainer.__init__ = _marked(__init__)


def shim_train_sampler_signature() -> None:
    """transformers 5 calls `self._get_train_sampler(train_dataset)`.

    LLaVA overrides `_get_train_sampler(self)` without the dataset argument (TypeError at the
    first epoch). Accept the argument; LLaVA's method reads `self.train_dataset`, which is the
    dataset the Trainer passes.
    """
    shim_layernorm_layers_import()
    from llava.train.llava_trainer import LLaVATrainer

    original = LLaVATrainer._get_train_sampler
    if getattr(original, _MARK, False):
        return

    @functools.wraps(original)
    def _get_train_sampler(self, train_dataset=None):
        if train_dataset is not None and train_dataset is not self.train_dataset:
            return super(LLaVATrainer, self)._get_train_sampler(train_dataset)
        return original(self)

    LLaVATrainer._get_train_sampler = _marked(_get_train_sampler)


def shim_generate_cache_kwargs() -> None:
    """transformers 5 renamed the KV cache argument `past_key_values` to `cache`.

    `generate` now calls the model with `cache=...`, which LLaVA's fixed-signature
    `LlavaLlamaForCausalLM.forward` rejects ("unexpected keyword argument 'cache'"). Hand it to
    LLaVA as `past_key_values`; LLaVA passes that to the Llama forward, whose deprecation alias
    maps it back to `cache` (transformers announces that alias until 5.40).
    """
    from llava.model.language_model.llava_llama import LlavaLlamaForCausalLM

    original = LlavaLlamaForCausalLM.forward
    if getattr(original, _MARK, False):
        return

    @functools.wraps(original)
    def forward(self, *args, cache=None, **kwargs):
        if cache is not None:
            kwargs.setdefault("past_key_values", cache)
        return original(self, *args, **kwargs)

    LlavaLlamaForCausalLM.forward = _marked(forward)


def shim_llava_model_type() -> None:
    """Old LLaVA checkpoints write `"model_type": "llava"` in config.json.

    transformers 5 has its own `llava` model type (LlavaConfig for llava-hf checkpoints). LLaVA's
    loaders read such a folder with their own `LlavaConfig` (`llava_llama`), keep
    `model_type="llava"` on the instance and write it back on save, so every checkpoint trained
    from it carries the collision on. When a config dict says `llava` but carries LLaVA's
    original keys (`mm_vision_tower`) and is read for LLaVA's `LlavaConfig`, read it as
    `llava_llama`. Not covered: `AutoConfig` on such a folder still returns transformers'
    LlavaConfig (LLaVA's `load_pretrained_model` uses it only for LoRA checkpoints).
    """
    from llava.model.language_model.llava_llama import LlavaConfig

    original = LlavaConfig.from_dict.__func__
    if getattr(original, _MARK, False):
        return

    @functools.wraps(original)
    def from_dict(cls, config_dict, **kwargs):
        if config_dict.get("model_type") == "llava" and "mm_vision_tower" in config_dict:
            config_dict = {**config_dict, "model_type": LlavaConfig.model_type}
        return original(cls, config_dict, **kwargs)

    LlavaConfig.from_dict = classmethod(_marked(from_dict))


def shim_save_without_cuda() -> None:
    """LLaVA's `safe_save_model_for_hf_trainer` calls `torch.cuda.synchronize()` under DeepSpeed.

    On a machine without CUDA (DeepSpeed's CPU accelerator) that raises "Found no NVIDIA
    driver" after training finished, and the checkpoint is never written. While that function
    runs on such a machine, make the synchronize a no-op (there is no device work to wait for).
    """
    import torch
    from llava.train import train as llava_train

    original = llava_train.safe_save_model_for_hf_trainer
    if getattr(original, _MARK, False):
        return

    @functools.wraps(original)
    def safe_save_model_for_hf_trainer(*args, **kwargs):
        if torch.cuda.is_available():
            return original(*args, **kwargs)
        synchronize = torch.cuda.synchronize
        torch.cuda.synchronize = lambda device=None: None
        try:
            return original(*args, **kwargs)
        finally:
            torch.cuda.synchronize = synchronize

    llava_train.safe_save_model_for_hf_trainer = _marked(safe_save_model_for_hf_trainer)


def rename_eval_strategy_flag(argv: list[str]) -> list[str]:
    """LLaVA's scripts pass `--evaluation_strategy`; transformers 5 only knows `--eval_strategy`.

    HfArgumentParser rejects the old flag. Rename it (both `--flag value` and `--flag=value`).
    """
    out = []
    for arg in argv:
        if arg == "--evaluation_strategy" or arg.startswith("--evaluation_strategy="):
            arg = arg.replace("--evaluation_strategy", "--eval_strategy", 1)
        out.append(arg)
    return out


def rename_warmup_ratio_flag(argv: list[str]) -> list[str]:
    """LLaVA's scripts pass `--warmup_ratio 0.03`; transformers 5 removed that argument.

    Its `--warmup_steps` now takes a float, read as a fraction of the training steps when below
    1, so `--warmup_ratio R` becomes `--warmup_steps R` (R must be below 1).
    """
    out: list[str] = []
    it = iter(argv)
    for arg in it:
        if arg == "--warmup_ratio" or arg.startswith("--warmup_ratio="):
            value = arg.split("=", 1)[1] if "=" in arg else next(it, "")
            if not 0 <= float(value) < 1:
                raise ValueError(f"--warmup_ratio {value}: a ratio must be in [0, 1)")
            arg = f"--warmup_steps={value}"
        out.append(arg)
    return out


def translate_legacy_flags(argv: list[str]) -> list[str]:
    """All command-line renames LLaVA's own scripts need on transformers 5."""
    return rename_warmup_ratio_flag(rename_eval_strategy_flag(argv))


SHIMS = (
    shim_layernorm_layers_import,
    shim_trainer_tokenizer_kwarg,
    shim_train_sampler_signature,
    shim_generate_cache_kwargs,
    shim_llava_model_type,
    shim_save_without_cuda,
)


def apply_all() -> None:
    """Run every runtime shim (idempotent)."""
    for shim in SHIMS:
        shim()
