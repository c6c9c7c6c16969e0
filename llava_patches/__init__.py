"""Everything that touches the original LLaVA package (haotian-liu/LLaVA, `llava-torch`).

The builder hook, the transformers-compatibility shims and the training entry point arrive with
the LLaVA issue; this package is importable without LLaVA installed.
"""

__all__: list[str] = []
