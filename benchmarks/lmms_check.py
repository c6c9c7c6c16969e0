"""The lmms-eval model `genhancer_llava` on a tiny random llava-hf checkpoint, on a device.

    python -m benchmarks.lmms_check --device cuda [--dtype bfloat16]

Builds the tiny checkpoint in code (tests/llava_tiny.py: SentencePiece tokenizer, 2-layer Llama,
tiny CLIP tower), swaps a second tiny encoder in at load time (`vision_tower=`), and answers two
generate_until requests through the model class lmms-eval instantiates, timing them. The answers
of a random model are noise: this checks wiring and device placement, not scores.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.lmms_check")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="auto")
    args = parser.parse_args(argv)
    import torch
    from lmms_eval.api.instance import Instance
    from PIL import Image

    from genhancer_llava.lmms.model import GenhancerLlava
    from genhancer_llava.models.tiny import make_tiny_clip
    from tests.llava_tiny import make_exported_encoder, make_tiny_llama, make_tiny_llava_hf

    root = Path(tempfile.mkdtemp(prefix="genhancer-lmms-check-"))
    llm = make_tiny_llama(root / "llm")
    hf = make_tiny_llava_hf(root / "llava-hf", llm, make_tiny_clip(root / "old-clip", seed=5))
    encoder = make_exported_encoder(root / "enc", seed=1)
    t0 = time.perf_counter()
    model = GenhancerLlava(
        pretrained=str(hf), vision_tower=str(encoder), device=args.device, dtype=args.dtype
    )
    load_s = time.perf_counter() - t0
    docs = {
        0: {"image": Image.new("RGB", (40, 40), "red")},
        1: {"image": Image.new("RGB", (40, 40), "blue")},
    }
    model.task_dict = {"check": {"test": docs}}
    requests = [
        Instance(
            "generate_until",
            (
                "<image>\nWhat colour is it?",
                {"max_new_tokens": 4, "until": ["\n"]},
                lambda doc: [doc["image"]],
                i,
                "check",
                "test",
            ),
            idx=0,
            metadata={"task": "check", "doc_id": i, "repeats": 1},
        )
        for i in docs
    ]
    t0 = time.perf_counter()
    answers = model.generate_until(requests)
    answer_s = time.perf_counter() - t0
    params = next(model.model.parameters())
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers), answers
    assert params.device.type == torch.device(args.device).type, params.device
    print(
        json.dumps(
            {
                "lmms_model": "genhancer_llava",
                "device": str(params.device),
                "dtype": str(params.dtype),
                "load_s": round(load_s, 2),
                "two_answers_s": round(answer_s, 2),
                "answers": answers,
            }
        )
    )


if __name__ == "__main__":
    main()
