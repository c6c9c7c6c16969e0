"""lmms-eval adapter: `--model genhancer_llava` (needs `pip install 'genhancer-llava[lmms]'`).

lmms-eval discovers the model through the `lmms_eval.models` entry point of this package
(pyproject.toml), whose payload is `MANIFEST`: the chat class by default, the simple class with
lmms-eval's `--force_simple`. The classes live in `genhancer_llava.lmms.model`; this is the
only part of the package that imports lmms_eval.
"""

from __future__ import annotations

try:
    from lmms_eval.models.registry_v2 import ModelManifest
except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError(
        "genhancer_llava.lmms needs lmms-eval: pip install 'genhancer-llava[lmms]'"
    ) from err

__all__ = ["MANIFEST", "MODEL_ID"]

MODEL_ID = "genhancer_llava"

MANIFEST = ModelManifest(
    model_id=MODEL_ID,
    simple_class_path="genhancer_llava.lmms.model.GenhancerLlava",
    chat_class_path="genhancer_llava.lmms.model.GenhancerLlavaChat",
)
